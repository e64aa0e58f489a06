"""``/metrics`` read as Prometheus reads it: the exposition parsed with ``prometheus_client``'s own
parsers after real requests through the proxy to a real Triton, with ``model`` and
``model_version`` as separate labels, exact status codes, the content type the scraper asked
for, and the bounded label set of a large fleet."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from deployments.proxy import core
from deployments.proxy.metrics import METRICS, OTHER, ProxyCollector, ProxyMetrics
from deployments.proxy.routing import ROUTES
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version


@pytest.fixture
def fresh_proxy_state():
    METRICS.reset()
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()


def deploy(artifact, *, slug: str, name: str) -> str:
    """A live version 1 of ``slug.name`` on a local Triton, and a token of its tenant."""
    from deployments.services import rollouts

    model = TenantModelFactory(tenant=TenantFactory(slug=slug), name=name)
    packaged_version(model, artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    return issue_token(tenant=model.tenant, name="product", actor="test").secret


def call(url: str, *, token: str, body: object = None, method: str = "POST", accept: str = ""):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def samples(text: str, *, parse=text_string_to_metric_families) -> dict:
    """Every sample of an exposition by (sample name, frozen labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parse(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("local_rollouts", "fresh_proxy_state")
def test_requests_are_counted_per_model_and_version_with_their_exact_status(
    proxy_url, intent_artifact
):
    token = deploy(intent_artifact, slug="acme", name="intents")
    invoke = f"{proxy_url}/api/v1/tenants/acme/models/intents/invoke"
    platform = issue_token(tenant=None, name="ops", actor="test").secret

    assert call(invoke, token=token, body={"inputs": ["Where is my refund?"]})[0] == 200
    assert call(invoke, token=token, body={"inputs": ["I can't log in."]})[0] == 200
    assert call(invoke, token=token, body={"inputs": [7]})[0] == 400
    missing = f"{proxy_url}/api/v1/tenants/acme/models/nothing-here/invoke"
    assert call(missing, token=token, body={"inputs": ["hi"]})[0] == 404
    v2_infer = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}
    assert call(f"{proxy_url}/v2/models/acme.intents/infer", token=token, body=v2_infer)[0] == 200
    status, headers, text = call(f"{proxy_url}/metrics", token=platform, method="GET")

    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(text)
    requests = "tenantml_proxy_requests_total"
    acme = {"model": "acme.intents", "model_version": "1"}
    assert found[(requests, labels(**acme, protocol="native", code="200"))] == 2
    assert found[(requests, labels(**acme, protocol="native", code="400"))] == 1
    assert found[(requests, labels(**acme, protocol="v2", code="200"))] == 1
    assert (
        found[(requests, labels(model="none", model_version="none", protocol="native", code="404"))]
        == 1
    )
    duration = "tenantml_proxy_request_duration_seconds"
    native = labels(**acme, protocol="native")
    assert found[(f"{duration}_count", native)] == 3
    assert found[(f"{duration}_bucket", native | labels(le="+Inf"))] == 3
    assert 0 < found[(f"{duration}_sum", native)] < 60
    assert found[("tenantml_proxy_route_cache_misses_total", frozenset())] >= 1
    assert found[("tenantml_proxy_routes_cached", frozenset())] >= 1
    # The web process's own resources come with it.
    assert found[("process_resident_memory_bytes", frozenset())] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_proxy_state")
def test_a_scraper_asking_for_openmetrics_gets_openmetrics(proxy_url):
    platform = issue_token(tenant=None, name="ops", actor="test").secret
    assert call(f"{proxy_url}/v2/models/acme.nothing/infer", token=platform, body={})[0] == 404

    status, headers, text = call(
        f"{proxy_url}/metrics",
        token=platform,
        method="GET",
        accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
    )

    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    found = samples(text, parse=openmetrics_families)
    # A request that reached no model version is counted under "none".
    unknown = labels(model="none", model_version="none", protocol="v2", code="404")
    assert found[("tenantml_proxy_requests_total", unknown)] == 1


def test_versions_past_the_label_limit_are_summed_as_other(settings):
    settings.TENANTML_PROXY_METRICS_MAX_VERSIONS = 2
    metrics = ProxyMetrics()
    for model, version in (("a.m", "1"), ("a.m", "2"), ("b.m", "1"), ("c.m", "4"), ("a.m", "1")):
        metrics.observe(
            model=model,
            model_version=version,
            protocol="native",
            status=200,
            seconds=0.01,
            cold_start=model == "c.m",
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(metrics))

    found = samples(generate_latest(registry).decode())

    requests = "tenantml_proxy_requests_total"
    native_200 = {"protocol": "native", "code": "200"}
    assert found[(requests, labels(model="a.m", model_version="1", **native_200))] == 2
    assert found[(requests, labels(model="a.m", model_version="2", **native_200))] == 1
    assert found[(requests, labels(model=OTHER, model_version=OTHER, **native_200))] == 2
    assert (
        found[("tenantml_proxy_cold_starts_total", labels(model=OTHER, model_version=OTHER))] == 1
    )
    series = {labels_ for name, labels_ in found if name == requests}
    assert len(series) == 3
