"""A reply model on a real Triton: the package loads as a decoupled model, ``generate_stream``
streams the reply as deltas that join into what the numpy generator writes, and a client that
closes the stream early stops the generation."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.process import kill_triton, start_triton
from models_registry.dataset_files import stratified_split
from models_registry.demo.replies import generate_replies
from models_registry.kinds import get_kind
from models_registry.triton_packages import model_entries, render_config, write_model_directory
from models_registry.triton_runtime.reply_autocomplete import (
    TOKEN_DELAY_ENV,
    GenerationSettings,
    Generator,
)

MODEL = "tenant.replies.v1"
# Each token takes this long on the server, so a stream is still running when it is closed.
TOKEN_DELAY_MS = 40


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    rows = generate_replies("threadline", rows=240, seed=2)
    split = stratified_split(rows)
    out_dir = tmp_path_factory.mktemp("reply-artifact")
    get_kind("reply-autocomplete").train(
        train_rows=[rows[i] for i in split["train"]],
        validation_rows=[rows[i] for i in split["validation"]],
        out_dir=out_dir,
        hyperparameters={"epochs": 4, "d_model": 64, "max_tokens": 96, "threads": 1},
        cache_dir=out_dir,
        progress=lambda percent, message: None,
    )
    return out_dir


@pytest.fixture(scope="module")
def triton(tmp_path_factory, artifact):
    kind = get_kind("reply-autocomplete")
    repository = tmp_path_factory.mktemp("reply-repository")
    write_model_directory(
        entries=model_entries(kind=kind.name, artifact_dir=artifact),
        config=render_config(
            signature=kind.triton_signature(artifact), max_batch_size=kind.max_batch_size
        ),
        out_dir=repository / MODEL,
    )
    process = start_triton(
        workdir=tmp_path_factory.mktemp("triton-replies"),
        extra_env={TOKEN_DELAY_ENV: str(TOKEN_DELAY_MS)},
    )
    try:
        TritonMultiModelClient.for_process(process).load_model(MODEL, repository)
        yield process
    finally:
        kill_triton(process)  # its models need no orderly unload


def send(triton, prompt: str, parameters: dict) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(triton.host, triton.http_port, timeout=60)
    connection.request(
        "POST",
        f"/v2/models/{MODEL}/generate_stream",
        json.dumps({"text_input": prompt, "parameters": parameters}),
        {"Content-Type": "application/json"},
    )
    return connection.getresponse()


def open_stream(triton, prompt: str, parameters: dict) -> http.client.HTTPResponse:
    answer = send(triton, prompt, parameters)
    assert answer.status == 200, answer.read()[:500]
    assert answer.getheader("Content-Type").startswith("text/event-stream")
    return answer


def events(answer: http.client.HTTPResponse):
    """Each ``data:`` event of a Server-Sent Events answer, parsed, as it arrives."""
    while True:
        line = answer.readline()
        if not line:
            return
        if line.startswith(b"data:"):
            yield json.loads(line[len(b"data:") :])


PROMPT = "Hi, the jacket I ordered arrived with a torn sleeve. Can you help?"


@pytest.mark.parametrize(
    "parameters",
    [
        {"max_new_tokens": 40},
        {"max_new_tokens": 40, "stop": json.dumps(["\n\n"])},
        {"max_new_tokens": 40, "temperature": 0.9, "top_p": 0.9, "seed": 5},
    ],
)
def test_streamed_deltas_join_into_the_numpy_generators_reply(triton, artifact, parameters):
    received = list(events(open_stream(triton, PROMPT, parameters)))
    assert len(received) > 3, received
    assert all(event["finish_reason"] == "" for event in received[:-1])
    assert all(event["text_output"] for event in received[:-1])
    expected, finish = Generator(str(artifact)).generate(
        PROMPT,
        GenerationSettings(
            max_new_tokens=40,
            temperature=parameters.get("temperature", 0.0),
            top_p=parameters.get("top_p", 1.0),
            stop=tuple(json.loads(parameters.get("stop", "[]"))),
            seed=parameters.get("seed"),
        ),
    )
    assert "".join(event["text_output"] for event in received) == expected
    assert received[-1]["finish_reason"] == finish


def test_a_bad_parameter_is_answered_with_an_error_naming_it(triton):
    answer = send(triton, PROMPT, {"max_new_tokens": 100000})
    assert answer.status == 400
    (event,) = events(answer)
    assert "max_new_tokens" in event["error"] and "100000" not in event["error"]


def test_closing_the_stream_early_stops_the_generation(triton, artifact):
    parameters = {"max_new_tokens": 80}
    whole = list(Generator(str(artifact)).stream(PROMPT, GenerationSettings(max_new_tokens=80)))
    assert len(whole) > 10  # the full reply would keep the server busy for a while
    log_offset = triton.log_path.stat().st_size
    answer = open_stream(triton, PROMPT, parameters)
    stream = events(answer)
    first = [next(stream), next(stream)]
    assert all(event["finish_reason"] == "" for event in first)
    answer.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = triton.log_tail(since=log_offset)
        if "reply generation cancelled" in log:
            break
        time.sleep(0.1)
    cancelled = [line for line in log.splitlines() if "reply generation cancelled" in line]
    assert cancelled, log[-2000:]
    sent = int(cancelled[0].split("after ")[1].split(" ")[0])
    assert sent < len(whole) - 5
    # The instance is free again: the next stream is answered in full.
    again = list(events(open_stream(triton, PROMPT, {"max_new_tokens": 5})))
    assert again[-1]["finish_reason"] in ("stop", "length")
