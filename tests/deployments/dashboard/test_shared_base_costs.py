"""What each tenant pays on a shared-base instance: the encoder's part of the price by requests,
the rest by the memory of its head."""

from __future__ import annotations

import pytest
from django.utils import timezone

from deployments.models import Endpoint, VersionUsageMinute
from deployments.selectors.costs import refresh_tenant_costs, tenant_costs, version_costs
from tenants.access import Caller
from tests.factories import EndpointFactory, InstanceFactory, PlacementFactory

pytestmark = pytest.mark.django_db

PLATFORM = Caller(label="ops", is_platform=True, tenant_ids=frozenset())
HEAD_MB = 0.005
ENCODER_MB = 115.0


@pytest.fixture
def shared_instance():
    endpoint = EndpointFactory(mode=Endpoint.Mode.SHARED_BASE)
    return InstanceFactory(endpoint=endpoint, shared_base_memory_mb=ENCODER_MB)


def heads(instance, requests: list[int]):
    placements = [
        PlacementFactory(instance=instance, host_memory_mb=HEAD_MB) for _ in range(len(requests))
    ]
    minute = timezone.now().replace(second=0, microsecond=0)
    for placement, count in zip(placements, requests, strict=True):
        if count:
            VersionUsageMinute.objects.create(
                version=placement.version,
                endpoint=instance.endpoint,
                tenant=placement.version.model.tenant,
                minute=minute,
                invocations=count,
            )
    return placements


def usd_by_version() -> dict[int, float]:
    rows = version_costs(caller=PLATFORM)
    return {(row["tenant"], row["version"]): row["usd_per_hour"] for row in rows}


def test_the_encoder_is_paid_by_requests_and_the_heads_by_memory(shared_instance):
    busy, quiet, idle = heads(shared_instance, [90, 10, 0])
    price = float(shared_instance.endpoint.instance_type.usd_per_hour)
    resident = ENCODER_MB + 3 * HEAD_MB

    costs = {slug: usd for (slug, _), usd in usd_by_version().items()}

    encoder_part = price * ENCODER_MB / resident
    head_part = price * HEAD_MB / resident
    assert costs[busy.version.model.tenant.slug] == pytest.approx(
        encoder_part * 0.9 + head_part, abs=1e-4
    )
    assert costs[quiet.version.model.tenant.slug] == pytest.approx(
        encoder_part * 0.1 + head_part, abs=1e-4
    )
    assert costs[idle.version.model.tenant.slug] == pytest.approx(head_part, abs=1e-4)
    # Together they pay the whole instance, no more.
    assert sum(costs.values()) == pytest.approx(price, abs=1e-3)


def test_without_traffic_the_encoder_is_shared_equally(shared_instance):
    placements = heads(shared_instance, [0, 0, 0, 0])
    price = float(shared_instance.endpoint.instance_type.usd_per_hour)

    shares = list(usd_by_version().values())

    assert len(shares) == len(placements)
    assert shares == pytest.approx([price / 4] * 4, abs=1e-4)


def test_the_ranking_the_sampler_keeps_agrees_with_the_shares_read_now(shared_instance):
    heads(shared_instance, [50, 30, 20])
    live = tenant_costs(caller=PLATFORM)

    refresh_tenant_costs()

    from deployments.models import TenantCost

    kept = {row.slug: row.usd_per_hour for row in TenantCost.objects.all()}
    assert kept == pytest.approx(
        {row["tenant"]: row["usd_per_hour"] for row in live.rows}, abs=1e-4
    )
    assert max(kept, key=kept.get) == live.rows[0]["tenant"]


def test_the_endpoint_page_shows_the_encoder_once_and_the_heads_of_each_instance(
    staff_client, shared_instance
):
    from django.urls import reverse

    heads(shared_instance, [3, 2, 1, 0])

    body = staff_client.get(
        reverse("dashboard:endpoint", args=[shared_instance.endpoint.name])
    ).content.decode()

    assert f'data-testid="instance-heads-{shared_instance.pk}" data-heads="4"' in body
    words = " ".join(body.split())
    assert "Shared encoder: 115 MB, loaded once; 4 tenant heads resident in it (20.5 KB)" in words
    assert f'data-testid="segment-encoder-{shared_instance.pk}"' in body
    # The encoder counts once in what the instance holds: 115 MB and four 5 KB heads.
    assert f'data-used-mb="{ENCODER_MB + 4 * HEAD_MB}"' in body
