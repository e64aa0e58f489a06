"""Shared plumbing for the benchmarks: a throwaway platform, timing, the table and the JSON file.

Each benchmark is a script (``python bench/<name>.py``) that prints a table and writes
``bench/results/<name>.json`` with the machine it ran on, so figures in docs/benchmarks.md can be
traced to the run that produced them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def setup_django(*, fresh: bool = True) -> Path:
    """Configure Django on a new temporary state directory and migrate it; returns that directory.

    With DATABASE_URL set the figures come from that database instead (create an empty one for
    the run: benchmarks add rows).
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    var_dir = Path(tempfile.mkdtemp(prefix="tenantml-bench-"))
    if fresh:
        os.environ["TENANTML_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no event log lines between the tables
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    # Expected 4xx answers would otherwise log a warning per request.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    return var_dir


def percentile(samples: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize_ms(samples_s: list[float]) -> dict:
    """p50, p99 and mean of timings given in seconds, in milliseconds."""
    ms = [sample * 1000 for sample in samples_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "samples": len(ms),
    }


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    """Print ``rows`` under ``columns`` as an aligned text table."""
    cells = [[str(c) for c in columns]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def machine() -> dict:
    """What the figures were measured on."""
    from django.conf import settings

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
    }


def write_results(name: str, payload: dict, *, script: str | None = None) -> Path:
    """Write ``bench/results/<name>.json`` with the run's date and machine (``script``: the
    benchmark's file name where it is not ``<name>.py``)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "command": f"python bench/{script or name + '.py'} " + " ".join(sys.argv[1:]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path
