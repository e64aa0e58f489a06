"""Per-request serving counters, aggregated in memory and flushed to the minute time series.

Serving a request writes nothing to the database: each process counts invocations, cold starts,
cache hits, errors and a latency histogram per (version, endpoint, minute) here, and
``flush_usage`` adds them to ``VersionUsageMinute`` rows (and stamps the placements' last use)
once a minute or on demand. The histogram's fixed buckets keep p50/p99 computable after rows from
many processes are summed.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import F

# Upper bounds in ms; the last bucket is everything slower.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def bucket_for(latency_ms: float) -> str:
    for bound in LATENCY_BUCKETS_MS:
        if latency_ms <= bound:
            return str(bound)
    return "inf"


@dataclass
class _Cell:
    tenant_id: int
    invocations: int = 0
    errors: int = 0
    cold_starts: int = 0
    cache_hits: int = 0
    latency_ms_sum: float = 0.0
    latency_ms_max: float = 0.0
    histogram: dict = field(default_factory=lambda: defaultdict(int))


class UsageCounters:
    """Thread-safe counters for this process, keyed by (version, endpoint, minute)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cells: dict[tuple[int, int, datetime], _Cell] = {}
        self._last_invoked: dict[int, datetime] = {}

    def record(
        self,
        *,
        version_id: int,
        endpoint_id: int,
        tenant_id: int,
        latency_ms: float,
        cold_start: bool,
        error: bool = False,
        placement_id: int | None = None,
        now: datetime | None = None,
    ) -> None:
        """Count one request."""
        now = now or datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        with self._lock:
            cell = self._cells.get((version_id, endpoint_id, minute))
            if cell is None:
                cell = self._cells[(version_id, endpoint_id, minute)] = _Cell(tenant_id)
            cell.invocations += 1
            cell.errors += int(error)
            cell.cold_starts += int(cold_start)
            cell.cache_hits += int(not cold_start and not error)
            cell.latency_ms_sum += latency_ms
            cell.latency_ms_max = max(cell.latency_ms_max, latency_ms)
            cell.histogram[bucket_for(latency_ms)] += 1
            if placement_id is not None:
                self._last_invoked[placement_id] = now

    def drain(self) -> tuple[dict, dict]:
        """Take everything counted so far, leaving the counters empty."""
        with self._lock:
            cells, self._cells = self._cells, {}
            touched, self._last_invoked = self._last_invoked, {}
        return cells, touched

    def restore(self, cells: dict) -> None:
        """Put drained cells back (a flush that failed must not lose counts)."""
        with self._lock:
            for key, cell in cells.items():
                mine = self._cells.get(key)
                if mine is None:
                    self._cells[key] = cell
                    continue
                mine.invocations += cell.invocations
                mine.errors += cell.errors
                mine.cold_starts += cell.cold_starts
                mine.cache_hits += cell.cache_hits
                mine.latency_ms_sum += cell.latency_ms_sum
                mine.latency_ms_max = max(mine.latency_ms_max, cell.latency_ms_max)
                for bucket, count in cell.histogram.items():
                    mine.histogram[bucket] += count


COUNTERS = UsageCounters()


def flush_usage(*, counters: UsageCounters = COUNTERS) -> int:
    """Add this process's counters to the minute rows; returns the number of rows written."""
    from deployments.models import Placement, VersionUsageMinute

    cells, touched = counters.drain()
    try:
        with transaction.atomic():
            for (version_id, endpoint_id, minute), cell in sorted(
                cells.items(), key=lambda item: (item[0][0], item[0][1], item[0][2])
            ):
                row, created = VersionUsageMinute.objects.select_for_update().get_or_create(
                    version_id=version_id,
                    endpoint_id=endpoint_id,
                    minute=minute,
                    defaults={"tenant_id": cell.tenant_id},
                )
                histogram = dict(row.latency_histogram or {})
                for bucket, count in cell.histogram.items():
                    histogram[bucket] = histogram.get(bucket, 0) + count
                VersionUsageMinute.objects.filter(pk=row.pk).update(
                    invocations=F("invocations") + cell.invocations,
                    errors=F("errors") + cell.errors,
                    cold_starts=F("cold_starts") + cell.cold_starts,
                    cache_hits=F("cache_hits") + cell.cache_hits,
                    latency_ms_sum=F("latency_ms_sum") + cell.latency_ms_sum,
                    latency_ms_max=max(row.latency_ms_max, cell.latency_ms_max),
                    latency_histogram=histogram,
                )
            for placement_id, stamp in touched.items():
                Placement.objects.filter(pk=placement_id).update(last_invoked_at=stamp)
    except Exception:
        counters.restore(cells)
        raise
    return len(cells)


_FLUSHER_LOCK = threading.Lock()
_FLUSHER: threading.Thread | None = None


def ensure_background_flush() -> bool:
    """Start this process's flusher thread once (serving processes call this on each request).

    It flushes every ``USAGE_FLUSH_INTERVAL_S`` seconds (0 turns it off, as the tests do, where
    flushes are explicit), so the minute rows and the placements' last use reach the database
    without a write per request. Returns whether a flusher runs.
    """
    global _FLUSHER
    from django.conf import settings

    interval_s = settings.TENANTML_USAGE_FLUSH_INTERVAL_S
    if interval_s <= 0:
        return False
    if _FLUSHER is not None and _FLUSHER.is_alive():
        return True
    with _FLUSHER_LOCK:
        if _FLUSHER is None or not _FLUSHER.is_alive():
            _FLUSHER = threading.Thread(
                target=_flush_forever, args=(interval_s,), name="usage-flush", daemon=True
            )
            _FLUSHER.start()
    return True


def _flush_forever(interval_s: float) -> None:
    import logging
    import time

    from django.db import close_old_connections

    log = logging.getLogger(__name__)
    while True:
        time.sleep(interval_s)
        try:
            close_old_connections()
            flush_usage()
        except Exception:  # a failed flush keeps its counts (restored) for the next one
            log.exception("Flushing serving counters failed; they are kept for the next flush.")


def percentile_from_histogram(histogram: dict, pct: float) -> float | None:
    """The bucket bound under which ``pct`` % of the counted requests fell."""
    total = sum(histogram.values())
    if not total:
        return None
    needed = pct / 100 * total
    seen = 0
    for bound in (*LATENCY_BUCKETS_MS, "inf"):
        seen += histogram.get(str(bound), 0)
        if seen >= needed:
            return float(bound) if bound != "inf" else float("inf")
    return float("inf")


__all__ = [
    "COUNTERS",
    "UsageCounters",
    "ensure_background_flush",
    "flush_usage",
    "percentile_from_histogram",
]


class InFlight:
    """Requests in flight per placement in this process, for least-outstanding routing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}

    def count(self, placement_id: int) -> int:
        return self._counts.get(placement_id, 0)

    @contextlib.contextmanager
    def request(self, placement_id: int):
        """Count one request to the placement while the block runs."""
        with self._lock:
            self._counts[placement_id] = self._counts.get(placement_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._counts.get(placement_id, 1) - 1
                if left > 0:
                    self._counts[placement_id] = left
                else:
                    self._counts.pop(placement_id, None)


IN_FLIGHT = InFlight()
