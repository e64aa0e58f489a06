"""What a caller of the proxy sees around the serving details it should not need to know, over
real HTTP in front of real Triton processes: a batch larger than the model's batch size is
answered whole and in order on every protocol (and refused beyond the platform's limit, without
echoing it); a model whose first deployment is under way answers 503 with Retry-After on every
protocol until it is live; every answer names the model as callers do, never by its serving
name."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from deployments.models import Deployment
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from models_registry.triton_runtime.intent_classifier import Predictor as IntentPredictor
from tenants.services import issue_token
from tests.deployments.proxy.test_proxy import (
    call,
    deploy,
    invoke_url,
    kserve_request,
    sagemaker_runtime,
)
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

SUBJECTS = ["refund", "password reset", "parcel", "login", "late delivery", "duplicate charge"]
# 70 different tickets: three parts of at most 32 (the kind's batch size), the last one short.
TICKETS = [f"Ticket {n}: a question about my {SUBJECTS[n % len(SUBJECTS)]}." for n in range(70)]


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    from deployments.proxy.metrics import METRICS

    METRICS.reset()
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()


@pytest.fixture(scope="module")
def expected_labels(intent_artifact) -> list[str]:
    return [answer["label"] for answer in IntentPredictor(str(intent_artifact)).predict(TICKETS)]


def test_a_native_batch_larger_than_the_models_batch_size_is_answered_whole_and_in_order(
    proxy_url, intent_artifact, expected_labels
):
    _, token = deploy(intent_artifact)

    status, _, body = call(invoke_url(proxy_url), token=token, body={"inputs": TICKETS})

    assert status == 200, body
    answer = json.loads(body)
    assert [output["label"] for output in answer["outputs"]] == expected_labels
    assert answer["model_version"] == 1


def test_thirty_six_texts_through_the_rest_api_are_answered_in_order(
    intent_artifact, expected_labels, api_client
):
    _, token = deploy(intent_artifact)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    # Django's own invoke view (what the dashboard calls, and any WSGI deployment).
    response = api_client.post(
        "/api/v1/tenants/acme/models/intents/invoke", {"inputs": TICKETS[:36]}, format="json"
    )

    assert response.status_code == 200, response.content
    assert [output["label"] for output in response.json()["outputs"]] == expected_labels[:36]


def test_more_inputs_than_the_platform_takes_are_400_saying_how_many_without_echoing_them(
    proxy_url, intent_artifact, settings
):
    _, token = deploy(intent_artifact)
    settings.TENANTML_INVOKE_MAX_INPUTS = 64

    status, _, body = call(invoke_url(proxy_url), token=token, body={"inputs": TICKETS})

    error = json.loads(body)["error"]
    assert status == 400
    assert error["field"] == "inputs"
    assert "at most 64 inputs per request, got 70" in error["message"]
    assert b"Ticket" not in body


def test_an_input_that_is_not_a_text_is_named_by_position_without_echoing_it(
    proxy_url, intent_artifact
):
    _, token = deploy(intent_artifact)

    status, _, body = call(
        invoke_url(proxy_url), token=token, body={"inputs": [*TICKETS[:40], {"secret": 987654}]}
    )

    error = json.loads(body)["error"]
    assert status == 400 and error["field"] == "inputs[40]"
    assert b"987654" not in body and b"Ticket" not in body


def test_a_part_the_model_refuses_fails_the_whole_request_and_the_next_one_is_answered(
    proxy_url, intent_artifact, expected_labels
):
    _, token = deploy(intent_artifact)
    # A lone surrogate is a string to JSON Schema but not text Triton can decode: the second
    # part (texts 32-63) is refused while the others are answered.
    broken = [*TICKETS[:50], "\ud800", *TICKETS[51:]]

    status, _, body = call(
        invoke_url(proxy_url), token=token, body=json.dumps({"inputs": broken}).encode()
    )

    assert status == 400, body
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message"} and "outputs" not in json.loads(body)
    assert "acme.intents.v1" not in error["message"]
    status, _, body = call(invoke_url(proxy_url), token=token, body={"inputs": TICKETS})
    assert status == 200
    assert [output["label"] for output in json.loads(body)["outputs"]] == expected_labels


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_batches_larger_than_the_batch_size_are_answered_whole_with_public_names(
    proxy_url, intent_artifact, expected_labels, binary
):
    import tritonclient.http as httpclient

    _, token = deploy(intent_artifact)
    client = httpclient.InferenceServerClient(url=proxy_url.removeprefix("http://"))
    text = httpclient.InferInput("TEXT", [len(TICKETS), 1], "BYTES")
    text.set_data_from_numpy(
        np.array([[t.encode()] for t in TICKETS], dtype=object), binary_data=binary
    )
    outputs = [
        httpclient.InferRequestedOutput("LABEL", binary_data=binary),
        httpclient.InferRequestedOutput("SCORES", binary_data=binary),
    ]

    result = client.infer(
        "acme.intents", [text], outputs=outputs, headers={"Authorization": f"Bearer {token}"}
    )

    labels = [
        value.decode() if isinstance(value, bytes) else value
        for value in result.as_numpy("LABEL").reshape(-1)
    ]
    assert labels == expected_labels
    assert result.as_numpy("SCORES").shape == (70, 3)
    assert result.get_response()["model_name"] == "acme.intents"
    assert result.get_response()["model_version"] == "1"


def test_sagemaker_runtime_answers_carry_the_public_model_name_for_any_batch(
    proxy_url, intent_artifact, expected_labels
):
    model, _ = deploy(intent_artifact)
    issued = issue_token(tenant=model.tenant, name="aws-sdk", actor="test")
    runtime = sagemaker_runtime(proxy_url, issued.access_key_id, issued.secret_access_key)

    for texts in (TICKETS[:3], TICKETS):
        response = runtime.invoke_endpoint(
            EndpointName="acme",
            TargetModel="intents",
            ContentType="application/json",
            Body=kserve_request(texts),
        )
        raw = response["Body"].read()
        answer = json.loads(raw)
        assert answer["model_name"] == "acme.intents" and answer["model_version"] == "1"
        assert b".v1" not in raw  # Triton's serving name of the version appears nowhere
        label = next(o for o in answer["outputs"] if o["name"] == "LABEL")
        assert label["data"] == expected_labels[: len(texts)]
        assert response["ContentType"] == "application/json"


def test_a_tensor_batch_beyond_the_platforms_limit_is_400_naming_its_shape(
    proxy_url, intent_artifact, settings
):
    _, token = deploy(intent_artifact)
    settings.TENANTML_INVOKE_MAX_INPUTS = 64

    status, _, body = call(
        f"{proxy_url}/v2/models/acme.intents/infer", token=token, body=kserve_request(TICKETS)
    )

    assert status == 400
    assert "inputs[0].shape: at most 64 inputs per request, got 70" in json.loads(body)["error"]
    assert b"Ticket" not in body


def first_deployment_under_way(intent_artifact):
    """A model whose first rollout was requested and has not finished (no worker took it yet)."""
    from django.utils import timezone

    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    version = packaged_version(model, intent_artifact, 1, promote=True)
    deployment = Deployment.objects.create(
        model=model,
        target_version=version,
        status=Deployment.Status.ROLLING_OUT,
        status_reason="Queued: v1 (mme).",
        rollout_started_at=timezone.now(),
    )
    token = issue_token(tenant=model.tenant, name="product", actor="test")
    return model, deployment, token


def test_every_protocol_answers_503_with_retry_after_while_the_first_deployment_is_under_way(
    proxy_url, intent_artifact
):
    from botocore.exceptions import ClientError

    _, deployment, issued = first_deployment_under_way(intent_artifact)

    native = call(invoke_url(proxy_url), token=issued.secret, body={"inputs": ["hi"]})
    v2 = call(
        f"{proxy_url}/v2/models/acme.intents/infer",
        token=issued.secret,
        body=kserve_request(["hi"]),
    )
    runtime = sagemaker_runtime(proxy_url, issued.access_key_id, issued.secret_access_key)
    with pytest.raises(ClientError) as sagemaker:
        runtime.invoke_endpoint(
            EndpointName="acme",
            TargetModel="intents",
            ContentType="application/json",
            Body=kserve_request(["hi"]),
        )

    for status, headers, _ in (native, v2):
        assert status == 503 and 1 <= int(headers["Retry-After"]) <= 10
    assert json.loads(native[2])["error"]["code"] == "deployment_in_progress"
    assert "being deployed" in json.loads(v2[2])["error"]
    refused = sagemaker.value.response
    assert refused["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert 1 <= int(refused["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) <= 10


def test_a_caller_that_honours_retry_after_is_answered_once_the_rollout_is_live(
    proxy_url, intent_artifact
):
    import threading

    from django.db import connection

    from deployments.services import rollouts

    _, deployment, issued = first_deployment_under_way(intent_artifact)

    def worker() -> None:  # the rollout a worker would run, half a second later
        try:
            rollouts.run_rollout(deployment_id=deployment.pk)
        finally:
            connection.close()

    threading.Timer(0.5, worker).start()
    answers = []

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, headers, body = call(
            invoke_url(proxy_url), token=issued.secret, body={"inputs": TICKETS[:36]}
        )
        answers.append(status)
        if status != 503:
            break
        time.sleep(int(headers["Retry-After"]))

    assert answers[0] == 503 and answers[-1] == 200, answers
    assert set(answers[:-1]) == {503}
    assert len(json.loads(body)["outputs"]) == 36


def test_a_model_never_deployed_stays_409_and_learns_of_a_rollout_within_seconds(
    proxy_url, intent_artifact
):
    from django.utils import timezone

    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    version = packaged_version(model, intent_artifact, 1, promote=True)
    token = issue_token(tenant=model.tenant, name="product", actor="test").secret
    status, headers, body = call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})
    assert status == 409 and "Retry-After" not in headers
    assert json.loads(body)["error"]["code"] == "not_deployed"

    # Recorded behind the proxy's back (no change notice): the cached "not deployed" is short.
    Deployment.objects.create(
        model=model,
        target_version=version,
        status=Deployment.Status.ROLLING_OUT,
        rollout_started_at=timezone.now(),
    )

    wait_until(
        lambda: call(invoke_url(proxy_url), token=token, body={"inputs": ["hi"]})[0] == 503,
        5,
        "the proxy kept answering 409 for a model being deployed",
    )


def test_a_failed_first_deployment_is_409_with_its_reason(proxy_url, intent_artifact):
    from deployments.services import rollouts

    _, deployment, issued = first_deployment_under_way(intent_artifact)
    rollouts.fail_rollout(deployment, RuntimeError("the package is missing"), actor="test")
    ROUTES.invalidate(None)

    status, headers, body = call(invoke_url(proxy_url), token=issued.secret, body={"inputs": ["x"]})

    error = json.loads(body)["error"]
    assert status == 409 and error["code"] == "not_deployed"
    assert "the package is missing" in error["message"] and "Retry-After" not in headers
