"""The control-plane benchmark's fleet (``bench/control_plane.py``) has the platform's shapes.

A small fleet (300 models, instances of 100, two instances per endpoint) seeded into the test
database, checked the way the benchmark relies on: one live deployment and one resident placement
per model, instances within their size and budget, a tenth of the models with an hour of traffic,
and endpoint rollups that are the sums of their version rows.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from django.db.models import Count, F, Q, Sum

from bench.control_plane import SeededFleet, seed_fleet
from deployments.models import (
    Deployment,
    Endpoint,
    EndpointUsageMinute,
    Event,
    FleetUsageMinute,
    Instance,
    InstanceUsageMinute,
    Placement,
    VersionUsageMinute,
)
from deployments.usage import LATENCY_BUCKETS_MS
from models_registry.models import ModelVersion, TenantModel
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

MODELS = 300
PER_INSTANCE = 100


@pytest.fixture
def fleet() -> SeededFleet:
    return seed_fleet(
        models=MODELS,
        models_per_instance=(PER_INSTANCE, PER_INSTANCE),
        instances_per_endpoint=2,
    )


def test_every_model_is_live_on_one_loaded_placement(fleet):
    assert TenantModel.objects.count() == MODELS
    assert TenantModel.objects.filter(active_version__status=ModelVersion.Status.READY).count() == (
        MODELS
    )
    live = Deployment.objects.filter(
        status=Deployment.Status.LIVE, live_version=F("model__active_version")
    )
    assert live.count() == MODELS
    assert not live.filter(endpoint__isnull=True).exists()
    per_version = ModelVersion.objects.annotate(
        resident=Count("placements", filter=Q(placements__actual_state="loaded"))
    )
    assert sorted({v.resident for v in per_version}) == [1]
    assert Placement.objects.filter(actual_state=Placement.ActualState.LOADED).count() == MODELS
    # Premium tenants' models are pinned, everyone else's evictable.
    for placement in Placement.objects.select_related("version__model__tenant"):
        tenant = placement.version.model.tenant
        assert placement.is_pinned == tenant.models_pinned
        assert placement.host_memory_mb == placement.version.host_memory_mb
        assert 90 <= placement.host_memory_mb <= 140
    premium = Tenant.objects.filter(tier=Tenant.Tier.PREMIUM).count()
    assert 0 < premium <= MODELS // 10  # a few percent
    assert Event.objects.count() >= 3 * MODELS


def test_instances_hold_their_share_of_models_within_budget(fleet):
    instances = Instance.objects.annotate(
        models=Count("placements"), held_mb=Sum("placements__host_memory_mb")
    )
    assert instances.count() == fleet.instances == MODELS // PER_INSTANCE
    assert Endpoint.objects.filter(status=Endpoint.Status.IN_SERVICE).count() == 2
    for instance in instances:
        assert instance.status == Instance.Status.HEALTHY
        assert instance.models == PER_INSTANCE
        assert instance.held_mb <= instance.memory_budget_mb
        assert instance.port and instance.metrics_port and instance.host == "127.0.0.1"
        # What the Triton stand-in will list on the port is what the placements say.
        names = {
            p.version.triton_model_name
            for p in instance.placements.select_related("version__model__tenant")
        }
        assert {m["modelName"] for m in fleet.loaded_by_port[instance.port]} == names
    busiest = Endpoint.objects.get(name=fleet.busiest_endpoint)
    assert Placement.objects.filter(endpoint=busiest).count() == max(fleet.endpoints.values())


def test_a_tenth_of_the_models_have_an_hour_of_traffic(fleet):
    per_version = VersionUsageMinute.objects.values("version").annotate(
        minutes=Count("minute", distinct=True), rows=Count("id")
    )
    assert len(per_version) == MODELS // 10
    assert {(row["minutes"], row["rows"]) for row in per_version} == {(60, 60)}
    bounds = {str(b) for b in LATENCY_BUCKETS_MS} | {"inf"}
    for row in VersionUsageMinute.objects.select_related("version__model"):
        assert row.tenant_id == row.version.model.tenant_id
        assert set(row.latency_histogram) <= bounds
        assert sum(row.latency_histogram.values()) == row.invocations > 0
        assert row.cache_hits == row.invocations - row.cold_starts - row.errors
    assert Tenant.objects.get(slug=fleet.tenant_with_traffic).usage.exists()
    assert FleetUsageMinute.objects.count() == 6 * 60
    assert InstanceUsageMinute.objects.count() == fleet.instances * 60


def test_endpoint_rollups_are_the_sums_of_their_version_rows(fleet):
    expected: dict[tuple, dict] = {}
    for row in VersionUsageMinute.objects.all():
        total = expected.setdefault(
            (row.endpoint_id, row.minute),
            {"invocations": 0, "errors": 0, "cold_starts": 0, "cache_hits": 0, "sum": 0.0},
        )
        for key in ("invocations", "errors", "cold_starts", "cache_hits"):
            total[key] += getattr(row, key)
        total["sum"] += row.latency_ms_sum
        total["max"] = max(total.get("max", 0.0), row.latency_ms_max)
        histogram = total.setdefault("histogram", defaultdict(int))
        for bucket, count in row.latency_histogram.items():
            histogram[bucket] += count
    rollups = list(EndpointUsageMinute.objects.all())
    assert len(rollups) == len(expected) > 0
    for rollup in rollups:
        total = expected[(rollup.endpoint_id, rollup.minute)]
        assert (rollup.invocations, rollup.errors, rollup.cold_starts, rollup.cache_hits) == (
            total["invocations"],
            total["errors"],
            total["cold_starts"],
            total["cache_hits"],
        )
        assert rollup.latency_ms_sum == pytest.approx(total["sum"])
        assert rollup.latency_ms_max == total["max"]
        assert rollup.latency_histogram == dict(total["histogram"])
    fleet_minute = FleetUsageMinute.objects.first()
    assert fleet_minute.models_loaded == fleet_minute.models_placed == MODELS
    assert fleet_minute.instances == fleet.instances
