"""A fresh platform for the client's tests: ``manage.py up`` on the embedded default in its own
state directory — web, a Celery worker and the local Triton servers, as a new user starts it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENT_SOURCE = REPO / "clients" / "python" / "src"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_install_env(var_dir: Path) -> dict[str, str]:
    """This environment without the servers and stores the suite may point at: the platform
    under test is a first install on the embedded default, in ``var_dir``."""
    servers = {"DATABASE_URL", "CELERY_BROKER_URL", "ARTIFACT_STORE", "SECRET_KEY"}
    env = {name: value for name, value in os.environ.items() if name not in servers}
    return env | {"TENANTML_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class LivePlatform:
    url: str
    platform_token: str
    var_dir: Path


class PlatformProcess:
    """``manage.py up`` in a child process, its output kept line by line."""

    def __init__(self, var_dir: Path, port: int) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "up",
                "--port",
                str(port),
                "--worker-concurrency",
                "1",
                "--no-beat",
            ],
            cwd=REPO,
            env=fresh_install_env(var_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    def wait_for(self, pattern: str, timeout_s: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; platform output:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_live_platform(var_dir: Path) -> tuple[PlatformProcess, LivePlatform]:
    """Start the platform and wait until it serves, its worker consumes tasks and the intent
    classifiers' Triton server runs."""
    port = free_port()
    process = PlatformProcess(var_dir, port)
    try:
        token = process.wait_for(r"platform API token .*: (tml_\S+)").group(1)
        process.wait_for(r"started triton local-intent-classifier/0")
        process.wait_for(r"TenantML is up at")
        process.wait_for(r"\[worker\].*ready")
    except BaseException:
        process.stop()
        raise
    return process, LivePlatform(
        url=f"http://127.0.0.1:{port}", platform_token=token, var_dir=var_dir
    )
