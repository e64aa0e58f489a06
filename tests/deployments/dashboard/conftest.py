"""Dashboard fixtures: a staff user, a tenant member, and a small fleet with traffic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import InstanceUsageMinute, Placement, VersionUsageMinute
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
    VersionUsageMinute.objects.create(
        version=acme_v1,
        endpoint=endpoint,
        tenant=acme,
        minute=minute - timedelta(minutes=2),
        invocations=90,
        cold_starts=1,
        cache_hits=89,
        latency_histogram={"10": 80, "25": 9, "2500": 1},
    )
    VersionUsageMinute.objects.create(
        version=globex_v1,
        endpoint=endpoint,
        tenant=globex,
        minute=minute - timedelta(minutes=3),
        invocations=30,
        cold_starts=2,
        latency_histogram={"5": 30},
    )
    # Outside the hour: not counted in the last-hour figures.
    VersionUsageMinute.objects.create(
        version=acme_v1,
        endpoint=endpoint,
        tenant=acme,
        minute=minute - timedelta(minutes=90),
        invocations=1000,
        cold_starts=50,
        latency_histogram={"5000": 1000},
    )
    for back in range(0, 30, 5):
        InstanceUsageMinute.objects.create(
            instance=instance,
            minute=minute - timedelta(minutes=back),
            host_memory_used_mb=333.0,
            models_loaded=2,
            invocations=10,
        )
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
