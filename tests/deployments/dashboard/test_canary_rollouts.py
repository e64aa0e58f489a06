"""The tenant page shows a canary or shadow rollout under way: the live and the new version's
figures side by side since the new one started, refreshed alone for htmx."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment
from deployments.usage import UsageCounters, flush_usage
from tests.deployments.dashboard.conftest import htmx
from tests.factories import ModelVersionFactory, PlacementFactory


def canary_with_traffic(fleet) -> Deployment:
    """acme's intents: v1 live, v2 a 10 % canary for a minute; v1 answered 90 requests, v2 10
    (2 failed), and 8 copies' outputs were compared with v1's (6 agreed)."""
    v2 = ModelVersionFactory(model=fleet.acme_model, number=2, package_uri="/tmp/v2.tar.gz")
    v2_placement = PlacementFactory(version=v2, instance=fleet.instance, host_memory_mb=111.0)
    now = timezone.now()
    deployment = Deployment.objects.create(
        model=fleet.acme_model,
        endpoint=fleet.endpoint,
        status=Deployment.Status.LIVE,
        live_version=fleet.acme_v1,
        candidate_version=v2,
        candidate_strategy=Deployment.Strategy.CANARY,
        candidate_share=0.1,
        candidate_started_at=now - timedelta(seconds=5),
    )
    counters = UsageCounters()
    for placement, count, errors, latency_ms in (
        (fleet.acme_placement, 90, 0, 8.0),
        (v2_placement, 10, 2, 40.0),
    ):
        for index in range(count):
            counters.record(
                version_id=placement.version_id,
                endpoint_id=placement.endpoint_id,
                tenant_id=fleet.acme.pk,
                latency_ms=latency_ms,
                cold_start=False,
                error=index < errors,
                now=now,
            )
    counters.record_comparison(
        version_id=v2.pk,
        endpoint_id=v2_placement.endpoint_id,
        tenant_id=fleet.acme.pk,
        compared=8,
        agreement_sum=6.0,
        now=now,
    )
    flush_usage(counters=counters)
    return deployment


def test_the_tenant_page_shows_a_canary_beside_the_live_version(staff_client, fleet):
    canary_with_traffic(fleet)

    page = staff_client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()

    assert 'data-testid="rollout-intents"' in page
    assert "v2 as a canary (10 % of requests) beside v1" in page
    assert 'data-testid="rollout-live-requests">90<' in page
    assert 'data-testid="rollout-new-requests">10<' in page
    assert 'data-testid="rollout-live-error-rate">0.0 %<' in page
    assert 'data-testid="rollout-new-error-rate">20.0 %<' in page
    assert 'data-testid="rollout-live-p99">10 ms<' in page
    assert 'data-testid="rollout-new-p99">50 ms<' in page
    assert 'data-testid="rollout-new-agreement">75.0 %' in page


def test_the_rollout_partial_returns_alone_for_htmx(staff_client, fleet):
    canary_with_traffic(fleet)

    response = staff_client.get(
        reverse("dashboard:tenant", args=["acme"]), **htmx("tenant-rollouts")
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="tenant-rollouts"')
    assert 'data-testid="rollout-comparison-intents"' in body
    assert 'id="tenant-models"' not in body


def test_no_rollout_shows_no_comparison(staff_client, fleet):
    page = staff_client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()

    assert 'id="tenant-rollouts"' in page
    assert "rollout-comparison" not in page
