"""``manage.py up`` on the embedded default: one command brings up web, worker and beat on a
SQLite file and the file-system broker, a task sent from outside runs, and Ctrl-C stops every
child cleanly; the first-run credentials are printed once and never again."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
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
    """A running ``manage.py up`` whose output is collected line by line."""

    def __init__(self, var_dir: Path, port: int) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(port), "--worker-concurrency", "1"],
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
        return [
            int(m) for line in self.lines for m in re.findall(r"started \w+ \(pid (\d+)\)", line)
        ]

    def interrupt(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout_s)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive; /proc tells them apart.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_up_runs_the_platform_and_stops_every_child_on_ctrl_c(tmp_path):
    port = free_port()
    platform = Platform(tmp_path, port)
    try:
        token = platform.wait_for(r"platform API token .*: (tml_\S+)").group(1)
        platform.wait_for(r"admin login \(shown once\): user admin, password \S+")
        platform.wait_for(r"TenantML is up at")
        platform.wait_for(r"\[worker\].*ready")

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert json.load(response)["status"] == "ready"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tenants/", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        # A task sent by another process through the file-system broker reaches the worker.
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from deployments.tasks import sample_fleet_utilization as t; t.delay()",
            ],
            cwd=REPO,
            env=embedded_env(tmp_path),
            check=True,
            capture_output=True,
            timeout=60,
        )
        platform.wait_for(r"Task deployments\.tasks\.sample_fleet_utilization\[.*\] succeeded")

        # One local multi-model endpoint per model kind, each with a live Triton instance.
        triton = platform.wait_for(r"started triton local-intent-classifier/0 \(pid (\d+)")
        triton_pids = [int(triton.group(1))]
        triton = platform.wait_for(r"started triton local-embedding/0 \(pid (\d+)")
        triton_pids.append(int(triton.group(1)))
        assert all(alive(pid) for pid in triton_pids)

        pids = platform.child_pids()
        assert len(pids) == 3
        pids += triton_pids
        assert platform.interrupt() == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pids if alive(pid)], "children outlived Ctrl-C"
        assert any("[up] stopped." in line for line in platform.lines)
    finally:
        if platform.process.poll() is None:
            platform.process.kill()

    # Second start: the same database, no new credentials printed.
    again = Platform(tmp_path, free_port())
    try:
        again.wait_for(r"TenantML is up at")
        assert not any("shown once" in line for line in again.lines)
        assert again.interrupt() == 0
    finally:
        if again.process.poll() is None:
            again.process.kill()
    assert (tmp_path / "tenantml.sqlite3").exists()
    assert (tmp_path / "secret_key").exists()
