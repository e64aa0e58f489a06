"""Reading the machine the local instances share: total memory, the cgroup's limit (v2 and v1,
every level of the path, inside a container too) and the platform's own processes, each counted
once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest
from django.conf import settings as django_settings

from deployments.backends.local.machine import (
    cgroup_limit_mb,
    platform_processes_mb,
    platform_role,
    read_machine,
    total_memory_mb,
)
from tests.deployments.backends.local.machine_support import GIB, fake_machine
from tests.waiting import wait_until


def test_total_memory_is_read_from_meminfo(tmp_path):
    assert total_memory_mb(fake_machine(tmp_path, total_kb=8 * 1024 * 1024)) == 8192


def test_without_meminfo_total_memory_is_psutils_reading(tmp_path):
    assert total_memory_mb(tmp_path) == psutil.virtual_memory().total // 2**20


def test_a_cgroup_v2_limit_is_read_from_memory_max(tmp_path):
    root = fake_machine(
        tmp_path,
        cgroup="0::/system.slice/tenantml.service\n",
        files={
            "memory.max": "max\n",
            "system.slice/memory.max": "max\n",
            "system.slice/tenantml.service/memory.max": f"{6 * GIB}\n",
        },
    )

    limit, where = cgroup_limit_mb(root)

    assert limit == 6144
    assert where.endswith("system.slice/tenantml.service/memory.max")


def test_a_parents_lower_limit_binds_its_children(tmp_path):
    root = fake_machine(
        tmp_path,
        cgroup="0::/system.slice/tenantml.service\n",
        files={
            "system.slice/memory.max": f"{4 * GIB}\n",
            "system.slice/tenantml.service/memory.max": f"{6 * GIB}\n",
        },
    )

    assert cgroup_limit_mb(root)[0] == 4096


def test_no_limit_reads_as_none(tmp_path):
    root = fake_machine(tmp_path, files={"memory.max": "max\n"})

    assert cgroup_limit_mb(root) == (None, None)


def test_a_cgroup_v1_limit_is_read_and_its_unlimited_value_ignored(tmp_path):
    cgroup = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n"
    limited = fake_machine(
        tmp_path / "limited",
        cgroup=cgroup,
        files={
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/process_api/abc/memory.limit_in_bytes": f"{3 * GIB}\n",
        },
    )
    unlimited = fake_machine(
        tmp_path / "unlimited",
        cgroup=cgroup,
        files={"memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n"},
    )

    assert cgroup_limit_mb(limited)[0] == 3072
    assert cgroup_limit_mb(unlimited) == (None, None)


def test_inside_a_container_the_mounts_own_limit_is_read(tmp_path):
    # The path names the host's hierarchy, which the container does not mount.
    root = fake_machine(
        tmp_path,
        cgroup="0::/docker/0123abcd\n",
        files={"memory.max": f"{2 * GIB}\n"},
    )

    assert cgroup_limit_mb(root)[0] == 2048


def test_the_reading_follows_the_machine_root_setting(settings, tmp_path):
    settings.TENANTML_LOCAL_MACHINE_ROOT = str(
        fake_machine(tmp_path, total_kb=16 * 1024 * 1024, files={"memory.max": f"{5 * GIB}\n"})
    )

    reading = read_machine()

    assert reading.total_mb == 16384
    assert reading.cgroup_limit_mb == 5120
    assert reading.cgroup_limit_file == str(tmp_path / "sys" / "fs" / "cgroup" / "memory.max")


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["/venv/bin/uvicorn", "config.asgi:application", "--port", "8000"], "web"),
        (["python", "-m", "uvicorn", "config.asgi:application"], "web"),
        (["gunicorn", "config.wsgi:application"], "web"),
        (["daphne", "config.asgi:application"], "web"),
        (["celery", "-A", "config", "worker", "--queues=training"], "worker"),
        (["/venv/bin/celery", "--app=config.celery", "worker"], "worker"),
        (["/venv/bin/python", "-m", "celery", "-A", "config", "beat"], "beat"),
        (["python", "manage.py", "up"], "up"),
        (["python", "/app/manage.py", "serve_local"], "serve_local"),
        (["python", "manage.py", "migrate"], None),
        (["celery", "-A", "otherproject", "worker"], None),
        (["uvicorn", "someone_else:app"], None),
        ([], None),
    ],
)
def test_the_platforms_processes_are_told_by_their_command_line(argv, role):
    assert platform_role(argv) == role


HOLD = textwrap.dedent(
    """\
    import subprocess, sys, time
    held = b"\\x01" * ({mb} << 20)
    children = [subprocess.Popen(argv) for argv in {children!r}]
    time.sleep(120)
    """
)


def holder(mb: int, *words: str, children: tuple[list[str], ...] = ()) -> list[str]:
    """A Python process that holds ``mb`` MB, starts ``children`` and whose command line ends
    with ``words`` (what the platform reads its role from)."""
    return [sys.executable, "-c", HOLD.format(mb=mb, children=list(children)), *words]


def test_the_platforms_processes_are_measured_once_each_with_their_children():
    worker = holder(150, "celery", "-A", "config", "worker")
    training = holder(100, "training")  # a child with no role of its own, as a training
    up = holder(20, "manage.py", "up", children=(worker, training))
    process = subprocess.Popen(up, cwd=django_settings.BASE_DIR)
    try:
        wait_until(
            lambda: len(psutil.Process(process.pid).children()) == 2,
            20,
            "the children started",
        )
        worker_pid = next(
            child.pid
            for child in psutil.Process(process.pid).children()
            if "worker" in child.cmdline()
        )

        def filled() -> dict[str, int] | None:
            measured = platform_processes_mb()
            full = measured.get(f"worker {worker_pid}", 0) >= 140
            return measured if full and measured.get(f"up {process.pid}", 0) >= 110 else None

        measured = wait_until(filled, 20, lambda: f"measured {platform_processes_mb()}")

        assert measured[f"worker {worker_pid}"] < 250
        # ``up`` counts itself and the training it started, not the worker counted above.
        assert measured[f"up {process.pid}"] < 250
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def test_processes_of_another_checkout_are_not_the_platforms(tmp_path):
    process = subprocess.Popen(holder(10, "manage.py", "up"), cwd=tmp_path)
    try:
        wait_until(
            lambda: platform_role(psutil.Process(process.pid).cmdline()) == "up",
            20,
            "the process started",
        )

        assert f"up {process.pid}" not in platform_processes_mb()
    finally:
        process.kill()
        process.wait()
