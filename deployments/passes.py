"""The record of each periodic job's last pass: how long it took, what it went over, how many
queries it made, whether it failed.

The reconciler, the warm-up, the minute sampler and the usage flush each run inside
``recorded_pass(job)``; the one ``BackgroundPass`` row per job is overwritten at the end of every
pass (an operator reads it in the admin, Prometheus in ``/metrics``). Like ``deployments.usage``
it sits beside the layers: every layer's periodic work records through it, and it imports only
the models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)

RECONCILE = "reconcile"
WARM_UP = "warm-up"
SAMPLE = "sample"
USAGE_FLUSH = "usage-flush"
CLOUD_METRICS = "cloud-metrics"
CAPTURE_RETENTION = "capture-retention"
REBALANCE = "rebalance"


@dataclass
class PassRecord:
    """What a pass tells its record as it goes (``items`` handled, ``errors``, a summary)."""

    job: str
    items: int = 0
    errors: int = 0
    summary: dict = field(default_factory=dict)
    queries: int = 0


class _QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def recorded_pass(job: str) -> Iterator[PassRecord]:
    """Time the block as one pass of ``job`` and count the queries this thread makes in it; the
    job's ``BackgroundPass`` row is written when it ends, failed or not (a failure to write it is
    logged, never raised over the pass's own outcome)."""
    record = PassRecord(job=job)
    counter = _QueryCounter()
    started_at = timezone.now()
    started = time.perf_counter()
    succeeded = False
    try:
        with connection.execute_wrapper(counter):
            yield record
        succeeded = True
    finally:
        record.queries = counter.count
        try:
            _write(
                record, started_at=started_at, seconds=time.perf_counter() - started, ok=succeeded
            )
        except Exception:  # the pass's outcome matters more than its record
            logger.exception("Recording the %s pass failed.", job)


def _write(record: PassRecord, *, started_at, seconds: float, ok: bool) -> None:
    from deployments.models import BackgroundPass

    values = {
        "started_at": started_at,
        "finished_at": timezone.now(),
        "duration_s": round(seconds, 6),
        "items": record.items,
        "queries": record.queries,
        "errors": record.errors + (0 if ok else 1),
        "succeeded": ok,
        "summary": record.summary,
    }
    # A failed pass may have left its connection in a broken transaction; the record is its own.
    if connection.needs_rollback:
        return
    with transaction.atomic():
        updated = BackgroundPass.objects.filter(job=record.job).update(
            passes=F("passes") + 1, **values
        )
        if not updated:
            BackgroundPass.objects.get_or_create(job=record.job, defaults={**values, "passes": 1})
