"""``manage.py up``: migrate, print first-run credentials, run web, the two Celery workers, beat
and the local Triton instances until Ctrl-C."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
import urllib.request

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from deployments.management.serving import start_local_serving, stop_local_serving
from deployments.management.supervisor import ChildSpec, Supervisor, python_argv
from tenants.models import ApiToken
from tenants.services import issue_token


class Command(BaseCommand):
    help = (
        "Run the whole platform on this machine (web, a Celery worker for the default queue and "
        "one for training and packaging, beat, local Triton) until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--worker-concurrency",
            type=int,
            default=2,
            help="Tasks the default queue's worker runs at once (periodic passes, rollouts).",
        )
        parser.add_argument(
            "--training-concurrency",
            type=int,
            default=None,
            help="Trainings the training worker runs at once "
            "(default: TRAINING_WORKER_CONCURRENCY, 1).",
        )
        parser.add_argument("--no-beat", action="store_true", help="Do not run periodic tasks.")
        parser.add_argument(
            "--no-triton",
            action="store_true",
            help="Do not start the local endpoints' Triton instances.",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        worker_concurrency: int,
        no_beat: bool,
        training_concurrency: int | None = None,
        no_triton: bool = False,
        **opts,
    ):
        write = self._writer()
        call_command("migrate", interactive=False, verbosity=0)
        write(
            f"[up] database migrated ({settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})"
        )
        self._first_run_credentials(write)
        if not no_triton:
            start_local_serving(write)
        if training_concurrency is None:
            training_concurrency = settings.TENANTML_TRAINING_WORKER_CONCURRENCY

        specs = [
            ChildSpec(
                "web",
                python_argv(
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--no-access-log",
                    "--lifespan",
                    "off",
                ),
            ),
            # A training takes minutes to an hour: it has its own queue and worker, so the
            # minute passes on the default queue never wait behind one.
            ChildSpec(
                "worker",
                worker_argv(
                    queue=settings.TENANTML_DEFAULT_QUEUE,
                    concurrency=worker_concurrency,
                    node="worker",
                ),
            ),
            ChildSpec(
                "training",
                worker_argv(
                    queue=settings.TENANTML_TRAINING_QUEUE,
                    concurrency=training_concurrency,
                    node="training",
                ),
            ),
        ]
        if not no_beat:
            specs.append(
                ChildSpec(
                    "beat", python_argv("-m", "celery", "-A", "config", "beat", "--loglevel=INFO")
                )
            )
        env = os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1"}
        supervisor = Supervisor(specs, env=env, write=write)

        def on_signal(signum, frame):
            write(f"[up] {signal.Signals(signum).name} received; stopping.")
            supervisor.stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        supervisor.start()
        self._announce_when_ready(host, port, supervisor, write)
        code = supervisor.watch()
        supervisor.stop()
        if not no_triton:
            stop_local_serving(write)
        write("[up] stopped.")
        if code:
            sys.exit(code)

    def _writer(self):
        lock = threading.Lock()

        def write(line: str) -> None:
            with lock:
                self.stdout.write(line)
                self.stdout.flush()

        return write

    def _first_run_credentials(self, write) -> None:
        """On the first run only: a platform API token and an admin login, printed once."""
        if not ApiToken.objects.filter(scope=ApiToken.Scope.PLATFORM).exists():
            issued = issue_token(name="first platform token", tenant=None, actor="up")
            write("[up] platform API token (shown once, store it now): " + issued.secret)
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@localhost", password)
            write(f"[up] admin login (shown once): user admin, password {password}")

    def _announce_when_ready(self, host, port, supervisor, write, timeout_s: float = 60.0) -> None:
        url = f"http://{host}:{port}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not supervisor.stopping.is_set():
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        base = f"http://{host}:{port}"
                        write(
                            f"[up] TenantML is up at {base}/ — admin {base}/admin/, "
                            f"API docs {base}/api/docs/. Ctrl-C stops everything."
                        )
                        return
            except OSError:
                time.sleep(0.3)
        if not supervisor.stopping.is_set():
            write(f"[up] web did not answer {url} within {timeout_s:.0f} s; see its log above.")


def worker_argv(*, queue: str, concurrency: int, node: str) -> list[str]:
    """A Celery worker consuming one queue, named ``<node>@<host>`` (two workers on one host)."""
    return python_argv(
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel=INFO",
        f"--queues={queue}",
        f"--concurrency={concurrency}",
        f"--hostname={node}@%h",
    )
