"""The routing core the three protocols share: who is calling, which copy answers, forwarding.

Nothing here reads the database on the hot path: tokens and routes come from in-process caches
(filled in a worker thread on a miss), requests are counted in memory, and the request body goes
to the chosen Triton instance over a pooled connection as it came (the protocols only translate
headers where they differ). A copy that answers 404 does not hold the model (evicted, restarted):
it is loaded through the serving runtime — one load however many requests wait for it — and the
request is sent again, answered with ``cold_start: true``. Every request passes its model's gate
(``deployments.backends.local.gates``): a model being unloaded lets none in, which the proxy treats
as the 404 it is about to become.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

from config.errors import DomainError
from deployments.backends.local.gates import GateClosed, ModelGates
from deployments.backends.local.triton import is_unloading_answer
from deployments.proxy.invalidation import SUBSCRIBER
from deployments.proxy.metrics import METRICS
from deployments.proxy.ratelimit import TokenBuckets, retry_after_header
from deployments.proxy.routing import MISSING, ROUTES, Copy, Route, load_route
from deployments.proxy.upstream import UpstreamError, UpstreamPool
from deployments.services import usage


class ProxyError(Exception):
    """An answer other than 200, with what the caller needs to act on it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "error",
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.field = field
        self.retry_after_s = retry_after_s

    @classmethod
    def from_domain(cls, exc: DomainError) -> ProxyError:
        retry = 5.0 if exc.status_code == 503 else None
        return cls(
            exc.status_code, exc.message, code=exc.code, field=exc.field, retry_after_s=retry
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after_s is None:
            return []
        return [(b"retry-after", retry_after_header(self.retry_after_s).encode())]


@dataclass(frozen=True)
class Principal:
    """The caller behind a token, as the proxy needs it."""

    token_id: int
    is_platform: bool
    tenant_id: int | None
    label: str

    def can_see(self, tenant_id: int) -> bool:
        return self.is_platform or self.tenant_id == tenant_id


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    cold_start: bool
    copy: Copy


def in_thread(function):
    """Run blocking ORM or backend work off the event loop, in a pool thread.

    The thread's connection is closed afterwards, as Django closes a request's: these calls
    happen on cache misses and cold loads only, and a pool thread's idle connection would
    otherwise outlive every use (and hold the database open).
    """

    def call(*args, **kwargs):
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return sync_to_async(call, thread_sensitive=False)


# --- Callers ---------------------------------------------------------------------------------

_TOKENS: dict[str, tuple[float, Principal]] = {}


def _principal_for(token) -> Principal:
    return Principal(
        token_id=token.pk,
        is_platform=token.is_platform,
        tenant_id=token.tenant_id,
        label=f"token:{token.prefix}",
    )


async def bearer_principal(authorization: str) -> Principal:
    """The caller of ``Authorization: Bearer <token>``; 401 otherwise."""
    from tenants.exceptions import InvalidToken
    from tenants.services import authenticate_token, digest_secret

    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ProxyError(
            401, "Authentication needed: send Authorization: Bearer <token>.", code="unauthorized"
        )
    digest = digest_secret(secret.strip())
    cached = _TOKENS.get(digest)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    try:
        token = await in_thread(authenticate_token)(secret=secret.strip())
    except InvalidToken as exc:
        raise ProxyError(401, exc.message, code="unauthorized") from exc
    principal = _principal_for(token)
    _TOKENS[digest] = (time.monotonic() + settings.TENANTML_PROXY_AUTH_TTL_S, principal)
    return principal


def _verify_sigv4(*, method, path, query_string, headers, body) -> Principal:
    from tenants.services import authenticate_signed_request

    token = authenticate_signed_request(
        method=method, path=path, query_string=query_string, headers=headers, body=body
    )
    return _principal_for(token)


async def sigv4_principal(*, method, path, query_string, headers, body) -> Principal:
    """The caller of a SigV4-signed request (AWS SDKs); 403 for a bad signature."""
    try:
        return await in_thread(_verify_sigv4)(
            method=method, path=path, query_string=query_string, headers=headers, body=body
        )
    except DomainError as exc:
        raise ProxyError(exc.status_code, exc.message, code=exc.code) from exc


# --- Routes ----------------------------------------------------------------------------------


async def route_for(principal: Principal, tenant_slug: str, model_name: str) -> Route:
    """The live route of a model the caller may use; 404 for anything it may not see."""
    SUBSCRIBER.poll_file()
    key = (tenant_slug, model_name)
    route = ROUTES.get(key)
    if route is MISSING:
        route = await in_thread(load_route)(tenant_slug=tenant_slug, model_name=model_name)
        ttl = settings.TENANTML_PROXY_ROUTE_TTL_S if route is not None else 2.0
        ROUTES.put(key, route, ttl)
    if route is None or not principal.can_see(route.tenant_id):
        raise ProxyError(
            404, f"No model {model_name!r} for tenant {tenant_slug}.", code="not_found"
        )
    if not route.tenant_active:
        raise ProxyError(403, f"Tenant {tenant_slug} is suspended.", code="tenant_suspended")
    if not route.deployed:
        raise ProxyError(
            409,
            f"{tenant_slug}/{model_name} is not serving yet: deploy it (POST .../deployments/) "
            "and retry once the deployment is live.",
            code="not_deployed",
            field="model",
        )
    return route


_LIMITS: TokenBuckets | None = None


def check_rate_limit(route: Route) -> None:
    """429 with Retry-After when the model's tenant is over its request rate."""
    global _LIMITS
    if _LIMITS is None:
        _LIMITS = TokenBuckets(
            rate_per_s=settings.TENANTML_PROXY_RATE_LIMIT_RPS,
            burst=settings.TENANTML_PROXY_RATE_LIMIT_BURST,
        )
    wait_s = _LIMITS.take(route.tenant_id)
    if wait_s > 0:
        METRICS.limited()
        raise ProxyError(
            429,
            f"Tenant {route.tenant_slug} is over its limit of "
            f"{settings.TENANTML_PROXY_RATE_LIMIT_RPS:g} requests a second.",
            code="rate_limited",
            retry_after_s=wait_s,
        )


def reset_rate_limits() -> None:
    global _LIMITS
    _LIMITS = None


# --- Forwarding ------------------------------------------------------------------------------

_OUTSTANDING: dict[int, int] = {}
_SEEN_LOADED: set[int] = set()
_LOADS: dict[int, asyncio.Future] = {}
_POOLS: dict[int, UpstreamPool] = {}


def _pool() -> UpstreamPool:
    """One keep-alive connection pool per event loop (connections belong to their loop)."""
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(id(loop))
    if pool is None:
        pool = _POOLS[id(loop)] = UpstreamPool(
            max_idle=settings.TENANTML_PROXY_UPSTREAM_CONNECTIONS
        )
    return pool


async def close_sessions() -> None:
    for pool in list(_POOLS.values()):
        pool.close()
    _POOLS.clear()


def serving_history(instance_id: int):
    from deployments.backends.local.runtime import _history

    return _history(instance_id)


def _pick(route: Route) -> Copy:
    if not route.copies:
        raise ProxyError(
            503,
            f"No healthy instance holds {route.public_name} v{route.version_number} right now; "
            "retry shortly while it is restored.",
            code="unavailable",
            retry_after_s=5,
        )
    return min(
        route.copies,
        key=lambda c: (
            _OUTSTANDING.get(c.placement_id, 0),
            not (c.loaded or c.placement_id in _SEEN_LOADED),
            c.placement_id,
        ),
    )


_GATES: dict[tuple[str, int], ModelGates] = {}
# How long a request waits for its model's eviction to finish before loading it again: an
# eviction drains for up to 30 s, then Triton takes about 2 s to unload.
GATE_WAIT_S = 45.0


def _gates(copy: Copy) -> ModelGates:
    """The invocation gates of the copy's instance (see ``deployments.backends.local.gates``)."""
    key = (copy.host, copy.port)
    gates = _GATES.get(key)
    if gates is None:
        from deployments.backends.local.runtime import gates_for

        gates = _GATES[key] = gates_for(copy.host, copy.port)
    return gates


async def _enter_when_open(gates: ModelGates, route: Route) -> None:
    """Enter the model's gate once the eviction that holds it closed is over."""
    deadline = time.monotonic() + GATE_WAIT_S
    while True:
        try:
            gates.enter(route.triton_name)
            return
        except GateClosed:
            if time.monotonic() >= deadline:
                raise ProxyError(
                    503,
                    f"{route.public_name} is still being unloaded to make room for another "
                    "model; retry shortly.",
                    code="unavailable",
                    retry_after_s=1,
                ) from None
            await asyncio.sleep(0.05)


def _being_evicted(placement_id: int) -> bool:
    from deployments.models import Placement

    return Placement.objects.filter(
        pk=placement_id, actual_state=Placement.ActualState.EVICTING
    ).exists()


def _prepare_copy(placement_id: int) -> bool:
    """Load the placement's model where it is placed (the record may say loaded: it is not)."""
    from deployments.backends.local import runtime
    from deployments.models import Placement

    Placement.objects.filter(pk=placement_id, actual_state=Placement.ActualState.LOADED).update(
        actual_state=Placement.ActualState.EVICTED
    )
    placement = Placement.objects.select_related(
        "version__model__tenant", "instance", "endpoint"
    ).get(pk=placement_id)
    return runtime.ensure_loaded(placement=placement, actor="proxy").cold_start


async def _load(copy: Copy) -> bool:
    """Single-flight load of one copy: concurrent requests share the first one's load."""
    waiting = _LOADS.get(copy.placement_id)
    if waiting is not None:
        return await asyncio.shield(waiting)
    future = asyncio.get_running_loop().create_future()
    _LOADS[copy.placement_id] = future
    try:
        cold = await in_thread(_prepare_copy)(copy.placement_id)
    except DomainError as exc:
        error = ProxyError.from_domain(exc)
        future.set_exception(error)
        future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
        raise error from exc
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()
        raise
    finally:
        _LOADS.pop(copy.placement_id, None)
    future.set_result(cold)
    return cold


def _instance_down(instance_id: int) -> None:
    from deployments.backends.local import runtime
    from deployments.models import Instance

    instance = Instance.objects.filter(pk=instance_id).select_related("endpoint").first()
    if instance is not None:
        runtime.check_instance_health(instance=instance, actor="proxy")


def _sagemaker_invoke(copy: Copy, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    from deployments.backends.sagemaker.deploy import endpoint_backend

    params = {"EndpointName": copy.endpoint_name, "Body": body, "ContentType": content_type}
    if copy.endpoint_mode == "mme":
        params["TargetModel"] = copy.external_name
    elif copy.endpoint_mode == "inference-component":
        params["InferenceComponentName"] = copy.external_name
    answer = endpoint_backend().runtime.invoke_endpoint(**params)
    return 200, answer.get("ContentType", "application/json"), answer["Body"].read()


async def forward(route: Route, body: bytes, content_type: str) -> Answer:
    """Send a Triton request body to a copy of the route's version and return its answer."""
    copy = _pick(route)
    limit = settings.TENANTML_PROXY_MAX_OUTSTANDING_PER_COPY
    if _OUTSTANDING.get(copy.placement_id, 0) >= limit:
        raise ProxyError(
            503,
            f"{route.public_name} has {limit} requests in flight on every copy; retry shortly.",
            code="overloaded",
            retry_after_s=1,
        )
    _OUTSTANDING[copy.placement_id] = _OUTSTANDING.get(copy.placement_id, 0) + 1
    if copy.instance_id is not None:
        serving_history(copy.instance_id).record(str(copy.placement_id))
    cold = False
    try:
        if copy.backend == "sagemaker":
            try:
                status, answer_type, data = await in_thread(_sagemaker_invoke)(
                    copy, body, content_type
                )
            except DomainError as exc:
                raise ProxyError.from_domain(exc) from exc
            except Exception as exc:  # botocore's own errors: the endpoint failed us
                METRICS.upstream_error("sagemaker")
                raise ProxyError(502, f"SageMaker did not answer: {exc}", code="upstream") from exc
            return Answer(status, answer_type, data, False, copy)
        path = f"/models/{route.triton_name}/invoke"
        gates = _gates(copy)
        name = route.triton_name
        inside = False  # whether this request holds its place in the model's gate
        try:
            for attempt in range(2):
                if not inside:
                    try:
                        gates.enter(name)
                        inside = True
                    except GateClosed:
                        pass
                if inside:
                    try:
                        response = await _pool().post(
                            copy.host,
                            copy.port,
                            path,
                            body,
                            content_type,
                            settings.TENANTML_PROXY_UPSTREAM_TIMEOUT_S,
                        )
                    except UpstreamError as exc:
                        METRICS.upstream_error("connection")
                        await in_thread(_instance_down)(copy.instance_id)
                        ROUTES.invalidate(route.model_id)
                        raise ProxyError(
                            503,
                            f"The instance serving {route.public_name} is not answering "
                            f"({exc!s:.80}); retry shortly while it is restored.",
                            code="unavailable",
                            retry_after_s=5,
                        ) from exc
                    status = response.status
                    answer_type = response.headers.get("content-type", "application/json")
                    data = response.body
                else:
                    status, answer_type, data = 404, "application/json", b""  # being unloaded
                if status != 404 and not (
                    status == 400 and is_unloading_answer(status, _triton_error(data))
                ):
                    break  # only a 400 is read for Triton's reason: the hot path parses nothing
                if attempt == 1:
                    # Loaded for this request and taken away again before it ran: memory is
                    # contended right now, so the caller retries shortly.
                    raise ProxyError(
                        503,
                        f"{route.public_name} was unloaded again to make room for another "
                        "model before it could answer; retry shortly.",
                        code="unavailable",
                        retry_after_s=1,
                    )
                # Not loaded: load it, from inside the gate, so that the model loaded for this
                # request cannot be evicted before the request has run on it. A model being
                # evicted is waited out first (its gate opens once it is unloaded); a request
                # inside steps out for that, since the eviction waits for it.
                _SEEN_LOADED.discard(copy.placement_id)
                if inside and await in_thread(_being_evicted)(copy.placement_id):
                    gates.leave(name)
                    inside = False
                if not inside:
                    await _enter_when_open(gates, route)
                    inside = True
                cold = await _load(copy) or cold
        finally:
            if inside:
                gates.leave(name)
        if status == 200:
            _SEEN_LOADED.add(copy.placement_id)
            return Answer(status, answer_type, data, cold, copy)
        message = _triton_error(data) or f"status {status}"
        if status == 400:
            raise ProxyError(400, f"The model refused the request: {message}", code="invalid")
        METRICS.upstream_error(f"status_{status}")
        raise ProxyError(
            502, f"The model's server failed the request ({status}): {message}", code="upstream"
        )
    finally:
        left = _OUTSTANDING.get(copy.placement_id, 1) - 1
        if left > 0:
            _OUTSTANDING[copy.placement_id] = left
        else:
            _OUTSTANDING.pop(copy.placement_id, None)


def _triton_error(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", ""))[:500]
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", "replace")


def record(route: Route, answer: Answer | None, *, started: float, error: bool) -> float:
    """Count one request in the time series and the LRU recency; returns its latency in ms."""
    from deployments.backends.local import runtime

    latency_ms = (time.perf_counter() - started) * 1000
    if route.version_id is None:
        return latency_ms
    copy = answer.copy if answer is not None else (route.copies[0] if route.copies else None)
    if copy is None:
        return latency_ms  # no copy to charge it to: /metrics still counts it
    usage.COUNTERS.record(
        version_id=route.version_id,
        endpoint_id=copy.endpoint_id,
        tenant_id=route.tenant_id,
        latency_ms=latency_ms,
        cold_start=bool(answer and answer.cold_start),
        error=error,
        placement_id=copy.placement_id if answer is not None else None,
    )
    if answer is not None:
        runtime._touch(copy.placement_id)
    usage.ensure_background_flush()
    return latency_ms
