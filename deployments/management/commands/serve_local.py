"""``manage.py serve_local``: the local endpoints' Triton instances, started and held until
stopped, on their own (the ``serving`` role of the container image); ``--check`` is its health
check."""

from __future__ import annotations

import signal
import sys
import threading

from django.core.management.base import BaseCommand

from deployments.management.serving import (
    local_serving_problems,
    start_local_serving,
    stop_local_serving,
)


class Command(BaseCommand):
    help = (
        "Start the local endpoints' Triton instances (one local endpoint per model kind on the "
        "first run) and hold them until SIGTERM or Ctrl-C, which stops them; with --check, exit "
        "0 only if every local endpoint has an instance answering its readiness probe."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help="Report whether local serving is ready (exit 0) or not (exit 1), and exit.",
        )

    def handle(self, *args, check: bool = False, **opts):
        write = self._writer()
        if check:
            problems = local_serving_problems()
            for problem in problems:
                write(f"[serving] not ready: {problem}")
            if problems:
                sys.exit(1)
            write("[serving] ready")
            return
        stopping = threading.Event()

        def on_signal(signum, frame):
            write(f"[up] {signal.Signals(signum).name} received; stopping.")
            stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if not start_local_serving(write):
            # Nothing to hold: exit so that the container (or the process runner) restarts it.
            sys.exit(1)
        write("[up] local serving is up; SIGTERM or Ctrl-C stops it.")
        while not stopping.wait(1.0):
            pass
        stop_local_serving(write)
        write("[up] stopped.")

    def _writer(self):
        def write(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        return write
