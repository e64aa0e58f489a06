"""``/metrics`` exports each periodic job's last pass (from its ``BackgroundPass`` row) as gauges,
read over real HTTP from the platform's ASGI application, in one query."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deployments.models import BackgroundPass, Placement
from deployments.passes import RECONCILE, WARM_UP
from deployments.proxy.metrics import BackgroundPassCollector
from deployments.services import reconciler, warmups
from models_registry.kinds import UnknownKind
from tenants.services import issue_token
from tests.factories import (
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantModelFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def gauge(text: str, name: str, job: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"job": job}:
                return sample.value
    raise AssertionError(f"no {name} for {job}")


def fail_a_warm_up_pass() -> None:
    """A pinned model of a kind nobody registers, measured nowhere: the pass raises."""
    version = ModelVersionFactory(model=TenantModelFactory(kind="sentiment"), host_memory_mb=None)
    PlacementFactory(
        instance=InstanceFactory(port=45000),
        version=version,
        desired_state=Placement.DesiredState.PINNED,
        actual_state=Placement.ActualState.UNLOADED,
        host_memory_mb=None,
    )
    with pytest.raises(UnknownKind):
        warmups.warm_up_fleet()


def test_metrics_show_each_jobs_last_pass(proxy_url):
    reconciler.reconcile_fleet()
    fail_a_warm_up_pass()
    platform = issue_token(tenant=None, name="ops", actor="test").secret
    tenant_token = issue_token(tenant=TenantModelFactory().tenant, name="t", actor="test").secret

    assert scrape(f"{proxy_url}/metrics", tenant_token)[0] == 403
    status, text = scrape(f"{proxy_url}/metrics", platform)

    assert status == 200
    assert "# TYPE tenantml_background_pass_duration_seconds gauge" in text
    for job in (RECONCILE, WARM_UP):
        record = BackgroundPass.objects.get(job=job)
        assert gauge(text, "tenantml_background_pass_duration_seconds", job) == pytest.approx(
            record.duration_s, abs=1e-6
        )
        assert gauge(text, "tenantml_background_pass_items", job) == record.items
        assert gauge(text, "tenantml_background_pass_queries", job) == record.queries > 0
        assert gauge(
            text, "tenantml_background_pass_finished_timestamp_seconds", job
        ) == pytest.approx(record.finished_at.timestamp(), abs=0.001)
    assert gauge(text, "tenantml_background_pass_succeeded", RECONCILE) == 1
    assert gauge(text, "tenantml_background_pass_succeeded", WARM_UP) == 0
    assert gauge(text, "tenantml_background_pass_items", WARM_UP) == 1
    # The proxy's own figures are still there.
    assert "tenantml_proxy_route_cache_hits_total" in text


def test_the_passes_gauges_are_read_in_one_query(django_assert_num_queries):
    for job in (RECONCILE, WARM_UP, "sample", 'odd "name"'):
        BackgroundPass.objects.create(
            job=job,
            started_at="2026-01-01T00:00:00Z",
            finished_at="2026-01-01T00:00:01Z",
            duration_s=1.0,
        )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackgroundPassCollector())

    with django_assert_num_queries(1):
        text = generate_latest(registry).decode()

    assert gauge(text, "tenantml_background_pass_succeeded", "sample") == 1
    assert gauge(text, "tenantml_background_pass_items", 'odd "name"') == 0
    assert 'tenantml_background_pass_items{job="odd \\"name\\""} 0.0' in text
