"""Measuring the memory one loaded model holds: host memory from its python backend stub
processes, found by the model they serve, in RSS and PSS; GPU memory from Triton's
``nv_gpu_memory_used_bytes`` before and after its load (Triton reports it per GPU, not per model).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import psutil

from deployments.backends.local.instances import (
    MemoryReading,
)
from deployments.backends.local.process import MB, STUB_NAME

logger = logging.getLogger(__name__)

# --- Memory and metrics ----------------------------------------------------------------------


def _stub_processes(triton_pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(triton_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    stubs = []
    for child in children:
        try:
            argv = child.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if argv and Path(argv[0]).name == STUB_NAME:
            stubs.append(child)
    return stubs


def _stub_belongs_to(argv: list[str], model_name_or_dir: str) -> bool:
    """Whether a stub's argv serves the model named (or unpacked at) ``model_name_or_dir``.

    The stub's argv holds the path of the model's ``model.py`` and the instance name, which is
    the model name followed by ``_<group>[_<index>]``.
    """
    if os.sep in model_name_or_dir:
        directory = os.path.normpath(os.path.abspath(model_name_or_dir))
        return any(
            arg.endswith(".py") and os.path.normpath(arg).startswith(directory + os.sep)
            for arg in argv[1:]
        )
    pattern = re.compile(rf"{re.escape(model_name_or_dir)}(_\d+)+")
    return any(pattern.fullmatch(arg) for arg in argv[1:])


def _pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def model_memory_mb(triton_pid: int, model_name_or_dir: str | Path) -> MemoryReading | None:
    """Host memory of one loaded python-backend model: the sum over its stub processes.

    ``model_name_or_dir`` is the name the model was loaded under, or the directory it was
    loaded from. None when the server has no stub for it (not loaded, still loading, or a model
    served inside the server process by another backend, whose memory cannot be told apart).
    """
    target = str(model_name_or_dir)
    rss = 0
    pss: int | None = 0
    count = 0
    for stub in _stub_processes(triton_pid):
        try:
            if not _stub_belongs_to(stub.cmdline(), target):
                continue
            rss += stub.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count += 1
        stub_pss = _pss_bytes(stub.pid)
        pss = None if stub_pss is None or pss is None else pss + stub_pss
    if count == 0:
        return None
    return MemoryReading(
        rss_mb=round(rss / MB, 2),
        pss_mb=round(pss / MB, 2) if pss is not None else None,
        processes=count,
    )


def gpu_memory_by_device_mb(metrics: dict) -> dict[str, float] | None:
    """Used memory per GPU (by UUID) from parsed Triton metrics (``triton_memory_metrics``);
    None when Triton reports no GPU (a machine without one, or metrics turned off)."""
    used = {
        uuid: float(gpu["memory_used_mb"])
        for uuid, gpu in (metrics.get("gpus") or {}).items()
        if "memory_used_mb" in gpu
    }
    return used or None


def gpu_memory_growth_mb(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> float | None:
    """What a load added to the GPUs, summed over them: each GPU's growth between the readings
    taken around it (never below 0: another model unloading meanwhile frees memory); None
    without both readings."""
    if before is None or after is None:
        return None
    growth = sum(max(0.0, used - before.get(uuid, used)) for uuid, used in after.items())
    return round(growth, 1)
