"""The inference proxy over real HTTP (uvicorn running the platform's ASGI application) in front
of real Triton processes: the native route, ``tritonclient.http`` unchanged against the Open
Inference Protocol routes, answers equal to the model run directly, cold loads through the proxy,
and every refusal a caller can meet (400, 401, 404, 409, 413, 429, 502, 503) including
cross-tenant attempts."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np
import psutil
import pytest

from deployments.backends.local import runtime
from deployments.models import Event, Instance, Placement
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from models_registry.models import ModelVersion
from models_registry.services.packaging import package_version
from models_registry.triton_runtime.intent_classifier import Predictor as IntentPredictor
from tenants.services import issue_token
from tests.factories import ModelVersionFactory, TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

TICKETS = ["Where is my refund?", "I can't log in to my account.", "My parcel never arrived."]


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    from deployments.proxy.metrics import METRICS

    METRICS.reset()
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()


def deploy(artifact, *, slug: str = "acme", name: str = "intents"):
    from deployments.services import rollouts

    model = TenantModelFactory(tenant=TenantFactory(slug=slug), name=name)
    packaged_version(model, artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    token = issue_token(tenant=model.tenant, name="product", actor="test").secret
    return model, token


def call(url: str, *, token: str | None = None, body: object = None, method: str = "POST"):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def invoke_url(base: str, slug: str = "acme", name: str = "intents") -> str:
    return f"{base}/api/v1/tenants/{slug}/models/{name}/invoke"


def test_native_invoke_through_the_proxy_answers_like_the_model(proxy_url, intent_artifact):
    _, token = deploy(intent_artifact)

    status, headers, body = call(invoke_url(proxy_url), token=token, body={"inputs": TICKETS})

    assert status == 200, body
    answer = json.loads(body)
    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    assert [o["label"] for o in answer["outputs"]] == [e["label"] for e in expected]
    for got, want in zip(answer["outputs"], expected, strict=True):
        for label, score in want["scores"].items():
            assert got["scores"][label] == pytest.approx(score, abs=0.02)
    assert answer["model_version"] == 1 and answer["cold_start"] is False


def test_tritonclient_works_unchanged_against_the_proxy(proxy_url, intent_artifact):
    import tritonclient.http as httpclient

    deploy(intent_artifact)
    platform = issue_token(tenant=None, name="ops", actor="test").secret
    client = httpclient.InferenceServerClient(url=proxy_url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {platform}"}

    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("acme.intents", headers=headers)
    metadata = client.get_model_metadata("acme.intents", headers=headers)
    assert metadata["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]
    assert {o["name"] for o in metadata["outputs"]} == {"LABEL", "SCORES", "LABELS"}

    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    for binary in (True, False):
        text = httpclient.InferInput("TEXT", [len(TICKETS), 1], "BYTES")
        text.set_data_from_numpy(
            np.array([[t.encode()] for t in TICKETS], dtype=object), binary_data=binary
        )
        outputs = [
            httpclient.InferRequestedOutput("LABEL", binary_data=binary),
            httpclient.InferRequestedOutput("SCORES", binary_data=binary),
        ]
        # tritonclient adds its header length to the dict it is given: one dict per call.
        result = client.infer("acme.intents", [text], outputs=outputs, headers=dict(headers))
        labels = [
            value.decode() if isinstance(value, bytes) else value
            for value in result.as_numpy("LABEL").reshape(-1)
        ]
        assert labels == [e["label"] for e in expected], binary
        assert result.as_numpy("SCORES").shape == (3, 3)
        assert result.get_response()["model_name"] == "acme.intents"


def test_tritonclient_errors_are_clear(proxy_url, intent_artifact):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    _, token = deploy(intent_artifact)
    client = httpclient.InferenceServerClient(url=proxy_url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {token}"}
    wrong = httpclient.InferInput("PROMPT", [1, 1], "BYTES")
    wrong.set_data_from_numpy(np.array([[b"hi"]], dtype=object))

    with pytest.raises(
        InferenceServerException, match=r"inputs\[0\]\.name: not an input of this model"
    ):
        client.infer("acme.intents", [wrong], headers=headers)
    with pytest.raises(InferenceServerException, match="No model"):
        client.get_model_metadata("other.intents", headers=headers)


def test_a_tenant_token_reaches_only_its_own_models_and_others_look_absent(
    proxy_url, intent_artifact
):
    deploy(intent_artifact, slug="acme")
    _, other_token = deploy(intent_artifact, slug="globex")

    theirs = call(invoke_url(proxy_url, "acme"), token=other_token, body={"inputs": ["hi"]})
    nobody = call(invoke_url(proxy_url, "acme", "nope"), token=other_token, body={"inputs": ["x"]})
    v2 = call(f"{proxy_url}/v2/models/acme.intents", token=other_token, method="GET")

    assert theirs[0] == 404 and nobody[0] == 404 and v2[0] == 404
    # The same answer whether the model exists or not: nothing to learn by probing.
    assert json.loads(theirs[2])["error"]["code"] == json.loads(nobody[2])["error"]["code"]
    platform = issue_token(tenant=None, name="ops", actor="test").secret
    assert call(invoke_url(proxy_url, "acme"), token=platform, body={"inputs": ["hi"]})[0] == 200


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("tml_not-a-real-token-at-all-xxxxxxxxxxxxxxxxxxx", 401)],
)
def test_requests_without_a_valid_token_are_401(proxy_url, db, token, status):
    assert call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})[0] == status


def test_bad_inputs_are_400_naming_the_field_and_oversize_bodies_413(
    proxy_url, intent_artifact, settings
):
    _, token = deploy(intent_artifact)

    status, _, body = call(invoke_url(proxy_url), token=token, body={"inputs": ["ok", 7]})
    assert status == 400 and json.loads(body)["error"]["field"] == "inputs[1]"
    status, _, body = call(invoke_url(proxy_url), token=token, body={"texts": ["ok"]})
    assert status == 400 and json.loads(body)["error"]["field"] == "inputs"
    status, _, body = call(invoke_url(proxy_url), token=token, body=b"{not json")
    assert status == 400

    settings.TENANTML_PROXY_MAX_BODY_BYTES = 1000
    status, _, body = call(invoke_url(proxy_url), token=token, body={"inputs": ["x" * 2000]})
    assert status == 413 and "limit is 1,000" in json.loads(body)["error"]["message"]


def test_a_model_not_deployed_is_409(proxy_url, db):
    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    token = issue_token(tenant=model.tenant, name="t", actor="test").secret

    status, _, body = call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})

    assert status == 409 and "deploy" in json.loads(body)["error"]["message"]


def test_a_tenant_over_its_rate_is_429_with_retry_after(proxy_url, intent_artifact, settings):
    _, token = deploy(intent_artifact)
    settings.TENANTML_PROXY_RATE_LIMIT_RPS = 0.01  # one token per 100 s: no refill mid-test
    settings.TENANTML_PROXY_RATE_LIMIT_BURST = 2
    core.reset_rate_limits()

    statuses = [call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]}) for _ in range(3)]

    assert [s[0] for s in statuses] == [200, 200, 429]
    assert int(statuses[2][1]["Retry-After"]) >= 1


def test_a_model_evicted_behind_the_proxys_back_is_loaded_once_for_concurrent_requests(
    proxy_url, intent_artifact
):
    model, token = deploy(intent_artifact)
    placement = Placement.objects.get(version=model.active_version)
    runtime.client_for(placement.instance).unload_model(model.active_version.triton_model_name)
    loads_before = Event.objects.filter(kind="placement.loaded").count()

    async def burst():
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one():
                async with session.post(
                    invoke_url(proxy_url),
                    json={"inputs": ["Where is my refund?"]},
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    return response.status, await response.json()

            return await asyncio.gather(*(one() for _ in range(8)))

    answers = asyncio.run(burst())

    assert [status for status, _ in answers] == [200] * 8
    assert any(body["cold_start"] for _, body in answers)
    assert Event.objects.filter(kind="placement.loaded").count() == loads_before + 1


def test_a_request_for_a_model_being_evicted_waits_and_is_answered_by_a_fresh_load(
    proxy_url, intent_artifact
):
    import threading

    first, first_token = deploy(intent_artifact, slug="acme")
    second, second_token = deploy(intent_artifact, slug="globex")
    placements = {m.pk: Placement.objects.get(version=m.active_version) for m in (first, second)}
    instance = placements[first.pk].instance
    assert placements[second.pk].instance_id == instance.pk
    assert call(invoke_url(proxy_url), token=first_token, body={"inputs": ["hi"]})[0] == 200
    runtime.client_for(instance).unload_model(second.active_version.triton_model_name)
    Placement.objects.filter(pk=placements[second.pk].pk).update(actual_state="evicted")
    measured = Placement.objects.get(pk=placements[first.pk].pk).host_memory_mb
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=int(measured * 1.5))
    gates = runtime.gates_for(instance.host, instance.port)
    first_name = first.active_version.triton_model_name
    answers = {}

    def ask(name, slug, token):
        answers[name] = call(invoke_url(proxy_url, slug), token=token, body={"inputs": ["hi"]})

    gates.enter(first_name)  # a request for the first model in flight, as another process has
    try:
        evicting = threading.Thread(target=ask, args=("second", "globex", second_token))
        evicting.start()  # its load evicts the first model, which waits for that request
        wait_until(
            lambda: Placement.objects.get(pk=placements[first.pk].pk).actual_state == "evicting",
            30,
            "the eviction never started",
        )
        meanwhile = threading.Thread(target=ask, args=("first", "acme", first_token))
        meanwhile.start()  # the gate is closed: this one waits for the eviction, then loads
        wait_until(
            lambda: core._OUTSTANDING.get(placements[first.pk].pk, 0) >= 1,
            30,
            "the request for the first model never reached its closed gate in the proxy",
        )
    finally:
        gates.leave(first_name)
    evicting.join(timeout=120)
    meanwhile.join(timeout=120)

    status, _, body = answers["second"]
    assert status == 200 and json.loads(body)["cold_start"] is True, body
    status, _, body = answers["first"]
    assert status == 200 and json.loads(body)["cold_start"] is True, body
    evicted = Event.objects.filter(kind="placement.evicted").values_list("version_id", flat=True)
    assert first.active_version.pk in evicted


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed child this process has not reaped yet is a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_instance_down_is_503_with_retry_after_never_500(proxy_url, intent_artifact):
    import os
    import signal

    model, token = deploy(intent_artifact)
    assert call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})[0] == 200
    instance = Placement.objects.get(version=model.active_version).instance
    os.kill(instance.pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(instance.pid), 10, "the killed Triton is still running")

    first = call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})
    second = call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})

    assert first[0] == 503 and int(first[1]["Retry-After"]) >= 1
    assert second[0] == 503  # the instance is now known unhealthy: no copy to route to
    instance.refresh_from_db()
    assert instance.status == Instance.Status.UNHEALTHY


def test_a_model_that_fails_to_load_is_502_with_the_reason(proxy_url, intent_artifact):
    model, token = deploy(intent_artifact)
    version = model.active_version
    placement = Placement.objects.get(version=version)
    model_dir = runtime._unpacked_package(version)
    model_py = next(model_dir.glob("*/1/model.py"))
    model_py.write_text("raise RuntimeError('head weights are missing')\n")
    runtime.client_for(placement.instance).unload_model(version.triton_model_name)

    status, headers, body = call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})

    assert status == 502, body
    assert "head weights are missing" in json.loads(body)["error"]["message"]


def test_metrics_need_a_platform_token_and_count_requests(proxy_url, intent_artifact):
    _, token = deploy(intent_artifact)
    call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})
    platform = issue_token(tenant=None, name="ops", actor="test").secret

    assert call(f"{proxy_url}/metrics", token=token, method="GET")[0] == 403
    status, _, body = call(f"{proxy_url}/metrics", token=platform, method="GET")

    text = body.decode()
    assert status == 200
    series = 'code="200",model="acme.intents",model_version="1",protocol="native"'
    assert f"tenantml_proxy_requests_total{{{series}}} 1.0" in text
    assert "tenantml_proxy_request_duration_seconds_bucket" in text
    assert "tenantml_proxy_route_cache_hits_total" in text


def test_a_rollout_reaches_the_proxy_at_once(proxy_url, intent_artifact):
    from deployments.services import rollouts

    model, token = deploy(intent_artifact)
    assert (
        json.loads(call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})[2])[
            "model_version"
        ]
        == 1
    )
    v2 = ModelVersionFactory(
        model=model,
        number=2,
        status=ModelVersion.Status.REGISTERED,
        artifact_uri=str(intent_artifact),
        host_memory_mb=None,
    )
    v2 = package_version(version=v2, actor="test")
    deployment, _ = rollouts.request_deployment(model=model, version=v2, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)

    answer = json.loads(call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})[2])

    assert answer["model_version"] == 2


def sagemaker_runtime(proxy_url: str, access_key_id: str, secret_access_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=proxy_url,
        region_name="us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(retries={"total_max_attempts": 1}),
    )


def kserve_request(texts: list[str]) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]}
    ).encode()


def test_boto3_sagemaker_runtime_works_against_the_proxy_with_issued_credentials(
    proxy_url, intent_artifact
):
    model, _ = deploy(intent_artifact)
    issued = issue_token(tenant=model.tenant, name="aws-sdk", actor="test")
    runtime = sagemaker_runtime(proxy_url, issued.access_key_id, issued.secret_access_key)
    expected = [e["label"] for e in IntentPredictor(str(intent_artifact)).predict(TICKETS)]

    # The tenant as the endpoint and the model as the target, or both in the target.
    for endpoint, target in (("acme", "intents"), ("tenantml", "acme/intents")):
        response = runtime.invoke_endpoint(
            EndpointName=endpoint,
            TargetModel=target,
            ContentType="application/json",
            Body=kserve_request(TICKETS),
        )
        answer = json.loads(response["Body"].read())
        label = next(o for o in answer["outputs"] if o["name"] == "LABEL")
        assert label["data"] == expected
        assert response["InvokedProductionVariant"] == "AllTraffic"


def test_boto3_with_a_wrong_secret_or_another_tenants_model_is_refused(proxy_url, intent_artifact):
    from botocore.exceptions import ClientError

    deploy(intent_artifact, slug="acme")
    other, _ = deploy(intent_artifact, slug="globex")
    issued = issue_token(tenant=other.tenant, name="aws-sdk", actor="test")

    forged = sagemaker_runtime(proxy_url, issued.access_key_id, "not-the-secret" * 3)
    with pytest.raises(ClientError) as refused:
        forged.invoke_endpoint(
            EndpointName="globex", TargetModel="intents", Body=kserve_request(["hi"])
        )
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    runtime = sagemaker_runtime(proxy_url, issued.access_key_id, issued.secret_access_key)
    with pytest.raises(ClientError) as hidden:
        runtime.invoke_endpoint(
            EndpointName="acme",
            TargetModel="intents",
            ContentType="application/json",
            Body=kserve_request(["hi"]),
        )
    assert hidden.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as invalid:
        runtime.invoke_endpoint(
            EndpointName="globex",
            TargetModel="intents",
            ContentType="application/json",
            Body=json.dumps(
                {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
            ),
        )
    assert invalid.value.response["Error"]["Code"] == "ValidationError"
    assert "datatype" in invalid.value.response["Error"]["Message"]


def test_every_copy_at_its_limit_is_503_overloaded(proxy_url, intent_artifact, settings):
    _, token = deploy(intent_artifact)
    settings.TENANTML_PROXY_MAX_OUTSTANDING_PER_COPY = 0

    status, headers, body = call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})

    assert status == 503 and headers["Retry-After"] == "1"
    assert json.loads(body)["error"]["code"] == "overloaded"


def test_a_route_change_in_another_process_reaches_this_one_through_the_generation_file(
    settings, tmp_path
):
    from deployments.proxy.invalidation import SUBSCRIBER, generation_file
    from deployments.proxy.routing import Route

    settings.CELERY_BROKER_URL = "filesystem://"
    settings.VAR_DIR = tmp_path
    route = Route(
        tenant_id=1, tenant_slug="acme", tenant_active=True, model_id=1, model_name="m", kind="k"
    )
    SUBSCRIBER._file_checked = 0
    SUBSCRIBER.poll_file()  # remember the current generation
    ROUTES.put(("acme", "m"), route, ttl_s=60)

    generation_file().write_text("another process changed a route")
    SUBSCRIBER._file_checked = 0
    SUBSCRIBER.poll_file()

    assert ROUTES.get(("acme", "m")) is not route


@pytest.mark.redis
def test_a_route_change_published_by_another_process_reaches_this_one_over_redis(db):
    from deployments.proxy.invalidation import SUBSCRIBER
    from tests.redis_support import (
        assert_a_published_change_drops_only_its_route,
        wait_for_routing_listener,
    )

    SUBSCRIBER.start()
    wait_for_routing_listener()

    assert_a_published_change_drops_only_its_route(model_id=41, other_model_id=42)
