"""Faults under load, with real processes: a Triton instance killed while tenants' requests flow
through the proxy. Meanwhile every answer is a success or a 503 with Retry-After, never another
error; the reconciler restores the instance with its pinned and hot models; then every request
succeeds, warm."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from deployments import usage
from deployments.models import Instance, Placement
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from deployments.services import reconciler, rollouts
from tenants.models import Tenant
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version

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


def invoke(base: str, slug: str, token: str) -> tuple:
    request = urllib.request.Request(
        f"{base}/api/v1/tenants/{slug}/models/intents/invoke",
        data=json.dumps({"inputs": ["Where is my refund?"]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"{}")


def test_a_triton_killed_under_load_answers_503_then_is_restored_with_its_models(
    proxy_url, intent_artifact
):
    premium = deployed(intent_artifact, "premium", Tenant.Tier.PREMIUM)
    busy = deployed(intent_artifact, "busy", Tenant.Tier.STANDARD)
    platform = issue_token(tenant=None, name="load", actor="test").secret
    answers: list[tuple] = []
    stop = threading.Event()

    def traffic(slug: str) -> None:
        while not stop.is_set():
            status, headers, body = invoke(proxy_url, slug, platform)
            answers.append((slug, status, headers, body))
            time.sleep(0.02)

    threads = [threading.Thread(target=traffic, args=(slug,)) for slug in ("premium", "busy")]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        usage.flush_usage()  # the busy tenant's model is hot: invoked within the hour
        instance = Instance.objects.get(endpoint__name="local-intent-classifier")
        os.kill(instance.pid, signal.SIGKILL)
        killed_at = len(answers)
        time.sleep(2.0)
        report = reconciler.reconcile_fleet()
        time.sleep(0.5)  # requests sent before the repair have answered
        restored_at = len(answers)
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert report.instances_restarted == [str(instance)]
    during = answers[killed_at:restored_at]
    assert any(status == 503 for _, status, _, _ in during), "no request met the dead instance"
    for slug, status, headers, body in answers:
        assert status in (200, 503), (slug, status, body)
        if status == 503:
            assert int(headers["Retry-After"]) >= 1 and body["error"]["message"]
    after = answers[restored_at:]
    assert after and all(status == 200 for _, status, _, _ in after)
    instance.refresh_from_db()
    assert instance.status == Instance.Status.HEALTHY and instance.restarts == 1
    for model in (premium, busy):  # pinned and hot: back before any request asked for them
        placement = Placement.objects.get(version=model.active_version)
        assert placement.actual_state == Placement.ActualState.LOADED
