"""``manage.py up`` on the embedded default: one command brings up web, a worker for the default
queue and one for the training queue, beat and local Triton on a SQLite file and the file-system
broker, a task sent from outside runs on the worker of its queue, and Ctrl-C stops every child
cleanly; the first-run credentials are printed once and never again. ``manage.py serve_local``
(the serving role of the container image) holds the Triton instances on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.up_support import REPO, Platform, embedded_env, free_port


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def send_from_another_process(var_dir: Path, task: str, *args: int) -> None:
    """Send a task by name through the file-system broker, as a web process would."""
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            f"from config.queue import queue_task; queue_task({task!r}, *{args!r})",
        ],
        cwd=REPO,
        env=embedded_env(var_dir),
        check=True,
        capture_output=True,
        timeout=60,
    )


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
        platform.wait_for(r"\[training\].*ready")

        # Two workers, each on its own queue: a training never holds up the periodic passes.
        children = platform.children()
        assert set(children) == {"web", "worker", "training", "beat"}
        assert "--queues=celery" in command_line(children["worker"])
        assert "--queues=training" in command_line(children["training"])
        assert "--concurrency=1" in command_line(children["training"])

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert json.load(response)["status"] == "ready"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tenants/", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        # Tasks sent by another process through the file-system broker reach the worker of
        # their queue: a periodic pass the default one, packaging the training one.
        send_from_another_process(tmp_path, "deployments.tasks.sample_fleet_utilization")
        platform.wait_for(
            r"^\[worker\].*Task deployments\.tasks\.sample_fleet_utilization\[.*\] succeeded"
        )
        send_from_another_process(tmp_path, "models_registry.tasks.package_version", 0)
        platform.wait_for(
            r"^\[training\].*Task models_registry\.tasks\.package_version\[.*\] received"
        )

        # One local multi-model endpoint per model kind, each with a live Triton instance.
        triton = platform.wait_for(r"started triton local-intent-classifier/0 \(pid (\d+)")
        triton_pids = [int(triton.group(1))]
        triton = platform.wait_for(r"started triton local-embedding/0 \(pid (\d+)")
        triton_pids.append(int(triton.group(1)))
        assert all(alive(pid) for pid in triton_pids)

        pids = platform.child_pids()
        assert len(pids) == 4
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


def test_serve_local_holds_the_triton_instances_reports_them_ready_and_stops_them(tmp_path):
    env = embedded_env(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "serve_local", "--check"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    before = check()
    assert before.returncode == 1
    assert "not ready: no local endpoint exists yet" in before.stdout

    serving = Platform(tmp_path, command=["serve_local"])
    try:
        triton_pids = [
            int(serving.wait_for(rf"started triton local-{kind}/0 \(pid (\d+)").group(1))
            for kind in ("intent-classifier", "embedding")
        ]
        serving.wait_for(r"local serving is up")
        ready = check()
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "[serving] ready" in ready.stdout

        # A Triton that dies makes the check fail until the reconciler restarts it.
        os.kill(triton_pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(triton_pids[1]) and time.monotonic() < deadline:
            time.sleep(0.1)
        dead = check()
        assert dead.returncode == 1
        assert "not ready: local-embedding: no instance answers /ping" in dead.stdout

        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(timeout=60) == 0
        serving.wait_for(r"stopped triton local-intent-classifier/0")
        assert not alive(triton_pids[0])
    finally:
        if serving.process.poll() is None:
            serving.process.kill()
