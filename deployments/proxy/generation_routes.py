"""The proxy's answers for models of a kind that generates text, in each protocol:

- native (``POST .../invoke``): ``{"inputs": [prompt, ...], "parameters": {...}}`` answered
  whole (``outputs`` in order), or, with ``"stream": true`` or ``Accept: text/event-stream`` and
  one prompt, as server-sent events: ``token`` (``{"text"}``), then ``done`` (finish reason,
  tokens, version, time to first token) or ``error``;
- Open Inference Protocol (``/v2/models/<tenant>.<model>/generate`` and ``generate_stream``):
  Triton's generate extension passed through with the public model name;
- SageMaker runtime (``/endpoints/<e>/invocations-response-stream``, what
  ``invoke_endpoint_with_response_stream`` calls): an AWS event stream whose ``PayloadPart``
  events carry JSON lines, one per generated piece of text and a last one with the details.

Errors before an answer starts are the protocol's usual error answers; after it started they are
the stream's own error event. When the caller goes away the request upstream is closed, which
stops the model. Every request is counted like the other routes' (metrics, usage), with its time
to first token and tokens for the dashboards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from deployments.proxy import core
from deployments.proxy.answers import (
    JSON,
    Request,
    answer_headers,
    finish_request,
    json_body,
    native_error,
    sagemaker_route,
    send_answer,
    send_sagemaker_error,
    validate_native_inputs,
)
from deployments.proxy.core import ProxyError
from deployments.proxy.generation import (
    AWS_EVENT_STREAM,
    EVENT_STREAM,
    Tally,
    check_prompt,
    model_stream_error,
    payload_part,
    server_sent_event,
    triton_body,
    triton_parameters,
)
from deployments.proxy.routing import Route
from deployments.usage import GenerationFigures
from models_registry.kinds import (
    GENERATE_TEXT_INPUT,
    GENERATE_TEXT_OUTPUT,
    GenerationSpec,
    get_kind,
)

JSON_LINES = "application/jsonlines"
# The status a request the caller abandoned before its answer is counted under (nginx's "client
# closed request"): in the metrics, never as the model's error.
CALLER_LEFT = 499

T = TypeVar("T")


def native_stream_asked(payload: dict, headers: dict[str, str]) -> bool:
    """Whether a native request asks for a streamed answer; 400 for a ``stream`` that is not
    true or false."""
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise ProxyError(400, "stream: must be true or false.", code="invalid", field="stream")
    return stream or EVENT_STREAM in headers.get("accept", "").lower()


def _spec(route: Route) -> GenerationSpec:
    spec = get_kind(route.kind).generation
    if spec is None:
        raise ProxyError(
            400,
            f"stream: {route.public_name} does not generate text; ask it for whole answers "
            "(invoke, /v2/.../infer, invocations).",
            code="invalid",
            field="stream",
        )
    return spec


def refuse_tensors_for_generation(route: Route, instead: str) -> None:
    """400 for a tensor request (v2 ``infer``, SageMaker ``invocations``) to a model that
    generates text, naming the call that answers it (Triton would refuse it less clearly)."""
    if get_kind(route.kind).generation is not None:
        raise ProxyError(
            400,
            f"inputs: {route.public_name} generates text; send its requests to {instead}.",
            code="invalid",
            field="inputs",
        )


async def _disconnected(request: Request) -> None:
    """Return once the caller has gone away (or the answer is complete)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _stream_answer(
    request: Request,
    send,
    *,
    content_type: str,
    headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
) -> bool:
    """Send a 200 answer whose body is ``chunks`` as they come; returns False when the caller
    went away before its end (the chunks are then abandoned, so the request upstream closes)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                *headers,
            ],
        }
    )

    async def pump() -> None:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            if not task.done():
                task.cancel()
        for task in (pumping, watching):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
    return pumping.done() and not pumping.cancelled() and pumping.exception() is None


@dataclass
class _Whole:
    """One prompt's answer run to its end: what it produced and the answer it stands for."""

    tally: Tally
    events: list[dict]
    answer: core.Answer


async def _generate_whole(route: Route, body: bytes, *, started: float) -> _Whole:
    """Run one generation request to its end (timed from ``started``)."""
    tally = Tally(started=started)
    events = []
    generation = await core.open_generation(route, body)
    try:
        async for event in generation.events():
            _raise_model_error(route, event)
            tally.add(event)
            events.append(event)
    finally:
        generation.close()
    return _Whole(tally=tally, events=events, answer=_answer(generation))


class CallerLeft(Exception):
    """The caller went away before its whole answer was ready."""


async def _unless_caller_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; if the caller goes away first, ``work`` is cancelled (closing its
    requests upstream, which stops the model) and CallerLeft is raised."""
    working = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({working, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (working, watching):
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    if working.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            await working
        raise CallerLeft
    return working.result()


def _raise_model_error(route: Route, event: dict) -> None:
    if "error" in event:
        raise ProxyError(
            502,
            core.public_names(route, f"The model failed the request: {event['error']!s:.500}"),
            code="upstream",
        )


def _answer(generation: core.Generation) -> core.Answer:
    return core.Answer(200, EVENT_STREAM, b"", generation.cold_start, generation.copy)


@dataclass
class _Outcome:
    """The status a streamed answer is counted under: 200 unless the model failed in it."""

    status: int = 200


async def _stream_then_finish(
    request: Request,
    send,
    route: Route,
    generation: core.Generation,
    chunks: AsyncIterator[bytes],
    *,
    protocol: str,
    started: float,
    tally: Tally,
    outcome: _Outcome,
    content_type: str = EVENT_STREAM,
    headers: Sequence[tuple[bytes, bytes]] = (),
    exchange: Callable[[], tuple[object, object]] | None = None,
) -> None:
    """Stream ``chunks`` to the caller, close the generation whatever happens, then count the
    request (a caller that closes the stream early still got an answer: it counts as one)."""
    try:
        await _stream_answer(
            request,
            send,
            content_type=content_type,
            headers=[*headers, *answer_headers(route, generation)],
            chunks=chunks,
        )
    finally:
        generation.close()
    finish_request(
        route,
        _answer(generation),
        started,
        protocol,
        outcome.status,
        tally.figures(),
        exchange=exchange() if exchange is not None else None,
    )


# --- Native ------------------------------------------------------------------------------------


async def native_generation(
    request: Request, send, route: Route, payload: dict, streaming: bool, started: float
) -> None:
    """A native request to a generating model (the caller and route are checked; errors before
    the answer starts are raised as ProxyError for the caller's handler)."""
    spec = _spec(route)
    inputs = payload["inputs"]
    validate_native_inputs(route, inputs)
    prompts = [check_prompt(prompt, where=f"inputs[{i}]") for i, prompt in enumerate(inputs)]
    if not prompts:
        raise ProxyError(400, "inputs: needs a prompt.", code="invalid", field="inputs")
    parameters = triton_parameters(spec, payload.get("parameters"))
    if streaming and len(prompts) != 1:
        raise ProxyError(
            400,
            f"inputs: a streamed answer is for one prompt; this request has {len(prompts)}.",
            code="invalid",
            field="inputs",
        )
    if not streaming:
        await _native_whole(request, send, route, prompts, parameters, started)
        return
    tally = Tally(started=started)
    generation = await core.open_generation(route, triton_body(prompts[0], parameters))
    outcome = _Outcome()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for event in generation.events():
                _raise_model_error(route, event)
                text = tally.add(event)
                if text:
                    yield server_sent_event({"text": text}, event="token")
            yield server_sent_event(tally.summary(route.version_number), event="done")
        except ProxyError as error:
            outcome.status = error.status
            yield server_sent_event(native_error(error)["error"], event="error")

    await _stream_then_finish(
        request, send, route, generation, chunks(),
        protocol="native", started=started, tally=tally, outcome=outcome,
        exchange=lambda: (prompts, [{"text": tally.text}]),
    )  # fmt: skip


async def _native_whole(
    request: Request, send, route: Route, prompts: list[str], parameters: dict, started: float
) -> None:
    async def answer_all() -> list[_Whole]:
        answers = []
        for index, prompt in enumerate(prompts):
            # The first answer is timed from the request's arrival (its time to first token).
            begun = started if index == 0 else time.perf_counter()
            answers.append(
                await _generate_whole(route, triton_body(prompt, parameters), started=begun)
            )
        return answers

    try:
        answers = await _unless_caller_leaves(request, answer_all())
    except CallerLeft:
        finish_request(route, None, started, "native", CALLER_LEFT)
        return
    figures = [whole.tally.figures() for whole in answers]
    produced = [f for f in figures if f is not None]
    generated = None
    if figures[0] is not None:
        generated = GenerationFigures(
            time_to_first_token_ms=figures[0].time_to_first_token_ms,
            tokens=sum(f.tokens for f in produced),
            generation_ms=sum(f.generation_ms for f in produced),
        )
    cold_start = any(whole.answer.cold_start for whole in answers)
    answer = dataclasses.replace(answers[0].answer, cold_start=cold_start)
    outputs = [
        {
            "text": whole.tally.text,
            "finish_reason": whole.tally.finished_because,
            "tokens": whole.tally.tokens,
        }
        for whole in answers
    ]
    finish_request(route, answer, started, "native", 200, generated, exchange=(prompts, outputs))
    await send_answer(
        send,
        200,
        json_body(
            {"outputs": outputs, "model_version": route.version_number, "cold_start": cold_start}
        ),
        JSON,
    )


# --- Open Inference Protocol ---------------------------------------------------------------------


def _v2_request(spec: GenerationSpec, body: bytes) -> bytes:
    """A generate extension request checked and rebuilt (only the prompt and parameters)."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ProxyError(400, f"The body is not JSON: {exc}", code="invalid", field="body") from exc
    if not isinstance(payload, dict):
        raise ProxyError(400, "The request must be a JSON object.", code="invalid", field="body")
    unknown = sorted(set(payload) - {GENERATE_TEXT_INPUT, "parameters"})
    if unknown:
        name = unknown[0][:40]
        raise ProxyError(
            400,
            f"{name}: not an input of this model, which takes {GENERATE_TEXT_INPUT} and "
            "parameters.",
            code="invalid",
            field=name,
        )
    if GENERATE_TEXT_INPUT not in payload:
        raise ProxyError(
            400,
            f"{GENERATE_TEXT_INPUT}: this field is required.",
            code="invalid",
            field=GENERATE_TEXT_INPUT,
        )
    prompt = check_prompt(payload[GENERATE_TEXT_INPUT], where=GENERATE_TEXT_INPUT)
    return triton_body(prompt, triton_parameters(spec, payload.get("parameters")))


def _public_event(route: Route, event: dict) -> dict:
    if "error" in event:
        return {"error": core.public_names(route, str(event["error"]))}
    return {
        **event,
        "model_name": route.public_name,
        "model_version": str(route.version_number),
    }


async def v2_generation(
    request: Request, send, route: Route, streaming: bool, started: float
) -> None:
    """``/generate`` (the whole answer, one JSON object) or ``/generate_stream`` (Triton's
    events); errors before the answer starts are raised for the caller's handler."""
    if request.method != "POST":
        raise ProxyError(405, "Use POST.", code="method_not_allowed")
    spec = _spec(route)
    core.check_rate_limit(route)
    body = _v2_request(spec, await request.body())
    if not streaming:
        try:
            whole = await _unless_caller_leaves(
                request, _generate_whole(route, body, started=started)
            )
        except CallerLeft:
            finish_request(route, None, started, "v2", CALLER_LEFT)
            return
        last = dict(whole.events[-1]) if whole.events else {}
        last[GENERATE_TEXT_OUTPUT] = whole.tally.text
        finish_request(route, whole.answer, started, "v2", 200, whole.tally.figures())
        headers = answer_headers(route, whole.answer)
        await send_answer(send, 200, json_body(_public_event(route, last)), JSON, headers)
        return
    tally = Tally(started=started)
    generation = await core.open_generation(route, body)
    outcome = _Outcome()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for event in generation.events():
                if "error" in event:
                    outcome.status = 502
                tally.add(event)
                yield server_sent_event(_public_event(route, event))
        except ProxyError as error:
            outcome.status = error.status
            yield server_sent_event({"error": error.message})

    await _stream_then_finish(
        request, send, route, generation, chunks(),
        protocol="v2", started=started, tally=tally, outcome=outcome,
    )  # fmt: skip


# --- SageMaker runtime ---------------------------------------------------------------------------


def _sagemaker_prompt(spec: GenerationSpec, body: bytes) -> bytes:
    """``{"inputs": "<prompt>" | ["<prompt>"], "parameters": {...}}`` as Triton's request."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ProxyError(400, f"The body is not JSON: {exc}", code="invalid", field="Body") from exc
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ProxyError(400, "inputs: this field is required.", code="invalid", field="inputs")
    unknown = sorted(set(payload) - {"inputs", "parameters", "stream"})
    if unknown:
        name = unknown[0][:40]
        raise ProxyError(
            400, f"{name}: not a field of a generation request.", code="invalid", field=name
        )
    inputs = payload["inputs"]
    if isinstance(inputs, list):
        if len(inputs) != 1:
            raise ProxyError(
                400,
                "inputs: a streamed answer is for one prompt.",
                code="invalid",
                field="inputs",
            )
        prompt = check_prompt(inputs[0], where="inputs[0]")
    else:
        prompt = check_prompt(inputs, where="inputs")
    return triton_body(prompt, triton_parameters(spec, payload.get("parameters")))


def _json_line(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


async def sagemaker_invoke_stream(request: Request, send, endpoint: str) -> None:
    """``InvokeEndpointWithResponseStream`` for a generating model: an AWS event stream of
    ``PayloadPart`` events, each one JSON line (``{"token": {"text"}}``, then ``{"details":
    {...}}``), or a ``ModelStreamError`` event when the model fails after the answer began."""
    started = time.perf_counter()
    route = generation = None
    try:
        if request.method != "POST":
            raise ProxyError(405, "Use POST.", code="method_not_allowed")
        body = await request.body()
        route = await sagemaker_route(request, endpoint, body, streaming=True)
        core.check_rate_limit(route)
        spec = _spec(route)
        triton_request = _sagemaker_prompt(spec, body)
        generation = await core.open_generation(route, triton_request)
    except ProxyError as error:
        finish_request(route, None, started, "sagemaker", error.status)
        await send_sagemaker_error(send, error)
        return
    tally = Tally(started=started)
    outcome = _Outcome()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for event in generation.events():
                _raise_model_error(route, event)
                text = tally.add(event)
                if text:
                    yield payload_part(_json_line({"token": {"text": text}}))
            yield payload_part(_json_line({"details": tally.summary(route.version_number)}))
        except ProxyError as error:
            outcome.status = error.status
            yield model_stream_error(error.message, error_code="StreamBroken")

    await _stream_then_finish(
        request, send, route, generation, chunks(),
        protocol="sagemaker", started=started, tally=tally, outcome=outcome,
        content_type=AWS_EVENT_STREAM,
        headers=[
            (b"x-amzn-invoked-production-variant", b"AllTraffic"),
            (b"x-amzn-sagemaker-content-type", JSON_LINES.encode()),
        ],
    )  # fmt: skip
