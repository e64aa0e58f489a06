"""The ASGI application: the proxy's three protocols in front of Django (see ``__init__``).

Each protocol parses its request, asks the routing core for the caller and the route, checks
the request against the model kind's tensors and the platform's input limit (400 naming the
field, never echoing it) and the size limit (413), forwards the body to the loaded copy — in
parts of the model's batch size when larger (``batching``) — and translates the answer back,
with the model's public name and version. Errors are answered in the protocol's own error
format, with Retry-After on 429 and 503, and never as a 500. What the handlers share is in
``answers``; models of a kind that generates text are answered by ``generation_routes``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from urllib.parse import unquote

from django.conf import settings

from config.errors import DomainError
from deployments.backends.base import in_thread
from deployments.proxy import core
from deployments.proxy.answers import (
    JSON,
    Request,
    answer_headers,
    authorize_bearer,
    finish_request,
    json_body,
    native_error,
    sagemaker_route,
    send_answer,
    send_sagemaker_error,
    validate_native_inputs,
)
from deployments.proxy.batching import (
    TensorFramingError,
    merge_tensor_answers,
    split_list,
    split_tensor_request,
    too_many_inputs,
)
from deployments.proxy.core import ProxyError
from deployments.proxy.generation_routes import (
    native_generation,
    native_stream_asked,
    refuse_tensors_for_generation,
    sagemaker_invoke_stream,
    v2_generation,
)
from deployments.proxy.invalidation import SUBSCRIBER
from deployments.proxy.metrics import exposition
from deployments.proxy.routing import Route

logger = logging.getLogger(__name__)

SAGEMAKER_BINARY = "application/vnd.sagemaker-triton.binary+json;json-header-size="
HEADER_LENGTH = "inference-header-content-length"
DEFAULT_INPUTS = [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]

NATIVE_INVOKE = re.compile(
    r"^/api/v1/tenants/(?P<tenant>[-\w]+)/models/(?P<model>[-\w]+)/invoke/?$"
)
V2_MODEL = re.compile(
    r"^/v2/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[^/]+))?"
    r"(?P<action>/infer|/ready|/generate|/generate_stream)?/?$"
)
SAGEMAKER_INVOKE = re.compile(
    r"^/endpoints/(?P<endpoint>[^/]+)/(?P<action>invocations|invocations-response-stream)/?$"
)


# --- Validation against the kind's tensors -------------------------------------------------


def _max_batch(route: Route) -> int:
    from models_registry.kinds import get_kind

    return get_kind(route.kind).max_batch_size


def validate_tensor_header(route: Route, header: object) -> None:
    """An Open Inference Protocol request header against the version's tensors."""
    if not isinstance(header, dict):
        raise ProxyError(400, "The request must be a JSON object.", code="invalid", field="body")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProxyError(
            400, "inputs: a non-empty list of tensors is required.", code="invalid", field="inputs"
        )
    expected = {t["name"]: t for t in (route.signature.get("inputs") or DEFAULT_INPUTS)}
    seen = set()
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            raise ProxyError(400, f"{where}: must be an object.", code="invalid", field=where)
        name = tensor.get("name")
        if not isinstance(name, str) or name not in expected:
            raise ProxyError(
                400,
                f"{where}.name: not an input of this model, which takes "
                f"{', '.join(sorted(expected))}.",
                code="invalid",
                field=f"{where}.name",
            )
        want = expected[name]
        if tensor.get("datatype") != want["datatype"]:
            raise ProxyError(
                400,
                f"{where}.datatype: {name} is {want['datatype']}.",
                code="invalid",
                field=f"{where}.datatype",
            )
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != len(want["shape"])
            or not all(isinstance(size, int) and size >= 1 for size in shape)
            or any(
                w != -1 and size != w for size, w in zip(shape[1:], want["shape"][1:], strict=True)
            )
        ):
            raise ProxyError(
                400,
                f"{where}.shape: must match {want['shape']} (-1 is any size of at least 1).",
                code="invalid",
                field=f"{where}.shape",
            )
        refusal = too_many_inputs(count=shape[0], limit=settings.TENANTML_INVOKE_MAX_INPUTS)
        if refusal:
            raise ProxyError(
                400, f"{where}.shape: {refusal}", code="invalid", field=f"{where}.shape"
            )
        if shape[0] != inputs[0]["shape"][0]:
            raise ProxyError(
                400,
                f"{where}.shape: {shape[0]} rows where inputs[0] has {inputs[0]['shape'][0]}; "
                "every input needs the same number of rows.",
                code="invalid",
                field=f"{where}.shape",
            )
        if "data" in tensor and _count(tensor["data"]) != math.prod(shape):
            raise ProxyError(
                400,
                f"{where}.data: {_count(tensor['data'])} values for shape {shape}.",
                code="invalid",
                field=f"{where}.data",
            )
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise ProxyError(
            400, f"inputs: missing {', '.join(missing)}.", code="invalid", field="inputs"
        )
    known_outputs = {t["name"] for t in route.signature.get("outputs") or []}
    for index, output in enumerate(header.get("outputs") or []):
        name = output.get("name") if isinstance(output, dict) else None
        if known_outputs and name not in known_outputs:
            raise ProxyError(
                400,
                f"outputs[{index}].name: not an output of this model, which has "
                f"{', '.join(sorted(known_outputs))}.",
                code="invalid",
                field=f"outputs[{index}].name",
            )


def _count(data: object) -> int:
    if isinstance(data, list):
        return sum(_count(item) for item in data)
    return 1


def _split_binary(body: bytes, header_length: str | None) -> tuple[dict, int | None]:
    """The JSON header of a request (and its length when binary tensors follow it)."""
    try:
        if header_length is None:
            return json.loads(body), None
        length = int(header_length)
        if not 0 < length <= len(body):
            raise ValueError(f"header length {length} is outside the {len(body)}-byte body")
        return json.loads(body[:length]), length
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: a body of nested brackets exhausts the decoder; still the caller's.
        raise ProxyError(
            400, f"The request is not valid JSON: {exc}", code="invalid", field="body"
        ) from exc


def _answer_header_length(content_type: str) -> int | None:
    """The JSON header's length in an answer of Triton's binary content type (else None)."""
    if (
        content_type.startswith(SAGEMAKER_BINARY.split(";")[0])
        and "json-header-size=" in content_type
    ):
        return int(content_type.rsplit("=", 1)[1])
    return None


def _public_answer(route: Route, header: dict, binary: bytes | None) -> tuple[bytes, int | None]:
    """An answer header with the public model name and version (never Triton's serving name),
    followed by its binary tensors: the body and, when binary, the header's length."""
    header["model_name"] = route.public_name
    header["model_version"] = str(route.version_number)
    rewritten = json_body(header)
    if binary is None:
        return rewritten, None
    return rewritten + binary, len(rewritten)


def _rewrite_answer(route: Route, data: bytes, content_type: str) -> tuple[bytes, int | None]:
    """Triton's answer with the public model name and version; binary tensors stay as they are."""
    length = _answer_header_length(content_type)
    try:
        header = json.loads(data if length is None else data[:length])
    except ValueError:
        return data, length
    return _public_answer(route, header, None if length is None else data[length:])


async def _forward_tensors(
    route: Route, body: bytes, header: dict, length: int | None
) -> tuple[core.Answer, bytes, int | None]:
    """Forward a validated tensor request (split at the model's batch size when larger) and
    return the answer, its body with public names, and its header length when binary."""
    max_batch = _max_batch(route)
    if header["inputs"][0]["shape"][0] <= max_batch:
        content_type = JSON if length is None else f"{SAGEMAKER_BINARY}{length}"
        answer = await core.forward(route, body, content_type)
        data, answer_length = _rewrite_answer(route, answer.body, answer.content_type)
        return answer, data, answer_length
    try:
        pieces = split_tensor_request(
            header, b"" if length is None else body[length:], rows_per_part=max_batch
        )
    except TensorFramingError as exc:
        raise ProxyError(400, str(exc), code="invalid", field=exc.field) from exc
    parts = []
    for piece_header, piece_binary in pieces:
        encoded = json_body(piece_header)
        if length is None:
            parts.append((encoded, JSON))
        else:
            parts.append((encoded + piece_binary, f"{SAGEMAKER_BINARY}{len(encoded)}"))
    answers = await core.forward_parts(route, parts)
    decoded, binary_answer = [], False
    for answer in answers:
        answer_length = _answer_header_length(answer.content_type)
        binary_answer = binary_answer or answer_length is not None
        try:
            part = json.loads(answer.body if answer_length is None else answer.body[:answer_length])
        except ValueError as exc:
            raise ProxyError(
                502,
                "The model's server answered a part with something that is not JSON.",
                code="upstream",
            ) from exc
        decoded.append((part, b"" if answer_length is None else answer.body[answer_length:]))
    merged, merged_binary = merge_tensor_answers(decoded)
    data, answer_length = _public_answer(route, merged, merged_binary if binary_answer else None)
    return _joined(answers), data, answer_length


def _captured(data: bytes, answer_length: int | None) -> bytes:
    """A tensor answer's JSON header as request capture keeps it (binary tensors left out)."""
    return data if answer_length is None else data[:answer_length]


def _joined(answers: list[core.Answer]) -> core.Answer:
    """The answer that stands for a split request's parts (cold if any part was)."""
    return dataclasses.replace(answers[0], cold_start=any(a.cold_start for a in answers))


# --- Handlers --------------------------------------------------------------------------------


async def native_invoke(request: Request, send, tenant: str, model: str) -> None:
    started = time.perf_counter()
    route = answer = None
    try:
        if request.method != "POST":
            raise ProxyError(405, "Use POST.", code="method_not_allowed")
        principal = await authorize_bearer(request)
        body = await request.body()
        route = await core.route_for(principal, tenant, model)
        core.check_rate_limit(route)
        route = core.serving_route(route, request.headers)
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise ProxyError(400, f"The body is not JSON: {exc}", code="invalid") from exc
        if not isinstance(payload, dict) or "inputs" not in payload:
            raise ProxyError(400, "inputs: this field is required.", code="invalid", field="inputs")
        from models_registry.kinds import get_kind

        kind = get_kind(route.kind)
        streaming = native_stream_asked(payload, request.headers)
        if kind.generation is not None:
            await native_generation(request, send, route, payload, streaming, started)
            return
        if streaming:
            raise ProxyError(
                400,
                f"stream: {route.public_name} answers each input whole; only models of a kind "
                "that generates text stream their answers.",
                code="invalid",
                field="stream",
            )
        validate_native_inputs(route, payload["inputs"])
        answers = await core.forward_parts(
            route,
            [
                (json_body(kind.encode_request(list(part))), JSON)
                for part in split_list(payload["inputs"], kind.max_batch_size)
            ],
        )
        outputs = [
            output for part in answers for output in kind.decode_response(json.loads(part.body))
        ]
        answer = _joined(answers)
    except ProxyError as error:
        finish_request(route, None, started, "native", error.status)
        await send_answer(send, error.status, json_body(native_error(error)), JSON, error.headers())
        return
    finish_request(route, answer, started, "native", 200, exchange=(payload["inputs"], outputs))
    await send_answer(
        send,
        200,
        json_body(
            {
                "outputs": outputs,
                "model_version": route.version_number,
                "cold_start": answer.cold_start,
            }
        ),
        JSON,
    )


def _split_v2_name(name: str) -> tuple[str, str]:
    tenant, dot, model = unquote(name).partition(".")
    if not dot or not tenant or not model:
        raise ProxyError(404, "Model names on this route are <tenant>.<model>.", code="not_found")
    return tenant, model


async def v2_model(request: Request, send, name: str, version: str | None, action: str) -> None:
    started = time.perf_counter()
    route = answer = None
    try:
        principal = await authorize_bearer(request)
        tenant, model = _split_v2_name(name)
        route = await core.route_for(principal, tenant, model)
        if version is not None and version != str(route.version_number):
            raise ProxyError(
                404,
                f"Version {version} of {route.public_name} is not live; "
                f"v{route.version_number} is.",
                code="not_found",
            )
        if action == "/ready":
            await send_answer(send, 200 if route.copies else 400, b"", "text/plain")
            return
        if action in ("/generate", "/generate_stream"):
            await v2_generation(request, send, route, action == "/generate_stream", started)
            return
        if action != "/infer":
            await send_answer(send, 200, json_body(_metadata(route)), JSON)
            return
        if request.method != "POST":
            raise ProxyError(405, "Use POST.", code="method_not_allowed")
        refuse_tensors_for_generation(route, f"/v2/models/{route.public_name}/generate_stream")
        core.check_rate_limit(route)
        if version is None:  # a caller naming the live version is answered by it
            route = core.serving_route(route, request.headers)
        body = await request.body()
        header, length = _split_binary(body, request.headers.get(HEADER_LENGTH))
        validate_tensor_header(route, header)
        answer, data, answer_length = await _forward_tensors(route, body, header, length)
    except ProxyError as error:
        finish_request(route, None, started, "v2", error.status)
        await send_answer(
            send, error.status, json_body({"error": error.message}), JSON, error.headers()
        )
        return
    finish_request(
        route,
        answer,
        started,
        "v2",
        200,
        exchange=(header["inputs"], _captured(data, answer_length)),
    )
    headers = answer_headers(route, answer)
    if answer_length is not None:
        headers.append((HEADER_LENGTH.encode(), str(answer_length).encode()))
        await send_answer(send, 200, data, "application/octet-stream", headers)
    else:
        await send_answer(send, 200, data, JSON, headers)


def _metadata(route: Route) -> dict:
    return {
        "name": route.public_name,
        "versions": [str(route.version_number)],
        "platform": "python",
        "inputs": route.signature.get("inputs") or DEFAULT_INPUTS,
        "outputs": route.signature.get("outputs") or [],
    }


async def sagemaker_invoke(request: Request, send, endpoint: str) -> None:
    started = time.perf_counter()
    route = answer = None
    try:
        if request.method != "POST":
            raise ProxyError(405, "Use POST.", code="method_not_allowed")
        body = await request.body()
        route = await sagemaker_route(request, endpoint, body)
        refuse_tensors_for_generation(
            route, "InvokeEndpointWithResponseStream (/invocations-response-stream)"
        )
        core.check_rate_limit(route)
        route = core.serving_route(route, request.headers)
        content_type = request.headers.get("content-type", JSON)
        declared = None
        if content_type.startswith(SAGEMAKER_BINARY.split(";")[0]):
            declared = content_type.rsplit("=", 1)[-1]
        header, length = _split_binary(body, declared)
        validate_tensor_header(route, header)
        answer, data, answer_length = await _forward_tensors(route, body, header, length)
    except ProxyError as error:
        finish_request(route, None, started, "sagemaker", error.status)
        await send_sagemaker_error(send, error)
        return
    finish_request(
        route,
        answer,
        started,
        "sagemaker",
        200,
        exchange=(header["inputs"], _captured(data, answer_length)),
    )
    headers = [
        (b"x-amzn-invoked-production-variant", b"AllTraffic"),
        *answer_headers(route, answer),
    ]
    answer_type = JSON if answer_length is None else f"{SAGEMAKER_BINARY}{answer_length}"
    await send_answer(send, 200, data, answer_type, headers)


async def metrics(request: Request, send) -> None:
    try:
        principal = await authorize_bearer(request)
        if not principal.is_platform:
            raise ProxyError(403, "/metrics needs a platform token.", code="forbidden")
    except ProxyError as error:
        await send_answer(send, error.status, json_body(native_error(error)), JSON, error.headers())
        return
    # The periodic jobs' last passes live in the database: collected off the event loop.
    body, content_type = await in_thread(exposition)(request.headers.get("accept"))
    await send_answer(send, 200, body, content_type)


async def v2_server(request: Request, send, action: str) -> None:
    if action in ("/health/live", "/health/ready"):
        await send_answer(send, 200, b"", "text/plain")
        return
    await send_answer(
        send,
        200,
        json_body(
            {
                "name": "tenantml",
                "version": "1",
                "extensions": ["binary_tensor_data", "generate"],
            }
        ),
        JSON,
    )


class ProxyApplication:
    """Answers the proxy's routes itself and hands every other request to Django."""

    def __init__(self, django_app) -> None:
        self.django_app = django_app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.django_app(scope, receive, send)
            return
        handler = self._match(scope)
        if handler is None:
            await self.django_app(scope, receive, send)
            return
        SUBSCRIBER.start()
        request = Request(scope, receive)
        try:
            await handler(request, send)
        except DomainError as exc:  # from a service called on a cold path: its own status
            error = ProxyError.from_domain(exc)
            await send_answer(
                send, error.status, json_body(native_error(error)), JSON, error.headers()
            )
        except Exception:
            logger.exception("The proxy failed on %s %s", scope["method"], scope["path"])
            body = json_body({"error": {"code": "upstream", "message": "The proxy failed; retry."}})
            await send_answer(send, 502, body, JSON)

    def _match(self, scope):
        path = scope["path"]
        if path.startswith("/api/v1/"):
            match = NATIVE_INVOKE.match(path)
            headers = dict(scope.get("headers", []))
            # Dashboard calls with a session cookie (and CSRF) stay with Django's own view.
            if match and b"authorization" in headers:
                return lambda r, s: native_invoke(r, s, match["tenant"], match["model"])
            return None
        if path.startswith("/v2"):
            if path.rstrip("/") in ("/v2", "/v2/health/live", "/v2/health/ready"):
                return lambda r, s: v2_server(r, s, path.rstrip("/")[3:])
            match = V2_MODEL.match(path)
            if match:
                return lambda r, s: v2_model(
                    r, s, match["name"], match["version"], match["action"] or ""
                )
            return None
        if path.startswith("/endpoints/"):
            match = SAGEMAKER_INVOKE.match(path)
            if match and match["action"] == "invocations":
                return lambda r, s: sagemaker_invoke(r, s, match["endpoint"])
            if match:
                return lambda r, s: sagemaker_invoke_stream(r, s, match["endpoint"])
            return None
        if path == "/metrics":
            return metrics
        return None

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                SUBSCRIBER.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await core.close_sessions()
                await send({"type": "lifespan.shutdown.complete"})
                return
