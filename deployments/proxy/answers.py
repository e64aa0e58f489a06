"""What the proxy's protocol handlers share: the request as they read it (body under the size
limit), sending an answer, the error bodies and headers of each protocol, who a SageMaker
runtime call is from and for, and counting a finished request (metrics and usage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from django.conf import settings

from config.errors import DomainError
from deployments.proxy import capture, core
from deployments.proxy.core import Principal, ProxyError
from deployments.proxy.metrics import METRICS
from deployments.proxy.routing import Route
from deployments.usage import GenerationFigures

JSON = "application/json"


class Request:
    """What a handler needs from the ASGI scope, with the body read under the size limit."""

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.raw_path: str = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        self.query_string: str = scope.get("query_string", b"").decode("latin-1")
        self.headers: dict[str, str] = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }

    async def body(self) -> bytes:
        limit = settings.TENANTML_PROXY_MAX_BODY_BYTES
        declared = self.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks, size = [], 0
        while True:
            message = await self.receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


def _too_large(size: int, limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"The request body is {size:,} bytes; the limit is {limit:,} (PROXY_MAX_BODY_BYTES). "
        "Send fewer inputs per request.",
        code="payload_too_large",
    )


async def send_answer(
    send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def json_body(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def validate_native_inputs(route: Route, inputs: object) -> None:
    """The native ``inputs`` against the kind's JSON schema; 400 naming the first bad item."""
    from deployments.proxy.invoke import validate_inputs

    try:
        validate_inputs(kind_name=route.kind, inputs=inputs)
    except DomainError as exc:
        raise ProxyError.from_domain(exc) from exc


async def authorize_bearer(request: Request) -> Principal:
    return await core.bearer_principal(request.headers.get("authorization", ""))


def native_error(error: ProxyError) -> dict:
    body = {"code": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    return {"error": body}


def answer_headers(route: Route, answer) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-tenantml-model-version", str(route.version_number).encode()),
        (b"x-tenantml-cold-start", b"true" if answer.cold_start else b"false"),
    ]


async def sagemaker_route(
    request: Request, endpoint: str, body: bytes, *, streaming: bool = False
) -> Route:
    """The caller (SigV4, as AWS SDKs sign, or a bearer token) and the route of its target."""
    if "authorization" in request.headers and request.headers["authorization"].startswith("AWS4-"):
        principal = await core.sigv4_principal(
            method=request.method,
            path=request.raw_path,
            query_string=request.query_string,
            headers=request.headers,
            body=body,
        )
    else:
        principal = await authorize_bearer(request)
    tenant, model = _sagemaker_target(endpoint, request.headers, streaming=streaming)
    return await core.route_for(principal, tenant, model)


async def send_sagemaker_error(send, error: ProxyError) -> None:
    code = _SAGEMAKER_CODES.get(error.status, "ModelError")
    if error.status in (401, 403) and error.code not in ("error", "unauthorized"):
        code = error.code
    headers = [(b"x-amzn-errortype", code.encode()), *error.headers()]
    body = json_body({"message": error.message, "__type": code})
    await send_answer(send, error.status, body, JSON, headers)


_SAGEMAKER_CODES = {
    400: "ValidationError",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFound",
    405: "ValidationError",
    409: "ValidationError",
    413: "ValidationError",
    429: "ThrottlingException",
    502: "ModelError",
    503: "ServiceUnavailable",
}


def _sagemaker_target(
    endpoint: str, headers: dict[str, str], *, streaming: bool = False
) -> tuple[str, str]:
    """``/endpoints/<tenant>`` with TargetModel ``<model>``, or TargetModel ``<tenant>/<model>``
    (or ``<tenant>.<model>``) on any endpoint name.

    ``InvokeEndpointWithResponseStream`` has no TargetModel: there the model is named as an
    inference component (InferenceComponentName, by the same rules), or by the endpoint name
    ``<tenant>.<model>``.
    """
    header = (
        "x-amzn-sagemaker-inference-component" if streaming else "x-amzn-sagemaker-target-model"
    )
    target = unquote(headers.get(header, "")).removesuffix(".tar.gz")
    if not target and streaming:
        tenant, found, model = unquote(endpoint).partition(".")
        if found and tenant and model:
            return tenant, model
    if not target:
        name = "InferenceComponentName" if streaming else "TargetModel"
        raise ProxyError(
            400,
            f"{name} is required: the model's name ({header}), or an endpoint named "
            "<tenant>.<model>."
            if streaming
            else "X-Amzn-SageMaker-Target-Model is required: the model's name (TargetModel).",
            code="invalid",
            field=name,
        )
    for separator in ("/", "."):
        tenant, found, model = target.partition(separator)
        if found and tenant and model:
            return tenant, model
    return unquote(endpoint), target


def finish_request(
    route: Route | None,
    answer,
    started: float,
    protocol: str,
    status: int,
    generated: GenerationFigures | None = None,
    exchange: tuple[object, object] | None = None,
) -> None:
    """Count a finished request; an answered one with its ``exchange`` (inputs, outputs) is
    offered for request capture."""
    seconds = time.perf_counter() - started
    # 499: the caller left before its answer (a generating model's whole answer, abandoned).
    if route is not None and status not in (401, 403, 404, 413, 429, 499):
        core.record(route, answer, started=started, error=status != 200, generated=generated)
    live = route is not None and route.deployed
    METRICS.observe(
        model=route.public_name if live else "",
        model_version=str(route.version_number) if live else "",
        protocol=protocol,
        status=status,
        seconds=seconds,
        cold_start=bool(answer and answer.cold_start),
    )
    if exchange is not None and live and status == 200:
        capture.offer(
            route=route,
            protocol=protocol,
            inputs=exchange[0],
            outputs=exchange[1],
            latency_ms=seconds * 1000,
            cold_start=bool(answer and answer.cold_start),
        )
