"""A machine for the memory reading to read: a directory laid out like ``/`` (meminfo, this
process's cgroup, cgroup limit files), pointed at by ``LOCAL_MACHINE_ROOT`` in tests."""

from __future__ import annotations

from pathlib import Path

GIB = 1024**3


def fake_machine(
    root: Path,
    *,
    total_kb: int = 8 * 1024 * 1024,
    cgroup: str = "0::/\n",
    files: dict[str, str] | None = None,
) -> Path:
    """A directory laid out like / for the reading: meminfo, this process's cgroup, limits."""
    (root / "proc" / "self").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "meminfo").write_text(
        f"MemTotal:       {total_kb} kB\nMemFree:        1000 kB\n"
    )
    (root / "proc" / "self" / "cgroup").write_text(cgroup)
    for relative, text in (files or {}).items():
        path = root / "sys" / "fs" / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
