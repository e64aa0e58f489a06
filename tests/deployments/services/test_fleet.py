"""Deployment bookkeeping services: schedules, utilization samples, desired state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import PeriodicTask

from config.errors import DomainError
from deployments.models import (
    BackgroundPass,
    Event,
    FleetUsageMinute,
    InstanceUsageMinute,
    Placement,
)
from deployments.selectors.fleet import endpoints_with_cost, instances_with_memory_use
from deployments.services import fleet as services
from tests.factories import InstanceFactory, PlacementFactory

pytestmark = pytest.mark.django_db


def test_migrate_installs_the_declared_periodic_tasks(settings):
    names = {spec["name"] for spec in settings.TENANTML_PERIODIC_TASKS}
    installed = set(PeriodicTask.objects.values_list("name", flat=True))
    assert names <= installed


def test_syncing_schedules_never_overwrites_an_operators_edit():
    task = PeriodicTask.objects.get(name="Sample fleet utilization")
    task.enabled = False
    task.save()
    assert services.sync_periodic_tasks() == []
    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
    task.delete()
    assert services.sync_periodic_tasks() == ["Sample fleet utilization"]


def test_utilization_sample_sums_resident_placements_per_instance():
    instance = InstanceFactory(memory_budget_mb=1000)
    PlacementFactory(instance=instance, host_memory_mb=111)
    PlacementFactory(instance=instance, host_memory_mb=193, actual_state="loading")
    PlacementFactory(instance=instance, host_memory_mb=500, actual_state="evicted")
    now = datetime(2026, 11, 25, 12, 30, 42, tzinfo=UTC)
    assert services.sample_fleet_utilization(now=now) == 1
    row = InstanceUsageMinute.objects.get(instance=instance)
    assert row.minute == datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    assert (row.host_memory_used_mb, row.models_loaded) == (304, 2)
    # A second sample in the same minute updates the row instead of adding one.
    PlacementFactory(instance=instance, host_memory_mb=100)
    services.sample_fleet_utilization(now=now)
    assert InstanceUsageMinute.objects.get(instance=instance).host_memory_used_mb == 404


def test_a_placement_without_its_own_figure_uses_the_versions_measured_memory():
    placement = PlacementFactory(host_memory_mb=None, version__host_memory_mb=150)
    assert instances_with_memory_use().get(pk=placement.instance_id).memory_used_mb == 150


def test_an_instance_over_its_budget_raises_an_error_event():
    instance = InstanceFactory(memory_budget_mb=100)
    PlacementFactory(instance=instance, host_memory_mb=150)
    services.sample_fleet_utilization()
    event = Event.objects.get(kind="instance.over_budget")
    assert event.severity == "error" and event.instance == instance


def test_endpoint_cost_counts_live_instances_only():
    live = InstanceFactory()
    InstanceFactory(endpoint=live.endpoint, status="stopped")
    InstanceFactory(endpoint=live.endpoint)
    endpoint = endpoints_with_cost().get(pk=live.endpoint_id)
    assert endpoint.live_instances == 2
    assert endpoint.usd_per_hour == 2 * live.endpoint.instance_type.usd_per_hour


def test_pinning_a_placement_is_recorded_and_bad_states_are_refused():
    placement = PlacementFactory()
    services.set_placement_desired_state(placement=placement, desired_state="pinned", actor="t")
    assert Placement.objects.get(pk=placement.pk).is_pinned
    assert Event.objects.filter(kind="placement.desired_state_changed").count() == 1
    with pytest.raises(DomainError) as error:
        services.set_placement_desired_state(placement=placement, desired_state="hot", actor="t")
    assert error.value.field == "desired_state"


def test_the_sampler_writes_the_fleet_minute_the_trends_read():
    from deployments.selectors.costs import fleet_costs
    from deployments.selectors.fleet import fleet_utilization
    from tenants.access import Caller

    instance = InstanceFactory(memory_budget_mb=1000)
    PlacementFactory(instance=instance, host_memory_mb=250)
    PlacementFactory(instance=instance, host_memory_mb=50, desired_state="unloaded")
    InstanceFactory(endpoint=instance.endpoint, host="", memory_budget_mb=500)  # not measured
    now = datetime(2026, 11, 25, 12, 30, 42, tzinfo=UTC)

    assert services.sample_fleet_utilization(now=now) == 2

    row = FleetUsageMinute.objects.get()
    platform = Caller(label="t", is_platform=True, tenant_ids=frozenset())
    utilization = fleet_utilization(caller=platform)
    costs = fleet_costs(caller=platform)
    assert row.minute == datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    assert (row.instances, row.memory_measured_instances) == (2, 1)
    assert (row.host_memory_used_mb, row.host_memory_budget_mb) == (300, 1000)
    assert (row.models_loaded, row.models_placed) == (2, 1)
    assert row.host_memory_used_mb == utilization["host_memory_used_mb"]
    assert row.usd_per_hour == costs["usd_per_hour"] == 2 * 0.23
    assert row.dedicated_usd_per_hour == costs["dedicated_usd_per_hour"]
    record = BackgroundPass.objects.get(job="sample")
    assert record.items == 2 and record.succeeded and record.queries > 0


def test_the_sampler_makes_as_many_queries_for_many_instances_as_for_one():
    def queries_of_a_sample() -> int:
        with CaptureQueriesContext(connection) as queries:
            services.sample_fleet_utilization()
        return len(queries)

    PlacementFactory()
    queries_of_a_sample()  # the job's record is created once
    one = queries_of_a_sample()
    for _ in range(12):
        PlacementFactory(instance=InstanceFactory(memory_budget_mb=5000))

    assert queries_of_a_sample() == one
    assert InstanceUsageMinute.objects.values("minute").distinct().count() >= 1
