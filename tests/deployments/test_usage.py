"""Serving counters: counted in memory per request, flushed into minute rows without loss."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.models import BackgroundPass, EndpointUsageMinute, VersionUsageMinute
from deployments.usage import UsageCounters, flush_usage, percentile_from_histogram
from tests.factories import PlacementFactory

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)


def record(counters, placement, latency_ms, *, cold=False, error=False, now=NOON):
    counters.record(
        version_id=placement.version_id,
        endpoint_id=placement.endpoint_id,
        tenant_id=placement.version.model.tenant_id,
        latency_ms=latency_ms,
        cold_start=cold,
        error=error,
        placement_id=placement.pk,
        now=now,
    )


def test_flush_adds_counts_to_the_minute_row_and_stamps_last_use():
    placement = PlacementFactory()
    counters = UsageCounters()
    record(counters, placement, 1200.0, cold=True)
    for _ in range(8):
        record(counters, placement, 8.0)
    record(counters, placement, 30.0, error=True)

    assert flush_usage(counters=counters) == 1

    row = VersionUsageMinute.objects.get(version=placement.version)
    assert row.minute == NOON.replace(second=0)
    assert (row.invocations, row.cold_starts, row.cache_hits, row.errors) == (10, 1, 8, 1)
    assert row.latency_ms_max == 1200.0
    assert row.tenant_id == placement.version.model.tenant_id
    assert percentile_from_histogram(row.latency_histogram, 50) == 10.0
    assert percentile_from_histogram(row.latency_histogram, 99) == 2500.0
    placement.refresh_from_db()
    assert placement.last_invoked_at == NOON


def test_two_flushes_into_the_same_minute_accumulate():
    placement = PlacementFactory()
    first, second = UsageCounters(), UsageCounters()  # two web processes
    record(first, placement, 5.0)
    record(second, placement, 7.0)
    record(second, placement, 9.0)

    flush_usage(counters=first)
    flush_usage(counters=second)

    row = VersionUsageMinute.objects.get(version=placement.version)
    assert row.invocations == 3
    assert row.latency_ms_sum == pytest.approx(21.0)
    assert sum(row.latency_histogram.values()) == 3


def test_nothing_counted_writes_nothing():
    assert flush_usage(counters=UsageCounters()) == 0
    assert not VersionUsageMinute.objects.exists()


@pytest.mark.django_db(transaction=True)  # foreign keys are checked when the flush commits
def test_a_failed_flush_keeps_the_counts_for_the_next_one():
    placement = PlacementFactory()
    counters = UsageCounters()
    record(counters, placement, 5.0)
    counters.record(  # a version that no longer exists makes the write fail
        version_id=10**9,
        endpoint_id=placement.endpoint_id,
        tenant_id=placement.version.model.tenant_id,
        latency_ms=5.0,
        cold_start=False,
        now=NOON,
    )

    with pytest.raises(Exception):  # noqa: B017 - the database's integrity error, any driver
        flush_usage(counters=counters)

    cells, _ = counters.drain()
    assert sum(cell.invocations for cell in cells.values()) == 2


def test_each_endpoint_minute_is_the_sum_of_its_version_minutes():
    first, second = PlacementFactory(), PlacementFactory()
    other = PlacementFactory(instance__endpoint=first.endpoint)  # a second model, same endpoint
    process_a, process_b = UsageCounters(), UsageCounters()
    record(process_a, first, 4.0)
    record(process_a, other, 40.0, cold=True)
    record(process_b, first, 4.0, error=True)
    record(process_b, second, 700.0)
    record(process_b, first, 12.0, now=NOON.replace(minute=1))

    flush_usage(counters=process_a)
    flush_usage(counters=process_b)

    rows = EndpointUsageMinute.objects.order_by("endpoint_id", "minute")
    assert rows.count() == 3
    for row in rows:
        versions = VersionUsageMinute.objects.filter(endpoint=row.endpoint, minute=row.minute)
        assert row.invocations == sum(v.invocations for v in versions)
        assert row.errors == sum(v.errors for v in versions)
        assert row.cold_starts == sum(v.cold_starts for v in versions)
        assert row.latency_ms_max == max(v.latency_ms_max for v in versions)
        merged: dict = {}
        for version in versions:
            for bucket, count in version.latency_histogram.items():
                merged[bucket] = merged.get(bucket, 0) + count
        assert row.latency_histogram == merged
    noon = rows.get(endpoint=first.endpoint, minute=NOON.replace(second=0))
    assert (noon.invocations, noon.errors, noon.cold_starts) == (3, 1, 1)


def test_a_flush_makes_as_many_queries_for_many_models_as_for_two():
    def flush_of(placements) -> int:
        counters = UsageCounters()
        for placement in placements:
            record(counters, placement, 5.0)
            record(counters, placement, 9.0, now=NOON.replace(minute=1))
        with CaptureQueriesContext(connection) as queries:
            flush_usage(counters=counters)
        return len(queries)

    # SQLite caps a statement's parameters (999), so Django cuts its batches smaller there: 50
    # rows of a version minute's 19 columns fit one statement.
    many = 300 if connection.vendor == "postgresql" else 25
    flush_of([PlacementFactory()])  # the flush's record is created once
    two = flush_of([PlacementFactory() for _ in range(2)])
    more = flush_of([PlacementFactory() for _ in range(many)])

    assert more == two
    assert VersionUsageMinute.objects.count() == 2 * (1 + 2 + many)
    assert BackgroundPass.objects.get(job="usage-flush").items == 2 * many
