"""``manage.py up`` (or another platform command) in a child process on the embedded default,
in a state directory of its own, its output kept line by line: a first install as a new user
starts it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "ARTIFACT_STORE", "SECRET_KEY"}
    }
    return env | {"TENANTML_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}


class Platform:
    """A running ``manage.py up`` (or another command) whose output is collected line by line."""

    def __init__(
        self, var_dir: Path, port: int | None = None, *, command: list[str] | None = None
    ) -> None:
        self.lines: list[str] = []
        command = command or ["up", "--port", str(port), "--worker-concurrency", "1"]
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=embedded_env(var_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout_s: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                match = re.search(pattern, line)
                if match:
                    return match
            seen = len(self.lines)
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def child_pids(self) -> list[int]:
        return list(self.children().values())

    def children(self) -> dict[str, int]:
        """The supervised children by name (web, worker, training, beat) and their pids."""
        return {
            name: int(pid)
            for line in self.lines
            for name, pid in re.findall(r"\[up\] started (\w+) \(pid (\d+)\)", line)
        }

    def interrupt(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 60) -> None:
        """Ctrl-C, as a user stops it; killed if it has not stopped within ``timeout_s``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
