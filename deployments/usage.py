"""Per-request serving counters, aggregated in memory and flushed to the minute time series.

Serving a request writes nothing to the database: each process counts invocations, cold starts,
cache hits, errors and a latency histogram per (version, endpoint, minute) here, and
``flush_usage`` adds them to ``VersionUsageMinute`` rows and their per-endpoint sums
(``EndpointUsageMinute``), and stamps the placements' last use, every few seconds or on demand, in
a fixed number of statements however many models were served. The histogram's fixed buckets keep
p50/p99 computable after rows from many processes are summed.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import transaction

# Upper bounds in ms; the last bucket is everything slower.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def bucket_for(latency_ms: float) -> str:
    for bound in LATENCY_BUCKETS_MS:
        if latency_ms <= bound:
            return str(bound)
    return "inf"


@dataclass(frozen=True)
class GenerationFigures:
    """What one request to a generating model produced: the time to its first token, the
    pieces of text (tokens) it generated and the time from the first token to the last."""

    time_to_first_token_ms: float
    tokens: int
    generation_ms: float


@dataclass
class _Cell:
    tenant_id: int
    invocations: int = 0
    errors: int = 0
    cold_starts: int = 0
    cache_hits: int = 0
    latency_ms_sum: float = 0.0
    generations: int = 0
    time_to_first_token_ms_sum: float = 0.0
    generated_tokens: int = 0
    generation_ms_sum: float = 0.0
    mirrored: int = 0
    mirror_dropped: int = 0
    compared: int = 0
    agreement_sum: float = 0.0
    latency_ms_max: float = 0.0
    histogram: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, other: _Cell) -> None:
        """Add another cell's counts to this one."""
        _add_counts(self, other)
        for bucket, count in other.histogram.items():
            self.histogram[bucket] += count


# What adding two minutes of traffic sums (the largest latency is kept, histograms are merged);
# the names of both a cell's attributes and a minute row's columns.
GENERATION_COUNTS = (
    "generations",
    "time_to_first_token_ms_sum",
    "generated_tokens",
    "generation_ms_sum",
)
# A new version's copies of live requests and its agreement with the live version's answers
# (canary and shadow rollouts).
COMPARISON_COUNTS = ("mirrored", "mirror_dropped", "compared", "agreement_sum")
COUNTS = (
    "invocations",
    "errors",
    "cold_starts",
    "cache_hits",
    "latency_ms_sum",
    *GENERATION_COUNTS,
    *COMPARISON_COUNTS,
)


def _add_counts(target, source) -> None:
    for name in COUNTS:
        setattr(target, name, getattr(target, name) + getattr(source, name))
    target.latency_ms_max = max(target.latency_ms_max, source.latency_ms_max)


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
        generated: GenerationFigures | None = None,
        mirrored: bool = False,
    ) -> None:
        """Count one request (and, for a generating model's request that produced a first
        token, its time to that token and its tokens); ``mirrored`` for a copy of a live
        request sent to a new version."""
        now = now or datetime.now(UTC)
        with self._lock:
            cell = self._cell(version_id, endpoint_id, tenant_id, now)
            cell.mirrored += int(mirrored)
            cell.invocations += 1
            cell.errors += int(error)
            cell.cold_starts += int(cold_start)
            cell.cache_hits += int(not cold_start and not error)
            cell.latency_ms_sum += latency_ms
            cell.latency_ms_max = max(cell.latency_ms_max, latency_ms)
            cell.histogram[bucket_for(latency_ms)] += 1
            if generated is not None:
                cell.generations += 1
                cell.time_to_first_token_ms_sum += generated.time_to_first_token_ms
                cell.generated_tokens += generated.tokens
                cell.generation_ms_sum += generated.generation_ms
            if placement_id is not None:
                self._last_invoked[placement_id] = now

    def record_comparison(
        self,
        *,
        version_id: int,
        endpoint_id: int,
        tenant_id: int,
        compared: int,
        agreement_sum: float,
        now: datetime | None = None,
    ) -> None:
        """Count outputs of a new version compared with the live version's answers to the same
        inputs, and the sum of their agreement (each between 0 and 1)."""
        with self._lock:
            cell = self._cell(version_id, endpoint_id, tenant_id, now or datetime.now(UTC))
            cell.compared += compared
            cell.agreement_sum += agreement_sum

    def record_mirror_dropped(
        self, *, version_id: int, endpoint_id: int, tenant_id: int, now: datetime | None = None
    ) -> None:
        """Count a copy of a live request not sent to a new version (too many in flight)."""
        with self._lock:
            cell = self._cell(version_id, endpoint_id, tenant_id, now or datetime.now(UTC))
            cell.mirror_dropped += 1

    def _cell(self, version_id: int, endpoint_id: int, tenant_id: int, now: datetime) -> _Cell:
        key = (version_id, endpoint_id, now.replace(second=0, microsecond=0))
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell(tenant_id)
        return cell

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
                else:
                    mine.add(cell)


COUNTERS = UsageCounters()


# Rows written per statement: large enough that a flush is a handful of queries, small enough
# that no statement carries an unbounded parameter list.
FLUSH_BATCH_ROWS = 2000


def flush_usage(*, counters: UsageCounters = COUNTERS) -> int:
    """Add this process's counters to the minute rows; returns the number of version rows written.

    The version rows, their per-endpoint sums (``EndpointUsageMinute``, what fleet and endpoint
    traffic figures read) and the placements' last use are written in one transaction, in a
    fixed number of statements per ``FLUSH_BATCH_ROWS`` rows, whatever the number of models.
    """
    from deployments.models import EndpointUsageMinute, VersionUsageMinute
    from deployments.passes import USAGE_FLUSH, recorded_pass

    cells, touched = counters.drain()
    if not cells and not touched:
        return 0
    by_endpoint: dict[tuple[int, datetime], _Cell] = {}
    for (_, endpoint_id, minute), cell in cells.items():
        total = by_endpoint.setdefault((endpoint_id, minute), _Cell(tenant_id=0))
        total.add(cell)
    try:
        with recorded_pass(USAGE_FLUSH) as record, transaction.atomic():
            _add_to_minute_rows(
                VersionUsageMinute,
                ("version_id", "endpoint_id", "minute"),
                cells,
                extra=lambda cell: {"tenant_id": cell.tenant_id},
            )
            _add_to_minute_rows(EndpointUsageMinute, ("endpoint_id", "minute"), by_endpoint)
            _stamp_last_use(touched)
            record.items = len(cells)
            record.summary = {"endpoint_minutes": len(by_endpoint), "placements": len(touched)}
    except Exception:
        counters.restore(cells)
        raise
    return len(cells)


def _add_to_minute_rows(model, key_fields: tuple[str, ...], cells: dict, *, extra=None) -> None:
    """Add ``cells`` (keyed like ``key_fields``) to ``model``'s rows, creating missing ones.

    Missing rows are inserted empty first (a row another process inserts at the same moment is
    left alone), then every row is read locked, in primary-key order so that concurrent flushes
    cannot deadlock, and written back with the sums: no count is lost between processes.
    """
    if not cells:
        return
    keys = sorted(cells)
    model.objects.bulk_create(
        [
            model(**dict(zip(key_fields, key, strict=True)), **(extra(cells[key]) if extra else {}))
            for key in keys
        ],
        ignore_conflicts=True,
        batch_size=FLUSH_BATCH_ROWS,
    )
    rows = []
    for start in range(0, len(keys), FLUSH_BATCH_ROWS):
        batch = keys[start : start + FLUSH_BATCH_ROWS]
        # Each column's set of values bounds the rows read; the exact keys are matched below.
        bounds = {
            f"{name}__in": {key[index] for key in batch} for index, name in enumerate(key_fields)
        }
        rows.extend(model.objects.select_for_update().filter(**bounds).order_by("pk"))
    wanted = set(keys)
    changed = []
    for row in rows:
        key = tuple(getattr(row, name) for name in key_fields)
        if key not in wanted:
            continue
        cell = cells[key]
        _add_counts(row, cell)
        histogram = dict(row.latency_histogram or {})
        for bucket, count in cell.histogram.items():
            histogram[bucket] = histogram.get(bucket, 0) + count
        row.latency_histogram = histogram
        changed.append(row)
    # Minutes without generated text (or without compared answers) leave those columns as they
    # are: fewer
    # parameters per row, so as many rows fit a statement as before those columns existed.
    generated = any(cells[key].generations for key in keys)
    compared = any(
        cells[key].mirrored or cells[key].mirror_dropped or cells[key].compared for key in keys
    )
    skipped = (*(() if generated else GENERATION_COUNTS), *(() if compared else COMPARISON_COUNTS))
    counts = tuple(c for c in COUNTS if c not in skipped)
    model.objects.bulk_update(
        changed, [*counts, "latency_ms_max", "latency_histogram"], batch_size=FLUSH_BATCH_ROWS
    )


def _stamp_last_use(touched: dict[int, datetime]) -> None:
    from deployments.models import Placement

    Placement.objects.bulk_update(
        [Placement(pk=pk, last_invoked_at=stamp) for pk, stamp in sorted(touched.items())],
        ["last_invoked_at"],
        batch_size=FLUSH_BATCH_ROWS,
    )


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


def generation_rates(
    *, generations: int, time_to_first_token_ms_sum: float, tokens: int, generation_ms_sum: float
) -> dict | None:
    """The mean time to first token (ms) and tokens a second of summed minute rows (None
    where nothing was generated)."""
    if not generations:
        return None
    return {
        "time_to_first_token_ms": time_to_first_token_ms_sum / generations,
        "tokens_per_s": tokens / (generation_ms_sum / 1000) if generation_ms_sum > 0 else None,
        "generations": generations,
    }


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
    "GenerationFigures",
    "UsageCounters",
    "ensure_background_flush",
    "flush_usage",
    "generation_rates",
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
