"""``manage.py train``: start a training job for a tenant's model and follow it to the end.

    manage.py train --tenant zoomride --model intents --dataset tickets.csv
    manage.py train ... --hyperparameter epochs=200 --hyperparameter l2=0.001
    manage.py train --follow 42            # follow an existing job

The job runs on the Celery worker like one started through the API; this command only enqueues
it and shows its progress bar, status changes (``packaging`` once trained, while its version is
packaged and put to the quality gate) and outcome: the version, and whether the gate promoted or
held it (exit status 1 unless the job succeeded).
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from config.errors import DomainError
from models_registry import selectors
from models_registry.models import TrainingJob
from models_registry.services.training import start_training_job
from models_registry.training.backends.base import (
    DEFAULT_TRAINING_BACKEND,
    training_backend_names,
)
from tenants.models import Tenant

BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Start a training job (or follow one) and show its progress until it ends."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="tenant slug")
        parser.add_argument("--model", help="the tenant's model name")
        parser.add_argument("--dataset", help="the tenant's dataset name or id")
        parser.add_argument(
            "--hyperparameter",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="repeatable; numbers are read as numbers",
        )
        parser.add_argument(
            "--backend", default=DEFAULT_TRAINING_BACKEND, choices=training_backend_names()
        )
        parser.add_argument("--follow", type=int, metavar="JOB_ID", help="follow an existing job")
        parser.add_argument("--no-wait", action="store_true", help="enqueue and return")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between updates")

    def handle(self, *args, **options):
        if options["follow"]:
            job = TrainingJob.objects.filter(pk=options["follow"]).first()
            if job is None:
                raise CommandError(f"No training job {options['follow']}.")
        else:
            job = self._start(options)
        if options["no_wait"]:
            return
        job = self._follow(job, poll_s=options["poll"])
        if job.status != TrainingJob.Status.SUCCEEDED:
            raise CommandError(f"Job {job.pk} {job.status}: {job.failure_reason}")

    def _start(self, options) -> TrainingJob:
        for name in ("tenant", "model", "dataset"):
            if not options[name]:
                raise CommandError(f"--{name} is required (or use --follow JOB_ID).")
        try:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant {options['tenant']!r}.")
            model = selectors.model_for_tenant(tenant=tenant, name=options["model"])
            dataset = selectors.dataset_for_training(tenant=tenant, reference=options["dataset"])
            job, created = start_training_job(
                model=model,
                dataset=dataset,
                actor="cli",
                hyperparameters=_parse_hyperparameters(options["hyperparameter"]),
                backend=options["backend"],
            )
        except DomainError as exc:
            field = f" ({exc.field})" if exc.field else ""
            raise CommandError(f"{exc.message}{field}") from exc
        verb = "started" if created else "already exists for these inputs:"
        self.stdout.write(f"Training job {job.pk} {verb} {model} on {dataset.name}")
        return job

    def _follow(self, job: TrainingJob, *, poll_s: float) -> TrainingJob:
        last = None
        while True:
            job.refresh_from_db()
            line = _progress_line(job)
            if line != last:
                self.stdout.write(line)
                last = line
            if job.is_terminal:
                break
            time.sleep(poll_s)
        version = getattr(job, "version", None)
        if job.status == TrainingJob.Status.SUCCEEDED and version is not None:
            version.refresh_from_db()
            metrics = ", ".join(
                f"{key} {value:.4g}"
                for key, value in version.metrics.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            )
            self.stdout.write(f"{version}: {version.status}; {metrics}")
            if job.gate_outcome:
                self.stdout.write(f"Quality gate: {job.gate_outcome}. {job.gate_reason}")
            elif version.status_reason:
                self.stdout.write(version.status_reason)
        return job


def _progress_line(job: TrainingJob) -> str:
    filled = round(BAR_WIDTH * job.progress_pct / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {job.progress_pct:3d} %  {job.status}"


def _parse_hyperparameters(pairs: list[str]) -> dict:
    values: dict = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--hyperparameter {pair!r}: use NAME=VALUE.")
        for cast in (int, float):
            try:
                values[name] = cast(raw)
                break
            except ValueError:
                continue
        else:
            values[name] = raw
    return values
