"""Runs the platform's processes on one machine and stops them all cleanly.

Each child runs in its own session so a terminal's Ctrl-C reaches only the supervisor, which then
stops the children in order (SIGTERM, then SIGKILL after a grace period). A child that dies
unexpectedly is restarted with back-off; one that keeps dying stops the whole platform.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RESTART_WINDOW_S = 60.0
MAX_RESTARTS_IN_WINDOW = 5


@dataclass
class ChildSpec:
    name: str
    argv: list[str]


@dataclass
class Child:
    spec: ChildSpec
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        *,
        env: dict[str, str],
        write: Callable[[str], None],
        grace_s: float = 10.0,
    ) -> None:
        self.children = [Child(spec=spec) for spec in specs]
        self.env = env
        self.write = write
        self.grace_s = grace_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.spec.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        self.write(f"[up] started {child.spec.name} (pid {child.process.pid})")
        threading.Thread(target=self._pump, args=(child, child.process), daemon=True).start()

    def _pump(self, child: Child, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.write(f"[{child.spec.name}] {line.rstrip()}")

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def watch(self, poll_s: float = 0.5) -> int:
        """Restart crashed children until asked to stop; returns the exit status for ``up``."""
        while not self.stopping.wait(poll_s):
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
                if len(child.restarts) >= MAX_RESTARTS_IN_WINDOW:
                    self.write(
                        f"[up] {child.spec.name} exited {MAX_RESTARTS_IN_WINDOW} times within "
                        f"{RESTART_WINDOW_S:.0f} s (last code {code}); stopping the platform."
                    )
                    self.stop()
                    return 1
                child.restarts.append(now)
                self.write(f"[up] {child.spec.name} exited with code {code}; restarting.")
                time.sleep(min(2 ** len(child.restarts) * 0.25, 5))
                self._start(child)
        return 0

    def stop(self) -> None:
        """SIGTERM every child (web first), wait, then SIGKILL whatever is left in their groups.

        Only the child itself gets SIGTERM: Celery and uvicorn stop their own pools gracefully,
        which a signal to the whole group would interrupt.
        """
        with self._lock:
            self.stopping.set()
            live = [c for c in self.children if c.process and c.process.poll() is None]
            for child in live:
                self.write(f"[up] stopping {child.spec.name} (pid {child.process.pid})")
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.grace_s
            for child in live:
                remaining = max(deadline - time.monotonic(), 0.1)
                try:
                    child.process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    self.write(f"[up] {child.spec.name} did not stop in time; killing it.")
                    _signal_group(child.process, signal.SIGKILL)
                    child.process.wait()
            for child in self.children:
                # Kill anything a child left in its group (e.g. worker pool processes).
                if child.process:
                    _signal_group(child.process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]
