"""Upgrading keeps the traffic and utilization history the figures and trends read."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("deployments", "0005_placement_evicting")]
AFTER = [("deployments", "0006_usage_rollups_and_background_passes")]


@pytest.mark.django_db(transaction=True)
def test_the_rollups_are_backfilled_from_the_last_days_minutes():
    executor = MigrationExecutor(connection)
    # The other apps stay at their newest migrations, as on an installation being upgraded.
    others = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "deployments"]
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE + others).apps
    tenant = old.get_model("tenants", "Tenant").objects.create(slug="acme", name="Acme")
    model = old.get_model("models_registry", "TenantModel").objects.create(
        tenant=tenant, name="intents", kind="intent-classifier"
    )
    Version = old.get_model("models_registry", "ModelVersion")
    first = Version.objects.create(model=model, number=1, status="ready")
    second = Version.objects.create(model=model, number=2, status="ready")
    local = old.get_model("deployments", "InstanceType").objects.get(name="local")
    endpoint = old.get_model("deployments", "Endpoint").objects.create(
        name="local-intent-classifier", instance_type=local, status="in_service"
    )
    Instance = old.get_model("deployments", "Instance")
    measured = Instance.objects.create(
        endpoint=endpoint, ordinal=0, host="127.0.0.1", memory_budget_mb=1000
    )
    mirrored = Instance.objects.create(endpoint=endpoint, ordinal=1, memory_budget_mb=500)
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=5)
    usage = old.get_model("deployments", "VersionUsageMinute").objects
    for version, invocations, histogram in ((first, 3, {"5": 3}), (second, 2, {"5": 1, "25": 1})):
        usage.create(
            version=version,
            endpoint=endpoint,
            tenant=tenant,
            minute=minute,
            invocations=invocations,
            cold_starts=1,
            latency_ms_max=20.0 * invocations,
            latency_histogram=histogram,
        )
    usage.create(  # older than a day: left out
        version=first, endpoint=endpoint, tenant=tenant, minute=minute - timedelta(days=2)
    )
    samples = old.get_model("deployments", "InstanceUsageMinute").objects
    samples.create(instance=measured, minute=minute, host_memory_used_mb=300, models_loaded=2)
    samples.create(instance=mirrored, minute=minute, models_loaded=1)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER + others).apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # the tests after this one need them

    rollup = new.get_model("deployments", "EndpointUsageMinute").objects.get()
    assert (rollup.minute, rollup.invocations, rollup.cold_starts) == (minute, 5, 2)
    assert rollup.latency_ms_max == 60.0
    assert rollup.latency_histogram == {"5": 4, "25": 1}
    fleet = new.get_model("deployments", "FleetUsageMinute").objects.get()
    assert (fleet.instances, fleet.memory_measured_instances, fleet.models_loaded) == (2, 1, 3)
    assert (fleet.host_memory_used_mb, fleet.host_memory_budget_mb) == (300, 1000)
    assert fleet.usd_per_hour == pytest.approx(2 * float(local.usd_per_hour))
