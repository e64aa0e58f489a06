"""``manage.py up``: migrate, print first-run credentials, run web + worker + beat until Ctrl-C."""

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

from deployments.management.supervisor import ChildSpec, Supervisor, python_argv
from tenants.models import ApiToken
from tenants.services import issue_token


class Command(BaseCommand):
    help = "Run the whole platform on this machine (web, Celery worker and beat) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--worker-concurrency", type=int, default=2)
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
        no_triton: bool = False,
        **opts,
    ):
        write = self._writer()
        call_command("migrate", interactive=False, verbosity=0)
        write(
            f"[up] database migrated ({settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]})"
        )
        self._first_run_credentials(write)
        instances = [] if no_triton else self._start_triton_instances(write)

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
            ChildSpec(
                "worker",
                python_argv(
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--loglevel=INFO",
                    f"--concurrency={worker_concurrency}",
                    "--hostname=worker@%h",
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
        self._stop_triton_instances(instances, write)
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

    def _start_triton_instances(self, write) -> list:
        """Start the local endpoints' Triton instances (creating one endpoint per model kind on
        the first run); the platform still runs without them if Triton cannot start."""
        from deployments.backends.local.runtime import (
            ensure_default_local_endpoints,
            start_local_endpoints,
        )
        from deployments.exceptions import InstanceUnavailable

        for endpoint in ensure_default_local_endpoints(actor="up"):
            write(f"[up] created local endpoint {endpoint.name} for {endpoint.model_kind} models")
        try:
            instances = start_local_endpoints(actor="up")
        except InstanceUnavailable as exc:
            write(f"[up] local Triton did not start; serving is unavailable: {exc.message}")
            return []
        for instance in instances:
            write(
                f"[up] started triton {instance} (pid {instance.pid}, port {instance.port}, "
                f"{instance.memory_budget_mb:,} MB budget)"
            )
        return instances

    def _stop_triton_instances(self, instances: list, write) -> None:
        from deployments.backends.local.runtime import stop_local_instance

        for instance in instances:
            stop_local_instance(instance=instance, actor="up", reason="platform stopped")
            write(f"[up] stopped triton {instance}")

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
