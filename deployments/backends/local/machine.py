"""Reading the machine the local instances share: its memory, its cgroup's limit, and what the
platform's own processes hold.

Everything is read under one root directory (``LOCAL_MACHINE_ROOT``, ``/`` on a real machine):
``proc/meminfo`` for total memory, ``proc/self/cgroup`` for this process's cgroup and
``sys/fs/cgroup/...`` for its limit. Tests point the root at a directory of their own files to
play an 8 GB laptop or a container with a 6 GB limit. Processes are read with psutil.

The cgroup limit is the lowest of every level from this process's cgroup up to the root (a
parent's limit binds its children): ``memory.max`` on cgroup v2, ``memory.limit_in_bytes`` on
v1 (where "no limit" reads as a number near 2**63). On a hybrid machine both are read and the
lower wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.conf import settings

from deployments.backends.local.process import MB, STUB_NAME, TRITONSERVER_NAME

logger = logging.getLogger(__name__)

# A v1 limit at or above this means "no limit" (the kernel reports PAGE_COUNTER_MAX pages).
UNLIMITED_BYTES = 2**62


@dataclass(frozen=True)
class MachineReading:
    """What was read, in MB (1 MB = 2**20 bytes)."""

    total_mb: int
    cgroup_limit_mb: int | None
    # The file the limit came from, for the event that explains a budget.
    cgroup_limit_file: str | None
    # The platform's web server, workers, beat and their children (trainings), by process.
    processes_mb: dict[str, int] = field(default_factory=dict)
    # Each Triton process's own memory without its models, by pid (None: not readable).
    triton_baselines_mb: dict[int, int | None] = field(default_factory=dict)


def machine_root() -> Path:
    return Path(settings.TENANTML_LOCAL_MACHINE_ROOT)


def read_machine(*, triton_pids: Iterable[int] = ()) -> MachineReading:
    """Read total memory, the cgroup limit, the platform's processes and the given Tritons."""
    root = machine_root()
    limit_mb, limit_file = cgroup_limit_mb(root)
    return MachineReading(
        total_mb=total_memory_mb(root),
        cgroup_limit_mb=limit_mb,
        cgroup_limit_file=limit_file,
        processes_mb=platform_processes_mb(),
        triton_baselines_mb={pid: triton_baseline_mb(pid) for pid in triton_pids},
    )


def total_memory_mb(root: Path) -> int:
    """MemTotal from ``proc/meminfo`` under ``root``; psutil's reading where there is none."""
    try:
        for line in (root / "proc" / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return psutil.virtual_memory().total // MB


def cgroup_limit_mb(root: Path) -> tuple[int | None, str | None]:
    """The lowest memory limit on this process's cgroup path (v2 and v1), and its file."""
    found: list[tuple[int, Path]] = []
    for version, path in _cgroup_paths(root):
        if version == 2:
            found.extend(_limits(root / "sys" / "fs" / "cgroup", path, "memory.max"))
        else:
            found.extend(
                _limits(root / "sys" / "fs" / "cgroup" / "memory", path, "memory.limit_in_bytes")
            )
    if not found:
        return None, None
    limit, where = min(found)
    return limit // MB, str(where)


def _cgroup_paths(root: Path) -> list[tuple[int, str]]:
    """(version, path) of this process's memory cgroups from ``proc/self/cgroup``."""
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            paths.append((2, path))
        elif "memory" in controllers.split(","):
            paths.append((1, path))
    return paths


def _limits(mount: Path, cgroup_path: str, file_name: str) -> list[tuple[int, Path]]:
    """Every limit set from ``cgroup_path`` up to the mount's root. Inside a container the
    path names the host's hierarchy, which is not mounted: then only the mount's own root
    (the container's cgroup) is read."""
    levels = [mount / cgroup_path.strip("/")] if cgroup_path.strip("/") else [mount]
    while levels[-1] != mount:
        levels.append(levels[-1].parent)
    if not levels[0].is_dir():
        levels = [mount]
    limits = []
    for level in levels:
        value = _read_limit(level / file_name)
        if value is not None:
            limits.append((value, level / file_name))
    return limits


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        value = int(text)
    except ValueError:
        logger.warning("Unreadable memory limit in %s: %r", path, text)
        return None
    return value if 0 < value < UNLIMITED_BYTES else None


# --- The platform's own processes ------------------------------------------------------------

# Command-line words that make a process one of the platform's: a web server (uvicorn, gunicorn,
# daphne...) on the project's ASGI/WSGI app, Celery workers and beat of the ``config`` app, and
# manage.py's long-running commands (``up`` supervises, ``serve_local`` runs the Tritons).
_WEB_APPS = ("config.asgi:application", "config.wsgi:application", "config.asgi", "config.wsgi")
_CELERY_APPS = ("config", "config.celery", "--app=config", "--app=config.celery")


def platform_role(argv: list[str]) -> str | None:
    """Which of the platform's processes a command line starts, or None."""
    words = [Path(word).name if index == 0 else word for index, word in enumerate(argv)]
    if any(app in words for app in _WEB_APPS):
        return "web"
    if any(Path(word).name == "celery" for word in words) and any(
        app in words for app in _CELERY_APPS
    ):
        if "beat" in words:
            return "beat"
        if "worker" in words:
            return "worker"
    if any(Path(word).name == "manage.py" for word in words):
        for command in ("up", "serve_local"):
            if command in words:
                return command
    return None


def platform_processes_mb() -> dict[str, int]:
    """Memory (PSS where readable, else RSS) of the platform's processes of this checkout (those
    whose working directory is the project's), each with its children (Celery's pool processes,
    the trainings a worker runs) but without Triton and its model processes, which are counted
    apart. ``up`` starts the others as its children: each is counted once, under its own role.
    Keys are ``<role> <pid>``."""
    base = str(settings.BASE_DIR)
    roles: dict[int, tuple[str, psutil.Process]] = {}
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        role = platform_role(process.info["cmdline"] or [])
        if role is not None and process.info["cwd"] == base:
            roles[process.pid] = (role, process)
    measured: dict[str, int] = {}
    for pid, (role, process) in roles.items():
        total, frontier = 0, [process]
        while frontier:
            member = frontier.pop()
            total += _own_memory_bytes(member)
            try:
                children = member.children()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            frontier.extend(child for child in children if child.pid not in roles)
        measured[f"{role} {pid}"] = total // MB
    return measured


def _own_memory_bytes(process: psutil.Process) -> int:
    try:
        if process.name() in (TRITONSERVER_NAME, STUB_NAME):
            return 0
        try:
            return process.memory_full_info().pss
        except (psutil.AccessDenied, AttributeError):
            return process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0


def triton_baseline_mb(pid: int) -> int | None:
    """A Triton server's own resident memory (its models run in separate stub processes)."""
    try:
        process = psutil.Process(pid)
        if process.name() != TRITONSERVER_NAME:
            return None
        return process.memory_info().rss // MB
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
