"""``manage.py sagemaker_standin``: run the SageMaker stand-in until SIGTERM or Ctrl-C.

It prints the environment that points boto3 at it, writes its base URL to ``--ready-file`` once
it serves, and on SIGTERM/SIGINT stops every Triton it started before exiting. Its scaling loop
publishes CloudWatch metrics and acts on autoscaling policies once every ``--scaling-period-s``
(one CloudWatch minute, 60 s by default; ``POST /_standin/clock`` changes it at run time).
Training jobs run for real; the ``--training-*`` flags set how long one spends Starting, the
grace between SIGTERM and SIGKILL on a stop, and the CreateTrainingJob rate.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deployments.sagemaker_standin.autoscaling import (
    DEFAULT_PERIOD_S,
    DEFAULT_SCALE_IN_PERIODS,
    InvalidClock,
)
from deployments.sagemaker_standin.fleet import MmeLimits
from deployments.sagemaker_standin.server import StandinServer, environment_for
from deployments.sagemaker_standin.training import TrainingSettings


class Command(BaseCommand):
    help = (
        "Run the SageMaker stand-in (moto's control plane plus real Triton endpoints) on one "
        "port until SIGTERM or Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=0, help="0 picks a free port.")
        parser.add_argument("--workdir", default="var/sagemaker-standin")
        parser.add_argument("--ready-file", default=None, help="Written with the base URL.")
        parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        parser.add_argument(
            "--mme-models-per-instance",
            type=int,
            default=None,
            help="Models an MME instance holds before it unloads the least recently used "
            "(default: the instance type's memory over --mme-model-memory-mb).",
        )
        parser.add_argument("--mme-model-memory-mb", type=int, default=512)
        parser.add_argument(
            "--scaling-period-s",
            type=float,
            default=DEFAULT_PERIOD_S,
            help="Seconds one scaling period (one CloudWatch minute) lasts (default 60).",
        )
        parser.add_argument(
            "--scale-in-periods",
            type=int,
            default=DEFAULT_SCALE_IN_PERIODS,
            help="Periods below target before target tracking scales in (default 15, AWS's).",
        )
        training = TrainingSettings()
        parser.add_argument(
            "--training-provisioning-s",
            type=float,
            default=training.provisioning_s,
            help="Seconds a training job spends Starting (a reused warm pool skips them).",
        )
        parser.add_argument(
            "--training-stop-grace-s",
            type=float,
            default=training.stop_grace_s,
            help="Seconds between SIGTERM and SIGKILL when a training job stops (AWS: 120).",
        )
        parser.add_argument(
            "--training-launches-per-s",
            type=float,
            default=training.launches_per_s,
            help="CreateTrainingJob calls admitted per second (AWS: 1); 0 turns the limit off.",
        )

    def handle(self, *args, **options):
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        try:
            server = self._server(options)
        except InvalidClock as error:
            raise CommandError(str(error)) from error
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        server.start()
        self.stdout.write(f"SageMaker stand-in serving on {server.base_url}; export:")
        for name, value in environment_for(server.base_url, options["region"]).items():
            self.stdout.write(f"export {name}={value}")
        sys.stdout.flush()
        ready_file = options["ready_file"]
        if ready_file:
            scratch = Path(f"{ready_file}.tmp")
            scratch.write_text(server.base_url + "\n")
            # Renamed into place so a reader never sees a half-written URL.
            scratch.replace(ready_file)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stdout.write("SageMaker stand-in stopping its Triton servers")
            server.stop()
            self.stdout.write("SageMaker stand-in stopped")

    def _server(self, options) -> StandinServer:
        return StandinServer(
            workdir=Path(options["workdir"]),
            host=options["host"],
            port=options["port"],
            region=options["region"],
            mme_limits=MmeLimits(
                models_per_instance=options["mme_models_per_instance"],
                model_memory_mb=options["mme_model_memory_mb"],
            ),
            scaling_period_s=options["scaling_period_s"],
            scale_in_periods=options["scale_in_periods"],
            training_settings=TrainingSettings(
                provisioning_s=options["training_provisioning_s"],
                stop_grace_s=options["training_stop_grace_s"],
                launches_per_s=options["training_launches_per_s"],
            ),
        )
