"""A reply-autocomplete model from upload to rollback through the platform's HTTP API alone, on
a real Triton: a tenant and its token, a reply dataset, a training job, a deployment, a reply
streamed as Server-Sent Events on the native route and on the Open Inference Protocol's
``generate_stream``, a stream closed mid-way that stops the model upstream, a second version
promoted and rolled out, and a rollback that brings the first version's answers back.

Every call is an HTTP request to the platform's ASGI application under uvicorn, as a product
team's code makes it; the worker's tasks (training, rollouts) run inline as each request
commits. ``tritonclient`` (2.73) has no client for the generate extension (its HTTP client
speaks ``infer`` only, its gRPC streaming another protocol the proxy does not serve), so the v2
stream is read with httpx like any SSE client.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from deployments.models import Placement
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from models_registry.demo.replies import generate_replies
from models_registry.demo.tickets import to_csv
from models_registry.triton_runtime.reply_autocomplete import TOKEN_DELAY_ENV
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

# Each token takes the model this long on the server, so a stream's events are spread out in
# time and a stream closed after two of them is still generating.
TOKEN_DELAY_MS = 25
# Small and quick (about half a minute a version here) but a real fit: on these rows it beats
# its trigram baseline, so the quality gate promotes it.
HYPERPARAMETERS = {"epochs": 10, "d_model": 64, "layers": 2, "max_tokens": 64, "threads": 1}
PROMPT = "Hi, my driver took a much longer route than the app showed and I was charged more."
GREEDY = {"max_new_tokens": 64, "temperature": 0.0}


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    from deployments.proxy.metrics import METRICS

    METRICS.reset()
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()


@pytest.fixture
def slow_tokens(monkeypatch):
    """Triton servers started from here on inherit the per-token delay."""
    monkeypatch.setenv(TOKEN_DELAY_ENV, str(TOKEN_DELAY_MS))


def server_sent_events(response: httpx.Response) -> list[tuple[str, dict, float]]:
    """(event name, data, seconds since the request) of each event, as each arrives."""
    began = time.perf_counter()
    events, name = [], "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:]), time.perf_counter() - began))
            name = "message"
    return events


def expect(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def train(api: httpx.Client, base: str, hyperparameters: dict) -> dict:
    """Start a training job and read it back once it has finished."""
    started = expect(
        api.post(
            f"{base}/models/replies/training-jobs/",
            json={"dataset": "replies.csv", "hyperparameters": hyperparameters},
        ),
        202,
    )
    job = expect(api.get(f"/api/v1/training-jobs/{started['id']}/"), 200)
    assert job["status"] == "succeeded", job["failure_reason"]
    return job


def reply(api: httpx.Client, base: str) -> dict:
    """The whole greedy reply to PROMPT."""
    answer = expect(
        api.post(f"{base}/models/replies/invoke", json={"inputs": [PROMPT], "parameters": GREEDY}),
        200,
    )
    assert answer["outputs"][0]["finish_reason"] in ("stop", "length")
    return answer


def triton_log(model_version: int) -> str:
    """The log of the Triton server that holds the model's version ``model_version``."""
    from pathlib import Path

    placement = Placement.objects.select_related("instance").get(
        version__model__name="replies", version__number=model_version
    )
    return (Path(placement.instance.external_id) / "triton.log").read_text(errors="replace")


def test_a_reply_model_is_trained_deployed_streamed_cancelled_and_rolled_back_through_the_api(
    proxy_url, platform_token, slow_tokens
):
    operator = httpx.Client(
        base_url=proxy_url, headers={"Authorization": f"Bearer {platform_token}"}, timeout=300
    )
    expect(operator.post("/api/v1/tenants/", json={"slug": "replyco", "name": "Reply Co"}), 201)
    token = expect(operator.post("/api/v1/tenants/replyco/tokens/", json={"name": "app"}), 201)
    api = httpx.Client(
        base_url=proxy_url, headers={"Authorization": f"Bearer {token['token']}"}, timeout=300
    )
    base = "/api/v1/tenants/replyco"

    rows = generate_replies("zoomride", rows=320, seed=5)
    uploaded = expect(
        api.post(f"{base}/datasets/", files={"file": ("replies.csv", to_csv(rows), "text/csv")}),
        201,
    )
    assert uploaded["rows"] == 320 and uploaded["status"] == "valid"
    expect(api.post(f"{base}/models/", json={"name": "replies", "kind": "reply-autocomplete"}), 201)

    first = train(api, base, HYPERPARAMETERS)
    assert first["version"] == 1 and first["gate"]["outcome"] == "promoted"
    metrics = expect(api.get(f"{base}/models/replies/versions/"), 200)["results"][0]["metrics"]
    assert metrics["next_token_accuracy"] > metrics["ngram_next_token_accuracy"]

    deployed = expect(api.post(f"{base}/models/replies/deployments/", json={}), 202)
    assert deployed["target_version"] == 1 or deployed["live_version"] == 1
    deployment = expect(api.get(f"{base}/models/replies/deployments/"), 200)
    assert deployment["status"] == "live" and deployment["live_version"] == 1, deployment

    # The native route streams the reply: token events one by one as the model makes them,
    # then done; joined, they are the whole answer the same request gets without stream.
    with api.stream(
        "POST",
        f"{base}/models/replies/invoke",
        json={"inputs": [PROMPT], "parameters": GREEDY, "stream": True},
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = server_sent_events(response)
    names = [name for name, _, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"token"}, names
    tokens = [data["text"] for _, data, _ in events[:-1]]
    done = events[-1][1]
    assert len(tokens) >= 10 and done["tokens"] >= len(tokens)
    assert done["model_version"] == 1
    arrivals = [seconds for _, _, seconds in events[:-1]]
    assert arrivals == sorted(arrivals)
    # Arriving as generated: the last token comes at least the model's time for the others
    # after the first (a buffered answer would bring them all at once).
    assert arrivals[-1] - arrivals[0] >= 0.8 * (done["tokens"] - 1) * TOKEN_DELAY_MS / 1000
    streamed_text = "".join(tokens)
    whole = reply(api, base)
    assert whole["model_version"] == 1
    assert whole["outputs"][0] == {
        "text": streamed_text,
        "finish_reason": done["finish_reason"],
        "tokens": done["tokens"],
    }
    assert streamed_text.strip()

    # The Open Inference Protocol's generate_stream names the model as callers know it.
    with api.stream(
        "POST",
        "/v2/models/replyco.replies/generate_stream",
        json={"text_input": PROMPT, "parameters": GREEDY},
    ) as response:
        assert response.status_code == 200, response.read()
        v2_events = [data for _, data, _ in server_sent_events(response)]
    assert "".join(event["text_output"] for event in v2_events) == streamed_text
    assert v2_events[-1]["finish_reason"] == done["finish_reason"]
    assert {(e["model_name"], e["model_version"]) for e in v2_events} == {("replyco.replies", "1")}

    # A caller that leaves after two tokens stops the generation on the Triton server.
    log_before = triton_log(1).count("reply generation cancelled")
    with api.stream(
        "POST",
        f"{base}/models/replies/invoke",
        json={"inputs": [PROMPT], "parameters": GREEDY, "stream": True},
    ) as response:
        received = 0
        for line in response.iter_lines():
            if line.startswith("data:"):
                received += 1
                if received == 2:
                    break  # leaving the block closes the connection
    wait_until(
        lambda: triton_log(1).count("reply generation cancelled") > log_before,
        10,
        "the model never reported the generation cancelled",
    )
    cancelled = [
        line for line in triton_log(1).splitlines() if "reply generation cancelled" in line
    ][-1]
    sent = int(cancelled.split("after ")[1].split(" ")[0])
    assert sent < done["tokens"] - 5, f"{sent} of {done['tokens']} tokens sent before it stopped"
    # The model is free again: the next request is answered whole, as before.
    assert reply(api, base)["outputs"][0]["text"] == streamed_text

    # A second version (another seed) is promoted by the gate and rolled out where v1 serves.
    second = train(api, base, {**HYPERPARAMETERS, "seed": 1})
    assert second["version"] == 2 and second["gate"]["outcome"] == "promoted", second["gate"]
    deployment = expect(api.get(f"{base}/models/replies/deployments/"), 200)
    assert deployment["live_version"] == 2 and deployment["previous_version"] == 1, deployment
    assert reply(api, base)["model_version"] == 2

    # Rolling back serves the first version again, with its answers.
    expect(api.post(f"{base}/models/replies/deployments/rollback"), 202)
    deployment = expect(api.get(f"{base}/models/replies/deployments/"), 200)
    assert deployment["live_version"] == 1, deployment
    assert expect(api.get(f"{base}/models/replies/"), 200)["active_version"] == 1
    again = reply(api, base)
    assert again["model_version"] == 1
    assert again["outputs"][0]["text"] == streamed_text
