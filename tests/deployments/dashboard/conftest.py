"""Dashboard fixtures: a staff user, a tenant member, and a small fleet with traffic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import Placement
from deployments.services.fleet import sample_fleet_utilization
from deployments.usage import UsageCounters, flush_usage
from tenants.models import Membership, Tenant
from tests.factories import (
    EndpointFactory,
    EventFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
    UserFactory,
)

PASSWORD = "correct horse battery staple"


@dataclass
class Fleet:
    acme: Tenant
    globex: Tenant
    endpoint: object
    instance: object
    acme_model: object
    acme_v1: object
    acme_placement: Placement
    globex_placement: Placement


def record_requests(counters, placement, minute, latency_ms, count, *, cold=0) -> None:
    """Count ``count`` warm requests and ``cold`` cold starts of ``latency_ms`` in ``minute``."""
    for index in range(count + cold):
        counters.record(
            version_id=placement.version_id,
            endpoint_id=placement.endpoint_id,
            tenant_id=placement.version.model.tenant_id,
            latency_ms=latency_ms,
            cold_start=index < cold,
            placement_id=placement.pk,
            now=minute + timedelta(seconds=1),
        )


@pytest.fixture
def staff_user(db):
    return UserFactory(username="operator", is_staff=True)


@pytest.fixture
def fleet(db) -> Fleet:
    """Two tenants' models (111 MB and 222 MB) on one local instance (0.23 USD/h), with traffic."""
    acme = TenantFactory(slug="acme", tier=Tenant.Tier.PREMIUM)
    globex = TenantFactory(slug="globex")
    endpoint = EndpointFactory(name="local-intent-classifier")
    instance = InstanceFactory(endpoint=endpoint, ordinal=0, memory_budget_mb=13107)
    acme_model = TenantModelFactory(tenant=acme, name="intents")
    acme_v1 = ModelVersionFactory(
        model=acme_model,
        number=1,
        package_uri="/tmp/acme-intents-v1.tar.gz",
        metrics={"macro_f1": 0.91},
    )
    globex_model = TenantModelFactory(tenant=globex, name="routing")
    globex_v1 = ModelVersionFactory(
        model=globex_model, number=1, host_memory_mb=222.0, package_uri="/tmp/g.tar.gz"
    )
    now = timezone.now()
    acme_placement = PlacementFactory(
        version=acme_v1,
        instance=instance,
        desired_state=Placement.DesiredState.PINNED,
        host_memory_mb=111.0,
        load_time_ms=2100.0,
        last_invoked_at=now - timedelta(minutes=1),
    )
    globex_placement = PlacementFactory(
        version=globex_v1,
        instance=instance,
        host_memory_mb=222.0,
        load_time_ms=2300.0,
        last_invoked_at=now - timedelta(minutes=5),
    )
    minute = now.replace(second=0, microsecond=0)
    # Traffic as serving records it: counted in memory, then flushed into the minute rows.
    counters = UsageCounters()
    two_ago, three_ago = minute - timedelta(minutes=2), minute - timedelta(minutes=3)
    record_requests(counters, acme_placement, two_ago, 10.0, 80)
    record_requests(counters, acme_placement, two_ago, 25.0, 9)
    record_requests(counters, acme_placement, two_ago, 2500.0, 0, cold=1)
    record_requests(counters, globex_placement, three_ago, 5.0, 28, cold=2)
    # Outside the hour: not counted in the last-hour figures.
    record_requests(counters, acme_placement, minute - timedelta(minutes=90), 5000.0, 950, cold=50)
    flush_usage(counters=counters)
    # The flush stamped each placement's last use; put back the fixture's own.
    for placement, ago in ((acme_placement, 1), (globex_placement, 5)):
        Placement.objects.filter(pk=placement.pk).update(
            last_invoked_at=now - timedelta(minutes=ago)
        )
    # The minute sampler's rows for the last half hour.
    for back in range(0, 30, 5):
        sample_fleet_utilization(now=minute - timedelta(minutes=back))
    EventFactory(kind="deployment.requested", tenant=acme, message="acme deploy")
    EventFactory(
        kind="placement.evicted", severity="warning", tenant=globex, message="globex evict"
    )
    EventFactory(kind="reconciler.repaired", severity="error", message="fleet repair")
    return Fleet(
        acme=acme,
        globex=globex,
        endpoint=endpoint,
        instance=instance,
        acme_model=acme_model,
        acme_v1=acme_v1,
        acme_placement=acme_placement,
        globex_placement=globex_placement,
    )


@pytest.fixture
def member_user(fleet):
    user = UserFactory(username="acme-engineer")
    Membership.objects.create(user=user, tenant=fleet.acme)
    return user


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def member_client(client, member_user):
    client.force_login(member_user)
    return client


HTMX = {"HTTP_HX_REQUEST": "true"}


def htmx(target: str | None = None) -> dict:
    """Headers htmx sends (``HX-Target`` is the id of the element being swapped)."""
    headers = dict(HTMX)
    if target:
        headers["HTTP_HX_TARGET"] = target
    return headers
