"""Models that generate text, through the proxy over real HTTP in front of a real Triton: a
test-only decoupled model (``delta_streamer``) of a test kind registered with a
``GenerationSpec``, placed and routed like any model. Streams on the native route, the whole
answer, the Open Inference Protocol's generate and generate_stream, boto3's
invoke_endpoint_with_response_stream, the model stopping when the caller goes away, a cold model
loaded first, parameter checks, and a kind that does not generate refusing ``stream``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from deployments import usage
from deployments.backends.local import runtime
from deployments.models import Placement, VersionUsageMinute
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from models_registry.kinds import (
    GenerationSpec,
    ModelKind,
    TritonSignature,
    TritonTensor,
    get_kind,
)
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.kind_support import register_for_test
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

KIND = "test-delta-streamer"
MAX_NEW_TOKENS_LIMIT = 64
SPEC = GenerationSpec(max_new_tokens_limit=MAX_NEW_TOKENS_LIMIT, max_stop_sequences=2)


def _signature(_artifact_dir: Path) -> TritonSignature:
    return TritonSignature(
        inputs=(TritonTensor("text_input", "TYPE_STRING", (1,)),),
        outputs=(
            TritonTensor("text_output", "TYPE_STRING", (1,)),
            TritonTensor("finish_reason", "TYPE_STRING", (1,)),
        ),
        decoupled=True,
    )


DELTA_STREAMER = ModelKind(
    name=KIND,
    description="Test only: streams ' <prompt>-<i>' pieces from a decoupled model.",
    input_schema={"type": "array", "minItems": 1, "items": {"type": "string"}},
    output_schema={"type": "array"},
    warmup_inputs=["warm"],
    runtime_module="tests.deployments.proxy.delta_streamer",
    triton_signature=_signature,
    generation=SPEC,
)


@pytest.fixture(autouse=True)
def delta_streamer_kind(monkeypatch):
    return register_for_test(monkeypatch, DELTA_STREAMER)


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    from deployments.proxy.metrics import METRICS

    METRICS.reset()
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()


def deploy_generator(tmp_path: Path, *, slug: str = "acme", name: str = "replies"):
    """A model of the test kind, packaged by the platform (a decoupled Triton model, as the
    kind's signature says) and deployed locally like any model."""
    from deployments.services import rollouts

    artifact = tmp_path / f"{slug}-{name}-artifact"
    artifact.mkdir(exist_ok=True)
    (artifact / "settings.json").write_text("{}")
    model = TenantModelFactory(tenant=TenantFactory(slug=slug), name=name, kind=KIND)
    packaged_version(model, artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    token = issue_token(tenant=model.tenant, name="product", actor="test").secret
    return model, token


def produced(model, prompt: str) -> int:
    """How many pieces the model generated for ``prompt`` (its own count, in its directory)."""
    version = model.active_version
    logs = list(runtime._unpacked_package(version).glob("**/produced.log"))
    if not logs:
        return 0
    return sum(1 for line in logs[0].read_text().splitlines() if line.split("\t")[0] == prompt)


def invoke_url(base: str, slug: str = "acme", name: str = "replies") -> str:
    return f"{base}/api/v1/tenants/{slug}/models/{name}/invoke"


def server_sent_events(lines) -> list[tuple[str, dict]]:
    """(event name, data) of each event in an SSE body's lines."""
    events, name, data = [], "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
    if data:
        events.append((name, json.loads("\n".join(data))))
    return events


def test_a_native_stream_sends_each_piece_then_done_and_is_counted(proxy_url, tmp_path):
    model, token = deploy_generator(tmp_path)

    with httpx.stream(
        "POST",
        invoke_url(proxy_url),
        json={"inputs": ["hi"], "parameters": {"max_new_tokens": 5, "seed": 1}, "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = server_sent_events(response.iter_lines())

    assert [name for name, _ in events] == ["token"] * 5 + ["done"]
    assert "".join(data["text"] for _, data in events[:-1]) == " hi-0 hi-1 hi-2 hi-3 hi-4"
    done = events[-1][1]
    assert done["finish_reason"] == "length" and done["tokens"] == 5
    assert done["model_version"] == 1
    # Each piece takes the model 50 ms: the first cannot arrive sooner.
    assert 50 <= done["time_to_first_token_ms"] < 5000

    # The request is counted once its last piece has gone out: a moment after the caller has it.
    def counted():
        usage.flush_usage()
        return VersionUsageMinute.objects.filter(version=model.active_version).first()

    row = wait_until(counted, 10, "the stream was never counted in the usage ledger")
    assert row.invocations == 1 and row.generations == 1 and row.generated_tokens == 5
    assert row.time_to_first_token_ms_sum >= 50
    assert row.generation_ms_sum >= 4 * 50 * 0.8  # four pauses between five pieces

    platform = issue_token(tenant=None, name="ops", actor="test").secret
    metrics = httpx.get(f"{proxy_url}/metrics", headers={"Authorization": f"Bearer {platform}"})
    series = 'code="200",model="acme.replies",model_version="1",protocol="native"'
    assert f"tenantml_proxy_requests_total{{{series}}} 1.0" in metrics.text


def test_accept_event_stream_asks_for_a_stream_too(proxy_url, tmp_path):
    _, token = deploy_generator(tmp_path)

    response = httpx.post(
        invoke_url(proxy_url),
        json={"inputs": ["yo"], "parameters": {"max_new_tokens": 2}},
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        timeout=60,
    )

    assert response.status_code == 200
    events = server_sent_events(response.text.split("\n"))
    assert [name for name, _ in events] == ["token", "token", "done"]


def test_without_stream_every_prompt_is_answered_whole_in_order(proxy_url, tmp_path):
    _, token = deploy_generator(tmp_path)

    response = httpx.post(
        invoke_url(proxy_url),
        json={"inputs": ["a", "b", "c"], "parameters": {"max_new_tokens": 3}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outputs"] == [
        {"text": f" {p}-0 {p}-1 {p}-2", "finish_reason": "length", "tokens": 3} for p in "abc"
    ]
    assert answer["model_version"] == 1 and answer["cold_start"] is False


def test_v2_generate_and_generate_stream_answer_with_the_public_name(proxy_url, tmp_path):
    _, token = deploy_generator(tmp_path)
    headers = {"Authorization": f"Bearer {token}"}
    request = {"text_input": "q", "parameters": {"max_new_tokens": 3, "temperature": 0.7}}

    whole = httpx.post(
        f"{proxy_url}/v2/models/acme.replies/generate", json=request, headers=headers, timeout=60
    )
    with httpx.stream(
        "POST",
        f"{proxy_url}/v2/models/acme.replies/generate_stream",
        json=request,
        headers=headers,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        events = [data for _, data in server_sent_events(response.iter_lines())]

    assert whole.status_code == 200, whole.text
    assert whole.json() == {
        "model_name": "acme.replies",
        "model_version": "1",
        "text_output": " q-0 q-1 q-2",
        "finish_reason": "length",
    }
    assert [e["text_output"] for e in events] == [" q-0", " q-1", " q-2", ""]
    assert [e["finish_reason"] for e in events] == ["", "", "", "length"]
    assert {(e["model_name"], e["model_version"]) for e in events} == {("acme.replies", "1")}
    server = httpx.get(f"{proxy_url}/v2").json()
    assert "generate" in server["extensions"]

    import tritonclient.http as httpclient

    # tritonclient has no generate call; its readiness and metadata calls work as for any model.
    client = httpclient.InferenceServerClient(url=proxy_url.removeprefix("http://"))
    assert client.is_model_ready("acme.replies", headers=headers)
    metadata = client.get_model_metadata("acme.replies", headers=headers)
    assert [t["name"] for t in metadata["inputs"]] == ["text_input"]
    assert {t["name"] for t in metadata["outputs"]} == {"text_output", "finish_reason"}


def test_a_model_error_after_the_stream_began_is_an_error_event(proxy_url, tmp_path):
    _, token = deploy_generator(tmp_path)

    response = httpx.post(
        invoke_url(proxy_url),
        json={"inputs": ["fail"], "parameters": {"max_new_tokens": 5}, "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )

    events = server_sent_events(response.text.split("\n"))
    assert [name for name, _ in events] == ["token", "error"]
    assert "the decoder broke" in events[-1][1]["message"]


def sagemaker_runtime(proxy_url: str, tenant):
    import boto3
    from botocore.config import Config

    issued = issue_token(tenant=tenant, name="aws-sdk", actor="test")
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=proxy_url,
        region_name="us-east-1",
        aws_access_key_id=issued.access_key_id,
        aws_secret_access_key=issued.secret_access_key,
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_boto3_response_stream_carries_the_answer_in_payload_parts(proxy_url, tmp_path):
    model, _ = deploy_generator(tmp_path)
    client = sagemaker_runtime(proxy_url, model.tenant)

    # The streaming call has no TargetModel: the model is an inference component of the tenant.
    response = client.invoke_endpoint_with_response_stream(
        EndpointName="acme",
        InferenceComponentName="replies",
        ContentType="application/json",
        Body=json.dumps({"inputs": "s", "parameters": {"max_new_tokens": 4}}),
    )
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]

    lines = [json.loads(line) for line in b"".join(parts).splitlines()]
    assert [line["token"]["text"] for line in lines[:-1]] == [" s-0", " s-1", " s-2", " s-3"]
    details = lines[-1]["details"]
    assert details["finish_reason"] == "length" and details["tokens"] == 4
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ContentType"] == "application/jsonlines"

    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        client.invoke_endpoint_with_response_stream(
            EndpointName="acme.replies",
            ContentType="application/json",
            Body=json.dumps({"inputs": "s", "parameters": {"max_new_tokens": 10**6}}),
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "parameters.max_new_tokens" in refused.value.response["Error"]["Message"]


def test_a_caller_closing_the_stream_stops_the_model_upstream(proxy_url, tmp_path):
    model, token = deploy_generator(tmp_path)

    with httpx.stream(
        "POST",
        invoke_url(proxy_url),
        json={"inputs": ["bye"], "parameters": {"max_new_tokens": 60}, "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ) as response:
        received = 0
        for line in response.iter_lines():
            if line.startswith("data:"):
                received += 1
                if received == 2:
                    break  # the caller goes away: leaving the block closes the connection

    wait_until(lambda: not core._OUTSTANDING, 10, "the proxy still counts the request in flight")
    time.sleep(1.0)  # twenty pieces' time: an unstopped model would be well on its way
    stopped_at = produced(model, "bye")
    time.sleep(0.5)
    assert produced(model, "bye") == stopped_at, "the model kept generating"
    assert stopped_at < 10, f"the model made {stopped_at} of 60 pieces after the caller left"
    gates = runtime.gates_for(*_address(model))
    name = model.active_version.triton_model_name
    wait_until(lambda: gates.in_flight(name) == 0, 10, "the stream never left the model's gate")


def test_a_caller_leaving_before_its_whole_answer_stops_the_model_too(proxy_url, tmp_path):
    model, token = deploy_generator(tmp_path)

    with pytest.raises(httpx.ReadTimeout):  # the caller gives up, closing its connection
        httpx.post(
            invoke_url(proxy_url),
            json={"inputs": ["gone"], "parameters": {"max_new_tokens": 60}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10, read=0.5),
        )

    wait_until(lambda: not core._OUTSTANDING, 10, "the proxy still counts the request in flight")
    time.sleep(1.0)
    stopped_at = produced(model, "gone")
    time.sleep(0.5)
    assert produced(model, "gone") == stopped_at, "the model kept generating"
    assert stopped_at < 20, f"the model made {stopped_at} of 60 pieces after the caller left"


def _address(model) -> tuple[str, int]:
    instance = Placement.objects.get(version=model.active_version).instance
    return instance.host, instance.port


def test_a_model_evicted_behind_the_proxys_back_is_loaded_before_it_streams(proxy_url, tmp_path):
    model, token = deploy_generator(tmp_path)
    placement = Placement.objects.get(version=model.active_version)
    runtime.client_for(placement.instance).unload_model(model.active_version.triton_model_name)

    response = httpx.post(
        invoke_url(proxy_url),
        json={"inputs": ["x"], "parameters": {"max_new_tokens": 2}, "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-tenantml-cold-start"] == "true"
    events = server_sent_events(response.text.split("\n"))
    assert events[-1] == (
        "done",
        {**events[-1][1], "finish_reason": "length", "tokens": 2},
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": ["x"], "parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens"),
        (
            {"inputs": ["x"], "parameters": {"max_new_tokens": MAX_NEW_TOKENS_LIMIT + 1}},
            "parameters.max_new_tokens",
        ),
        ({"inputs": ["x"], "parameters": {"max_new_tokens": 2.5}}, "parameters.max_new_tokens"),
        ({"inputs": ["x"], "parameters": {"temperature": -0.5}}, "parameters.temperature"),
        ({"inputs": ["x"], "parameters": {"temperature": "hot"}}, "parameters.temperature"),
        ({"inputs": ["x"], "parameters": {"top_p": 0}}, "parameters.top_p"),
        ({"inputs": ["x"], "parameters": {"stop": ["a", "b", "c"]}}, "parameters.stop"),
        ({"inputs": ["x"], "parameters": {"stop": ["ok", "y" * 65]}}, "parameters.stop[1]"),
        ({"inputs": ["x"], "parameters": {"seed": -3}}, "parameters.seed"),
        ({"inputs": ["x"], "parameters": {"beam_width": 4}}, "parameters.beam_width"),
        ({"inputs": ["x"], "parameters": [1]}, "parameters"),
        ({"inputs": ["x", "y"], "stream": True}, "inputs"),
        ({"inputs": ["x"], "stream": "yes"}, "stream"),
        ({"inputs": [""]}, "inputs[0]"),
        ({"inputs": [7]}, "inputs[0]"),
    ],
)
def test_bad_generation_requests_are_400_naming_the_field(proxy_url, tmp_path, body, field):
    _, token = deploy_generator(tmp_path)

    response = httpx.post(
        invoke_url(proxy_url), json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field
    # The message names what is wrong, never the value sent.
    for value in ("-0.5", "hot", "yyyy", "2.5", "-3"):
        if value in json.dumps(body):
            assert value not in error["message"]


def test_v2_generate_checks_its_body_too(proxy_url, tmp_path):
    _, token = deploy_generator(tmp_path)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{proxy_url}/v2/models/acme.replies/generate_stream"

    missing = httpx.post(url, json={"parameters": {}}, headers=headers)
    bounds = httpx.post(url, json={"text_input": "x", "parameters": {"top_p": 2}}, headers=headers)
    extra = httpx.post(url, json={"text_input": "x", "image": "..."}, headers=headers)

    infer = httpx.post(
        f"{proxy_url}/v2/models/acme.replies/infer",
        json={"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        headers=headers,
    )

    assert infer.status_code == 400 and "generate_stream" in infer.json()["error"]
    assert missing.status_code == 400 and "text_input" in missing.json()["error"]
    assert bounds.status_code == 400 and "parameters.top_p" in bounds.json()["error"]
    assert extra.status_code == 400 and "image" in extra.json()["error"]


def test_a_kind_that_does_not_generate_refuses_stream(proxy_url, intent_artifact):
    from tests.serving_fixtures import packaged_version

    assert get_kind("intent-classifier").generation is None
    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    packaged_version(model, intent_artifact, 1, promote=True)
    from deployments.services import rollouts

    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    token = issue_token(tenant=model.tenant, name="product", actor="test").secret
    headers = {"Authorization": f"Bearer {token}"}

    streamed = httpx.post(
        invoke_url(proxy_url, name="intents"),
        json={"inputs": ["Where is my refund?"], "stream": True},
        headers=headers,
        timeout=60,
    )
    v2 = httpx.post(
        f"{proxy_url}/v2/models/acme.intents/generate_stream",
        json={"text_input": "hi"},
        headers=headers,
        timeout=60,
    )
    whole = httpx.post(
        invoke_url(proxy_url, name="intents"),
        json={"inputs": ["Where is my refund?"]},
        headers=headers,
        timeout=60,
    )

    assert streamed.status_code == 400 and streamed.json()["error"]["field"] == "stream"
    assert v2.status_code == 400 and v2.json()["error"].startswith("stream:")
    assert whole.status_code == 200


def test_generation_routes_check_the_caller_and_the_rate_like_every_route(
    proxy_url, tmp_path, settings
):
    _, token = deploy_generator(tmp_path, slug="acme")
    _, other = deploy_generator(tmp_path, slug="globex")
    body = {"inputs": ["x"], "parameters": {"max_new_tokens": 1}, "stream": True}
    url = f"{proxy_url}/v2/models/acme.replies/generate_stream"

    nobody = httpx.post(invoke_url(proxy_url), json=body, timeout=60)
    theirs = httpx.post(
        invoke_url(proxy_url), json=body, headers={"Authorization": f"Bearer {other}"}
    )
    v2_theirs = httpx.post(
        url, json={"text_input": "x"}, headers={"Authorization": f"Bearer {other}"}
    )
    assert nobody.status_code == 401
    assert theirs.status_code == 404 and v2_theirs.status_code == 404

    settings.TENANTML_PROXY_RATE_LIMIT_RPS = 0.01  # one token per 100 s: no refill mid-test
    settings.TENANTML_PROXY_RATE_LIMIT_BURST = 1
    core.reset_rate_limits()
    headers = {"Authorization": f"Bearer {token}"}
    first = httpx.post(invoke_url(proxy_url), json=body, headers=headers, timeout=60)
    second = httpx.post(url, json={"text_input": "x"}, headers=headers, timeout=60)
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1


def test_the_rest_api_answers_a_generating_model_whole(tmp_path, api_client):
    model, token = deploy_generator(tmp_path)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    response = api_client.post(
        "/api/v1/tenants/acme/models/replies/invoke", {"inputs": ["r"]}, format="json"
    )

    assert response.status_code == 200, response.content
    # The model's own default length: eight pieces.
    assert response.json()["outputs"] == [
        {"text": "".join(f" r-{i}" for i in range(8)), "finish_reason": "length", "tokens": 8}
    ]


def test_a_model_error_mid_stream_reaches_boto3_and_v2_callers_as_the_streams_error(
    proxy_url, tmp_path
):
    from botocore.exceptions import EventStreamError

    model, token = deploy_generator(tmp_path)
    client = sagemaker_runtime(proxy_url, model.tenant)

    response = client.invoke_endpoint_with_response_stream(
        EndpointName="acme.replies",
        ContentType="application/json",
        Body=json.dumps({"inputs": "fail", "parameters": {"max_new_tokens": 5}}),
    )
    received = []
    with pytest.raises(EventStreamError) as broken:
        for event in response["Body"]:
            received.append(event["PayloadPart"]["Bytes"])
    v2 = httpx.post(
        f"{proxy_url}/v2/models/acme.replies/generate_stream",
        json={"text_input": "fail", "parameters": {"max_new_tokens": 5}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )

    assert [json.loads(part) for part in received] == [{"token": {"text": " fail-0"}}]
    assert broken.value.response["Error"]["Code"] == "ModelStreamError"
    assert "the decoder broke" in broken.value.response["Error"]["Message"]
    events = [data for _, data in server_sent_events(v2.text.split("\n"))]
    assert events[0]["text_output"] == " fail-0"
    assert "the decoder broke" in events[-1]["error"]
