"""The fleet's figures, aggregated in the database, equal the same definitions applied row by row.

The reference below walks every placement, instance and usage row in Python, as the figures were
computed before they moved into SQL (docs/dashboard.md's definitions); a mixed fleet with
stopped instances, SageMaker hosts, GPU budgets, copies the endpoint places itself, memory
measured nowhere and traffic must give the same numbers to a platform caller and to tenants.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from deployments.exceptions import CapacityExceeded
from deployments.models import Instance, InstanceType, Placement, VersionUsageMinute
from deployments.placement.rows import instance_spec
from deployments.placement.solver import (
    DEDICATED_MODE,
    ModelSpec,
    PlacementPolicy,
    cheapest_fitting_type,
)
from deployments.selectors.costs import fleet_costs, tenant_costs
from deployments.selectors.fleet import fleet_utilization
from deployments.services.fleet import sample_fleet_utilization
from deployments.usage import percentile_from_histogram
from tenants.access import Caller
from tests.deployments.fleet_support import build_mixed_fleet

pytestmark = pytest.mark.django_db

PLATFORM = Caller(label="ops", is_platform=True, tenant_ids=frozenset())
RESIDENT = Placement.RESIDENT_STATES


def held(figure, fallback) -> float:
    for value in (figure, fallback):
        if value is not None:
            return float(value)
    return 0.0


def live(placement: Placement) -> bool:
    return placement.instance is None or placement.instance.status != Instance.Status.STOPPED


def reference_shares(caller: Caller) -> tuple[dict, dict]:
    """Each visible tenant's and version's share, holder by holder."""
    resident = [
        p
        for p in Placement.objects.select_related(
            "version__model__tenant", "instance", "endpoint__instance_type"
        )
        if p.actual_state in RESIDENT and live(p)
    ]
    holders: dict = {}
    for p in resident:
        key = ("instance", p.instance_id) if p.instance_id else ("endpoint", p.endpoint_id)
        holders.setdefault(key, []).append(p)
    tenants: dict = {}
    versions: dict = {}
    for (kind, _), copies in holders.items():
        price = float(copies[0].endpoint.instance_type.usd_per_hour)
        if kind == "endpoint":
            price *= copies[0].endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
        memory = [held(p.host_memory_mb, p.version.host_memory_mb) for p in copies]
        total = sum(memory)
        for p, mb in zip(copies, memory, strict=True):
            tenant = p.version.model.tenant
            if not caller.can_see(tenant.pk):
                continue
            share = price * mb / total if total > 0 else price / len(copies)
            t = tenants.setdefault(tenant.slug, [0.0, 0.0])
            t[0] += share
            t[1] += mb
            v = versions.setdefault((tenant.slug, p.version.model.name, p.version.number), [0, 0])
            v[0] += share
            v[1] += mb
    return tenants, versions


def reference_baseline(caller: Caller) -> tuple[float, int]:
    """One cheapest-fitting catalog instance per placed copy, at that copy's measured memory."""
    catalog = [instance_spec(t) for t in InstanceType.objects.filter(available=True)]
    policy = PlacementPolicy(mode=DEDICATED_MODE)
    total = 0.0
    versions = set()
    for p in Placement.objects.select_related("version__model"):
        if p.desired_state == Placement.DesiredState.UNLOADED:
            continue
        if not caller.can_see(p.version.model.tenant_id):
            continue
        versions.add(p.version_id)
        model = ModelSpec(
            key=str(p.pk),
            kind=p.version.model.kind,
            host_memory_mb=held(p.host_memory_mb, p.version.host_memory_mb),
            gpu_memory_mb=held(p.gpu_memory_mb, p.version.gpu_memory_mb),
        )
        try:
            price = cheapest_fitting_type(model, catalog, policy).usd_per_hour
        except CapacityExceeded:
            price = max(t.usd_per_hour for t in catalog)
        total += price * (p.copies or 1)
    return total, len(versions)


def reference_traffic(caller: Caller) -> dict:
    since = timezone.now() - timedelta(minutes=60)
    rows = [
        r
        for r in VersionUsageMinute.objects.filter(minute__gte=since)
        if caller.can_see(r.tenant_id)
    ]
    histogram: dict = {}
    for r in rows:
        for bucket, count in r.latency_histogram.items():
            histogram[bucket] = histogram.get(bucket, 0) + count
    p99 = percentile_from_histogram(histogram, 99)
    return {
        "invocations_last_hour": sum(r.invocations for r in rows),
        "cold_starts_last_hour": sum(r.cold_starts for r in rows),
        "errors_last_hour": sum(r.errors for r in rows),
        "p50_latency_ms_last_hour": percentile_from_histogram(histogram, 50),
        "p99_latency_ms_last_hour": 10000.0 if p99 == float("inf") else p99,
    }


def reference_fleet_memory() -> dict:
    """Memory over live instances the platform measures; cost over every live instance."""
    instances = list(
        Instance.objects.exclude(status=Instance.Status.STOPPED).select_related(
            "endpoint__instance_type"
        )
    )
    measured = [i for i in instances if i.host]
    host_used = gpu_used = host_budget = gpu_budget = 0.0
    for instance in measured:
        kind = instance.endpoint.instance_type
        target = float(instance.endpoint.target_memory_utilization)
        has_gpu = kind.gpu_count > 0 and kind.memory_per_gpu_mb > 0
        host_budget += kind.host_memory_mb * target if has_gpu else instance.memory_budget_mb
        gpu_budget += kind.gpu_count * kind.memory_per_gpu_mb * target if has_gpu else 0.0
        for p in instance.placements.select_related("version"):
            if p.actual_state in RESIDENT:
                host_used += held(p.host_memory_mb, p.version.host_memory_mb)
                gpu_used += held(p.gpu_memory_mb, p.version.gpu_memory_mb)
    return {
        "instances": len(instances),
        "memory_measured_instances": len(measured),
        "host_memory_used_mb": round(host_used, 1),
        "host_memory_budget_mb": round(host_budget, 1),
        "gpu_memory_used_mb": round(gpu_used, 1),
        "gpu_memory_budget_mb": round(gpu_budget, 1),
        "usd_per_hour": float(
            sum((i.endpoint.instance_type.usd_per_hour for i in instances), Decimal(0))
        ),
    }


@pytest.fixture
def mixed_fleet(db):
    return build_mixed_fleet(tenants=30)


@pytest.mark.parametrize("ranked_by", ["the request", "the minute sampler"])
def test_fleet_figures_equal_the_row_by_row_definitions(mixed_fleet, ranked_by):
    if ranked_by == "the minute sampler":
        sample_fleet_utilization()
    utilization = fleet_utilization(caller=PLATFORM)
    costs = fleet_costs(caller=PLATFORM)
    assert (costs["tenants_as_of"] is None) == (ranked_by == "the request")

    memory = reference_fleet_memory()
    for key in (
        "instances",
        "memory_measured_instances",
        "host_memory_used_mb",
        "host_memory_budget_mb",
        "gpu_memory_used_mb",
        "gpu_memory_budget_mb",
    ):
        assert utilization[key] == pytest.approx(memory[key]), key
    placements = list(Placement.objects.select_related("instance"))
    assert utilization["models_loaded"] == sum(
        1 for p in placements if p.actual_state in RESIDENT and live(p)
    )
    assert utilization["models_placed"] == sum(
        1 for p in placements if p.desired_state != Placement.DesiredState.UNLOADED
    )
    for key, value in reference_traffic(PLATFORM).items():
        assert utilization[key] == value, key
    assert utilization["invocations_last_hour"] > 0

    tenants, _ = reference_shares(PLATFORM)
    expected = sorted(
        ((slug, round(usd, 4), round(mb, 1)) for slug, (usd, mb) in tenants.items()),
        key=lambda row: (-row[1], row[0]),
    )
    assert costs["tenants_count"] == len(expected) > 10
    assert [(r["tenant"], r["usd_per_hour"], r["memory_mb"]) for r in costs["tenants"]] == (
        expected[:10]
    )
    assert costs["usd_per_hour"] == pytest.approx(memory["usd_per_hour"], abs=1e-4)
    attributed = sum(usd for usd, _ in tenants.values())
    assert costs["unattributed_usd_per_hour"] == pytest.approx(
        max(memory["usd_per_hour"] - attributed, 0), abs=1e-4
    )
    baseline, placed = reference_baseline(PLATFORM)
    assert costs["dedicated_usd_per_hour"] == pytest.approx(baseline, abs=1e-4)
    assert costs["placed_models"] == placed
    assert costs["savings"] == pytest.approx(round(1 - memory["usd_per_hour"] / baseline, 4))
    # Every page of the full list together is the reference, in its order.
    pages = [tenant_costs(caller=PLATFORM, limit=7, offset=o).rows for o in range(0, 35, 7)]
    assert [(r["tenant"], r["usd_per_hour"]) for page in pages for r in page] == [
        (slug, usd) for slug, usd, _ in expected
    ]


@pytest.mark.parametrize("picked", [(0,), (3, 4, 5)])
def test_a_tenants_figures_equal_its_rows_share(mixed_fleet, picked):
    tenant_ids = frozenset(mixed_fleet[i].pk for i in picked)
    caller = Caller(label="member", is_platform=False, tenant_ids=tenant_ids)

    utilization = fleet_utilization(caller=caller)
    costs = fleet_costs(caller=caller)

    tenants, versions = reference_shares(caller)
    assert costs["usd_per_hour"] == pytest.approx(sum(usd for usd, _ in tenants.values()), abs=1e-4)
    assert [(r["tenant"], r["model"], r["version"]) for r in costs["models"]] == sorted(versions)
    for row in costs["models"]:
        usd, mb = versions[(row["tenant"], row["model"], row["version"])]
        assert (row["usd_per_hour"], row["memory_mb"]) == (round(usd, 4), round(mb, 1))
    baseline, placed = reference_baseline(caller)
    assert costs["dedicated_usd_per_hour"] == pytest.approx(baseline, abs=1e-4)
    assert costs["placed_models"] == placed
    mine = [
        p
        for p in Placement.objects.select_related("version__model", "instance")
        if p.version.model.tenant_id in tenant_ids
    ]
    resident = [p for p in mine if p.actual_state in RESIDENT and live(p)]
    assert utilization["host_memory_used_mb"] == pytest.approx(
        round(sum(held(p.host_memory_mb, p.version.host_memory_mb) for p in resident), 1)
    )
    assert utilization["models_loaded"] == len(resident)
    on_endpoints = {p.endpoint_id for p in resident if p.instance_id is None}
    holding = {p.instance_id for p in resident if p.instance_id} | set(
        Instance.objects.exclude(status=Instance.Status.STOPPED)
        .filter(endpoint_id__in=on_endpoints)
        .values_list("pk", flat=True)
    )
    assert utilization["instances"] == len(holding)
    for key, value in reference_traffic(caller).items():
        assert utilization[key] == value, key
    assert utilization["host_memory_budget_mb"] is None


def test_the_sampler_keeps_the_ranking_and_a_stale_one_is_not_shown(fleet):
    from datetime import timedelta

    from deployments.models import BackgroundPass, TenantCost

    ranked = fleet_costs(caller=PLATFORM)  # the fixture's sampler ran a moment ago
    assert ranked["tenants_as_of"] is not None
    assert dict(TenantCost.objects.values_list("slug", "memory_mb")) == {
        "acme": 111.0,
        "globex": 222.0,
    }
    Placement.objects.filter(pk=fleet.globex_placement.pk).update(actual_state="evicted")
    assert fleet_costs(caller=PLATFORM)["tenants"] == ranked["tenants"]  # until the next pass

    sample_fleet_utilization()

    assert list(TenantCost.objects.values_list("slug", "usd_per_hour")) == [("acme", 0.23)]
    assert [r["tenant"] for r in fleet_costs(caller=PLATFORM)["tenants"]] == ["acme"]
    Placement.objects.filter(pk=fleet.globex_placement.pk).update(actual_state="loaded")
    BackgroundPass.objects.filter(job="sample").update(
        finished_at=timezone.now() - timedelta(minutes=4)
    )
    live = fleet_costs(caller=PLATFORM)  # the sampler stopped: shares are computed for the answer
    assert live["tenants_as_of"] is None
    assert [r["tenant"] for r in live["tenants"]] == ["globex", "acme"]
