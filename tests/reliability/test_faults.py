"""Faults under load, with real processes: a Triton instance killed while tenants' requests flow
through the proxy. Meanwhile every answer is a success or a 503 with Retry-After, never another
error; the reconciler restores the instance with its pinned and hot models; then every request
succeeds, warm."""

from __future__ import annotations

import os
import signal
import time

import pytest

from deployments import usage
from deployments.models import Instance, Placement
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from deployments.services import reconciler, rollouts
from tenants.models import Tenant
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.reliability.support import Outcome, Traffic, invoke
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core.reset_rate_limits()


def deployed(artifact, slug: str, tier: str):
    model = TenantModelFactory(tenant=TenantFactory(slug=slug, tier=tier), name="intents")
    packaged_version(model, artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    return model


def test_a_triton_killed_under_load_answers_503_then_is_restored_with_its_models(
    proxy_url, intent_artifact
):
    premium = deployed(intent_artifact, "premium", Tenant.Tier.PREMIUM)
    busy = deployed(intent_artifact, "busy", Tenant.Tier.STANDARD)
    platform = issue_token(tenant=None, name="load", actor="test").secret
    traffic = {
        slug: Traffic(lambda slug=slug: invoke(proxy_url, slug, platform), pause_s=0.02, name=slug)
        for slug in ("premium", "busy")
    }
    for flow in traffic.values():
        flow.start()

    def sent_since(moment: float) -> list[tuple[str, Outcome]]:
        return [(slug, o) for slug, flow in traffic.items() for o in flow.sent_since(moment)]

    try:
        began = time.monotonic()
        wait_until(
            lambda: all(len(flow.sent_since(began)) >= 3 for flow in traffic.values()),
            60,
            "the tenants' traffic did not flow",
        )
        usage.flush_usage()  # the busy tenant's model is hot: invoked within the hour
        instance = Instance.objects.get(endpoint__name="local-intent-classifier")
        os.kill(instance.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: any(o.status == 503 for _, o in sent_since(killed)),
            30,
            "no request met the dead instance",
        )
        report = reconciler.reconcile_fleet()
        restored = time.monotonic()
        wait_until(
            lambda: all(len(flow.sent_since(restored)) >= 5 for flow in traffic.values()),
            60,
            "the tenants' traffic was not answered after the repair",
        )
    finally:
        for flow in traffic.values():
            flow.stop()

    for flow in traffic.values():
        flow.assert_every_request_answered()
    assert report.instances_restarted == [str(instance)]
    for slug, flow in traffic.items():
        for outcome in flow.outcomes:
            status, headers, body = outcome.answer
            assert status in (200, 503), (slug, status, body)
            if status == 503:
                assert int(headers["Retry-After"]) >= 1 and body["error"]["message"]
    # Pinned and hot: loaded again by the repair, before any request asked for them. Every
    # request sent after it succeeds, the first one already warm.
    for slug, flow in traffic.items():
        after = flow.sent_since(restored)
        assert all(o.status == 200 for o in after), (slug, after)
        assert after[0].answer[2]["cold_start"] is False, (slug, after[0].answer[2])
        assert not any(o.answer[2]["cold_start"] for o in after), slug
    instance.refresh_from_db()
    assert instance.status == Instance.Status.HEALTHY and instance.restarts == 1
    for model in (premium, busy):
        placement = Placement.objects.get(version=model.active_version)
        assert placement.actual_state == Placement.ActualState.LOADED
