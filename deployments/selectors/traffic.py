"""Reads of traffic: last hour's invocations, cold starts, errors and latency, and the trends.

The fleet's and an endpoint's figures come from ``EndpointUsageMinute`` (one row per endpoint and
minute, kept by the usage flush) and the memory and cost trends from ``FleetUsageMinute`` (one
row a minute, kept by the minute sampler), so a page reads rows per minute, not per model. Only a
tenant's own figures read its ``VersionUsageMinute`` rows, which are few.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from deployments.models import Endpoint, EndpointUsageMinute, FleetUsageMinute, VersionUsageMinute
from deployments.usage import LATENCY_BUCKETS_MS, percentile_from_histogram
from tenants.access import Caller

TRAFFIC_WINDOW_MINUTES = 60


def traffic_summary(*, caller: Caller, since: datetime, endpoint: Endpoint | None = None) -> dict:
    """Invocations, cold starts, errors and p50/p99 latency since ``since`` (summed histograms).

    A platform caller reads the per-endpoint rows (of ``endpoint``, or of the whole fleet); any
    other caller the rows of its tenants' versions (on ``endpoint`` only, when given).
    """
    if caller.is_platform:
        rows = EndpointUsageMinute.objects.filter(minute__gte=since)
    else:
        rows = VersionUsageMinute.objects.filter(minute__gte=since, tenant_id__in=caller.tenant_ids)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    invocations = cold_starts = errors = 0
    histogram: dict[str, int] = {}
    for row in rows.values_list("invocations", "cold_starts", "errors", "latency_histogram"):
        invocations += row[0]
        cold_starts += row[1]
        errors += row[2]
        for bucket, count in (row[3] or {}).items():
            histogram[bucket] = histogram.get(bucket, 0) + int(count)
    slowest_bound = float(LATENCY_BUCKETS_MS[-1])

    def bounded(pct: float) -> float | None:
        value = percentile_from_histogram(histogram, pct)
        # JSON has no infinity: the slowest bucket is reported as its lower bound, flagged.
        return slowest_bound if value == float("inf") else value

    p99 = percentile_from_histogram(histogram, 99)
    return {
        "invocations": invocations,
        "invocations_per_minute": round(invocations / TRAFFIC_WINDOW_MINUTES, 2),
        "cold_starts": cold_starts,
        "errors": errors,
        "p50_latency_ms": bounded(50),
        "p99_latency_ms": bounded(99),
        "p99_latency_above_slowest_bucket": p99 == float("inf"),
    }


def fleet_trends(*, caller: Caller, hours: int = 6, bucket_minutes: int = 5, now=None) -> dict:
    """Series for the trend charts: ``[(bucket start, value)]`` per figure over ``hours``.

    Invocations per minute follow the caller's scope; memory utilization and cost per hour are
    fleet-wide and only returned to platform callers. Cost counts every sampled instance (SageMaker
    hosts too); memory utilization only those whose memory is measured.
    """
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    bucket = timedelta(minutes=bucket_minutes)
    starts = []
    cursor = start
    while cursor <= end:
        starts.append(cursor)
        cursor += bucket

    def index(minute) -> int:
        return min(int((minute - start) / bucket), len(starts) - 1)

    if caller.is_platform:
        rows = EndpointUsageMinute.objects.all()
    else:
        rows = VersionUsageMinute.objects.filter(tenant_id__in=caller.tenant_ids)
    invocations = [0.0] * len(starts)
    cold_starts = [0.0] * len(starts)
    for minute, count, cold in (
        rows.filter(minute__gte=start, minute__lte=end)
        .values("minute")
        .annotate(n=Sum("invocations"), c=Sum("cold_starts"))
        .values_list("minute", "n", "c")
    ):
        invocations[index(minute)] += count or 0
        cold_starts[index(minute)] += cold or 0
    trends: dict = {
        "hours": hours,
        "bucket_minutes": bucket_minutes,
        "invocations_per_minute": [
            (s, v / bucket_minutes) for s, v in zip(starts, invocations, strict=True)
        ],
        "cold_starts": list(zip(starts, cold_starts, strict=True)),
    }
    if not caller.is_platform:
        return trends
    used = [0.0] * len(starts)
    budget = [0.0] * len(starts)
    cost = [0.0] * len(starts)
    sampled = [0] * len(starts)
    for minute, minute_used, minute_budget, minute_cost in FleetUsageMinute.objects.filter(
        minute__gte=start, minute__lte=end
    ).values_list("minute", "host_memory_used_mb", "host_memory_budget_mb", "usd_per_hour"):
        i = index(minute)
        used[i] += minute_used
        budget[i] += minute_budget
        cost[i] += minute_cost
        sampled[i] += 1
    trends["memory_utilization_pct"] = [
        (s, (u / b * 100) if b else None) for s, u, b in zip(starts, used, budget, strict=True)
    ]
    trends["usd_per_hour"] = [
        (s, (c / n) if n else None) for s, c, n in zip(starts, cost, sampled, strict=True)
    ]
    return trends


def active_hours_by_version(*, since: datetime) -> dict[int, set[int]]:
    """For each version with traffic since ``since``, the UTC hours (numbered from the epoch) in
    which it served at least one request, on any endpoint: one grouped query."""
    rows = (
        VersionUsageMinute.objects.filter(minute__gte=since, invocations__gt=0)
        .annotate(hour=TruncHour("minute", tzinfo=UTC))
        .values_list("version_id", "hour")
        .distinct()
        .order_by()
    )
    hours: dict[int, set[int]] = {}
    for version_id, hour in rows:
        hours.setdefault(version_id, set()).add(int(hour.timestamp() // 3600))
    return hours
