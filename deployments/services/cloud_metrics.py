"""The CloudWatch pass: every minute, each live endpoint's cloud metrics into the time series.

The pass asks each backend for its live endpoints' per-minute cloud figures (SageMaker's read
from CloudWatch with GetMetricData; the local backend has none: the platform measures its own
instances) and upserts them as ``CloudMetricMinute`` rows beside the platform's own minute
rows, one per endpoint, component, metric, statistic and minute. Each pass re-reads the last
``CLOUD_METRICS_LOOKBACK_MINUTES`` (and, after an outage, back to where the last pass stopped,
at most ``MAX_CATCH_UP``), so datapoints CloudWatch publishes late overwrite what was read
before. Rows older than ``CLOUD_METRICS_RETENTION_DAYS`` are deleted. One endpoint's AWS error
is counted and named in the pass's ``BackgroundPass`` row (``cloud-metrics``); the others' figures
are written all the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from config.errors import DomainError
from deployments.backends import backend_named
from deployments.backends.base import CloudMetricPoint, CloudMetrics
from deployments.models import BackgroundPass, CloudMetricMinute, Endpoint
from deployments.passes import CLOUD_METRICS, recorded_pass

logger = logging.getLogger(__name__)

# How far back a pass reaches to fill the minutes an outage of the workers left unread.
MAX_CATCH_UP = timedelta(hours=3)
WRITE_BATCH = 2000
# Errors named in the pass's summary (the count is always whole).
ERRORS_NAMED = 20


@dataclass(frozen=True)
class CloudMetricsPass:
    """What one pass read and wrote."""

    endpoints: int
    points: int
    calls: int
    pruned: int
    read_from: datetime
    read_to: datetime
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "endpoints": self.endpoints,
            "points": self.points,
            "calls": self.calls,
            "pruned": self.pruned,
            "read_from": self.read_from.isoformat(),
            "read_to": self.read_to.isoformat(),
            "errors": dict(self.errors),
        }


def _last_read_to() -> datetime | None:
    summary = (
        BackgroundPass.objects.filter(job=CLOUD_METRICS).values_list("summary", flat=True).first()
    )
    value = (summary or {}).get("read_to")
    return parse_datetime(value) if isinstance(value, str) else None


def _window(*, end: datetime, last_read_to: datetime | None) -> datetime:
    lookback = timedelta(minutes=settings.TENANTML_CLOUD_METRICS_LOOKBACK_MINUTES)
    start = end - lookback
    if last_read_to is not None and last_read_to - lookback < start:
        start = max(last_read_to - lookback, end - MAX_CATCH_UP)
    return start


def _unique(points: list[CloudMetricPoint]) -> list[CloudMetricPoint]:
    # One row per key in a statement: an upsert may not touch the same row twice.
    by_key = {(p.endpoint_id, p.component, p.metric, p.statistic, p.minute): p for p in points}
    return list(by_key.values())


def read_cloud_metrics(*, now: datetime | None = None) -> CloudMetricsPass:
    """Read every live endpoint's recent cloud metrics into ``CloudMetricMinute`` (upserted),
    then delete the rows past retention."""
    end = (now or timezone.now()).replace(second=0, microsecond=0)
    with recorded_pass(CLOUD_METRICS) as record:
        last_read_to = _last_read_to()
        # A pass that fails still says how far its predecessors read.
        record.summary = {"read_to": last_read_to.isoformat()} if last_read_to else {}
        start = _window(end=end, last_read_to=last_read_to)
        endpoints = list(
            Endpoint.objects.exclude(status=Endpoint.Status.RETIRED)
            .select_related("instance_type")
            .order_by("pk")
        )
        by_backend: dict[str, list[Endpoint]] = {}
        for endpoint in endpoints:
            by_backend.setdefault(endpoint.backend, []).append(endpoint)
        read = CloudMetrics()
        for name, group in sorted(by_backend.items()):
            try:
                answer = backend_named(name).cloud_metrics(endpoints=group, start=start, end=end)
            except DomainError as exc:
                answer = CloudMetrics(errors=dict.fromkeys((e.pk for e in group), exc.message))
            read.points += answer.points
            read.errors.update(answer.errors)
            read.calls += answer.calls
        points = _unique(read.points)
        cutoff = end - timedelta(days=settings.TENANTML_CLOUD_METRICS_RETENTION_DAYS)
        with transaction.atomic():
            CloudMetricMinute.objects.bulk_create(
                [
                    CloudMetricMinute(
                        endpoint_id=p.endpoint_id,
                        component=p.component,
                        metric=p.metric,
                        statistic=p.statistic,
                        minute=p.minute,
                        value=p.value,
                        unit=p.unit,
                    )
                    for p in points
                    if p.minute >= cutoff
                ],
                update_conflicts=True,
                unique_fields=["endpoint", "component", "metric", "statistic", "minute"],
                update_fields=["value", "unit"],
                batch_size=WRITE_BATCH,
            )
            pruned, _ = CloudMetricMinute.objects.filter(minute__lt=cutoff).delete()
        names = {e.pk: e.name for e in endpoints}
        errors = {names.get(pk, str(pk)): why for pk, why in sorted(read.errors.items())}
        for name, why in errors.items():
            logger.warning("CloudWatch figures of %s were not read: %s", name, why)
        result = CloudMetricsPass(
            endpoints=len(endpoints),
            points=len(points),
            calls=read.calls,
            pruned=pruned,
            read_from=start,
            read_to=end,
            errors=errors,
        )
        record.items = len(endpoints)
        record.errors = len(errors)
        record.summary = {
            **result.as_dict(),
            "errors": dict(list(errors.items())[:ERRORS_NAMED]),
        }
    return result
