"""Request capture through the real proxy and Triton: while the artifact store holds the capture
writer, callers keep getting their answers; once it lets go, every sampled request (native and
Open Inference Protocol) lands under the model's day with the answer it was given."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest

from deployments.models import Deployment
from deployments.proxy import capture, core
from deployments.proxy.routing import ROUTES
from models_registry import artifacts
from tests.deployments.proxy.test_proxy import TICKETS, call, deploy, invoke_url
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]


def test_a_store_that_hangs_holds_no_answer_and_every_sampled_request_lands(
    proxy_url, intent_artifact, monkeypatch, settings
):
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    model, token = deploy(intent_artifact)
    Deployment.objects.filter(model=model).update(capture_enabled=True, capture_sample_percent=100)
    real_put = artifacts.put_bytes
    entered, release = threading.Event(), threading.Event()
    stored = []

    def hanging_put(key, content):
        entered.set()
        release.wait(timeout=60)
        stored.append(key)
        return real_put(key, content)

    monkeypatch.setattr(artifacts, "put_bytes", hanging_put)
    settings.TENANTML_CAPTURE_FLUSH_INTERVAL_S = 0.02
    try:
        first = call(invoke_url(proxy_url), token=token, body={"inputs": TICKETS[:1]})
        assert first[0] == 200
        assert entered.wait(timeout=20), "the capture writer never reached the store"

        answers = [
            call(invoke_url(proxy_url), token=token, body={"inputs": [ticket]})
            for ticket in TICKETS * 3
        ]
        tensors = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1]}]}
        tensors["inputs"][0]["data"] = [TICKETS[0]]
        v2 = call(f"{proxy_url}/v2/models/acme.intents/infer", token=token, body=tensors)

        # Every answer came back while the store still held the writer's first part.
        assert [status for status, _, _ in answers] == [200] * 9 and v2[0] == 200
        assert not stored
        release.set()
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        prefix = f"capture/acme/intents/{day}"

        def records() -> list[dict]:
            return [
                json.loads(line)
                for key in artifacts.list_keys(prefix)
                for line in artifacts.read_bytes(artifacts.uri_for(key)).splitlines()
            ]

        wait_until(lambda: len(records()) == 11, 20, "11 captured requests")
    finally:
        release.set()
        capture.stop_writer()

    captured = records()
    assert sorted(r["protocol"] for r in captured) == ["native"] * 10 + ["v2"]
    assert {r["model_version"] for r in captured} == {1}
    assert all(r["latency_ms"] > 0 and isinstance(r["cold_start"], bool) for r in captured)
    given = {
        ticket: json.loads(body)["outputs"][0]["label"]
        for (_, _, body), ticket in zip(answers, TICKETS * 3, strict=True)
    }
    for record in captured:
        if record["protocol"] == "native" and record["inputs"][0] in given:
            assert record["outputs"][0]["label"] == given[record["inputs"][0]]
    tensor = next(r for r in captured if r["protocol"] == "v2")
    assert tensor["inputs"][0]["data"] == [TICKETS[0]]
    labels = next(o for o in tensor["outputs"] if o["name"] == "LABEL")["data"]
    assert labels == [given[TICKETS[0]]]
