"""The routing core the three protocols share: who is calling, which copy answers, forwarding.

Nothing here reads the database on the hot path: tokens and routes come from in-process caches
(filled in a worker thread on a miss), requests are counted in memory, and the request body goes
to the chosen copy's backend (``backend_named(copy.backend)``) as it came — the protocols only
translate headers where they differ. How a copy is reached (a pooled connection to a local Triton
instance, the SageMaker runtime API) and what a copy that does not hold its model does is the
backend's business; a failure comes back as ``ForwardFailed`` with the status the caller gets.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError

from config.errors import DomainError
from deployments import usage
from deployments.backends import backend_named, loaded_backends
from deployments.backends.base import Copy, GenerationStream, in_thread
from deployments.exceptions import ForwardFailed
from deployments.proxy import mirroring
from deployments.proxy.batching import PARTS_IN_FLIGHT, gather_in_order
from deployments.proxy.invalidation import SUBSCRIBER
from deployments.proxy.metrics import METRICS
from deployments.proxy.ratelimit import TokenBuckets, retry_after_header
from deployments.proxy.routing import (
    MISSING,
    ROUTES,
    UNDEPLOYED_ROUTE_TTL_S,
    Route,
    choose_version,
    load_route,
)
from deployments.usage import GenerationFigures


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
        retry = getattr(exc, "retry_after_s", None)
        if retry is None and exc.status_code == 503:
            retry = 5.0
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


# --- Callers ---------------------------------------------------------------------------------

_TOKENS: dict[str, tuple[float, Principal]] = {}


def within_stale_window(expired_at: float) -> bool:
    """Whether a cache entry that expired at ``expired_at`` (monotonic) may still be used while
    the database is down."""
    return time.monotonic() <= expired_at + settings.TENANTML_PROXY_STALE_WHILE_DATABASE_DOWN_S


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
    except DatabaseError:
        # The database is restarting or unreachable: a token this process verified a moment
        # ago is still trusted for PROXY_STALE_WHILE_DATABASE_DOWN_S, so callers keep their
        # answers through a database restart; a token never seen fails as before.
        if cached is not None and within_stale_window(cached[0]):
            return cached[1]
        raise
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
        try:
            route = await in_thread(load_route)(tenant_slug=tenant_slug, model_name=model_name)
        except DatabaseError:
            # As for tokens: while the database cannot be asked, the last route known is used.
            route = ROUTES.get_stale(
                key, max_stale_s=settings.TENANTML_PROXY_STALE_WHILE_DATABASE_DOWN_S
            )
            if route is MISSING:
                raise
        else:
            live = route is not None and route.deployed
            ttl = settings.TENANTML_PROXY_ROUTE_TTL_S if live else UNDEPLOYED_ROUTE_TTL_S
            ROUTES.put(key, route, ttl)
    if route is None or not principal.can_see(route.tenant_id):
        raise ProxyError(
            404, f"No model {model_name!r} for tenant {tenant_slug}.", code="not_found"
        )
    if not route.tenant_active:
        raise ProxyError(403, f"Tenant {tenant_slug} is suspended.", code="tenant_suspended")
    if route.rolling_out:
        wait_s = route.retry_after_s()
        raise ProxyError(
            503,
            f"{tenant_slug}/{model_name} v{route.rollout_version_number} is being deployed; "
            f"retry in {wait_s} s.",
            code="deployment_in_progress",
            field="model",
            retry_after_s=wait_s,
        )
    if not route.deployed:
        raise ProxyError(
            409,
            not_deployed_message(f"{tenant_slug}/{model_name}", route.failure_reason),
            code="not_deployed",
            field="model",
        )
    return route


# The header that keeps a caller's requests on one version during a canary rollout.
REQUEST_KEY_HEADER = "x-tenantml-request-key"


def serving_route(route: Route, headers: dict[str, str]) -> Route:
    """The route an inference request is served on: during a canary rollout, the new version's
    for its share of requests (sticky per ``X-TenantML-Request-Key``), the live one's otherwise."""
    return choose_version(route, request_key=headers.get(REQUEST_KEY_HEADER) or None)


def not_deployed_message(model: str, failure_reason: str = "") -> str:
    """What a caller of a model with no live version and no rollout under way is told."""
    if failure_reason:
        return (
            f"{model} is not serving: its deployment failed ({failure_reason[:300]}). "
            "Deploy it again (POST .../deployments/)."
        )
    return (
        f"{model} is not serving yet: deploy it (POST .../deployments/) and retry once the "
        "deployment is live."
    )


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


async def close_sessions() -> None:
    """Close the connections the backends keep open to the copies."""
    for backend in loaded_backends():
        backend.close_connections()


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


async def forward(route: Route, body: bytes, content_type: str) -> Answer:
    """Send a Triton request body to a copy of the route's version and return its answer."""
    return (await forward_parts(route, [(body, content_type)]))[0]


async def forward_parts(route: Route, parts: Sequence[tuple[bytes, str]]) -> list[Answer]:
    """Send the parts of one request (a batch split at the model's batch size), each a body
    and its content type, to one copy of the route's version; their answers in order.

    The request counts once against the copy's limit; up to ``PARTS_IN_FLIGHT`` parts are sent
    at once. The first part that fails fails the request: the others are cancelled.
    """
    copy = _take(route)
    try:
        if len(parts) == 1:
            answers = [await _forward_part(route, copy, *parts[0])]
        else:
            answers = await gather_in_order(
                [functools.partial(_forward_part, route, copy, *part) for part in parts],
                limit=PARTS_IN_FLIGHT,
            )
    finally:
        _release(copy)
    if all(answer.status == 200 for answer in answers):
        _SEEN_LOADED.add(copy.placement_id)
        if route.candidate is not None:
            mirroring.mirror(route, parts, answers, forward=forward_parts, refused=ProxyError)
    return answers


async def _forward_part(route: Route, copy: Copy, body: bytes, content_type: str) -> Answer:
    try:
        forwarded = await backend_named(copy.backend).forward(
            copy=copy,
            model_name=route.triton_name,
            public_name=route.public_name,
            body=body,
            content_type=content_type,
        )
    except ForwardFailed as exc:
        raise _proxy_error(route, exc) from exc
    except DomainError as exc:
        _SEEN_LOADED.discard(copy.placement_id)
        error = ProxyError.from_domain(exc)
        error.message = public_names(route, error.message)
        raise error from exc
    return Answer(
        forwarded.status, forwarded.content_type, forwarded.body, forwarded.cold_start, copy
    )


class Generation:
    """A generation request open on one copy: its events as they come, counted against the
    copy's requests in flight until it is closed."""

    def __init__(self, *, route: Route, copy: Copy, stream: GenerationStream) -> None:
        self.route = route
        self.copy = copy
        self.stream = stream
        self.cold_start = stream.cold_start
        self._open = True

    async def events(self) -> AsyncIterator[dict]:
        """The model's responses (Triton's generate events), as they arrive."""
        try:
            async for event in self.stream.events():
                yield event
        except ForwardFailed as exc:
            raise _proxy_error(self.route, exc) from exc

    def close(self) -> None:
        """End the request (the model stops generating if it has not finished)."""
        if not self._open:
            return
        self._open = False
        self.stream.close()
        _release(self.copy)


def _proxy_error(route: Route, exc: ForwardFailed) -> ProxyError:
    if exc.metric is not None:
        METRICS.upstream_error(exc.metric)
    if exc.stale_route:
        ROUTES.invalidate(route.model_id)
    return ProxyError(
        exc.status_code,
        public_names(route, exc.message),
        code=exc.code,
        retry_after_s=exc.retry_after_s,
    )


def _take(route: Route) -> Copy:
    """The copy a request goes to, counted as in flight there (``_release`` ends it)."""
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
    return copy


def _release(copy: Copy) -> None:
    left = _OUTSTANDING.get(copy.placement_id, 1) - 1
    if left > 0:
        _OUTSTANDING[copy.placement_id] = left
    else:
        _OUTSTANDING.pop(copy.placement_id, None)


async def open_generation(route: Route, body: bytes) -> Generation:
    """Send a generation request (Triton's generate JSON) to a copy of the route's version and
    return it open, once the copy has accepted it; the caller closes it."""
    copy = _take(route)
    try:
        stream = await backend_named(copy.backend).generate(
            copy=copy, model_name=route.triton_name, public_name=route.public_name, body=body
        )
    except ForwardFailed as exc:
        _release(copy)
        raise _proxy_error(route, exc) from exc
    except DomainError as exc:
        _release(copy)
        _SEEN_LOADED.discard(copy.placement_id)
        error = ProxyError.from_domain(exc)
        error.message = public_names(route, error.message)
        raise error from exc
    except BaseException:
        _release(copy)
        raise
    _SEEN_LOADED.add(copy.placement_id)
    return Generation(route=route, copy=copy, stream=stream)


def public_names(route: Route, text: str) -> str:
    """``text`` (Triton's words, in an error) with the model's serving name replaced by the
    public one callers use."""
    if not route.triton_name:
        return text
    return text.replace(route.triton_name, f"{route.public_name} v{route.version_number}")


def record(
    route: Route,
    answer: Answer | None,
    *,
    started: float,
    error: bool,
    generated: GenerationFigures | None = None,
) -> float:
    """Count one request in the time series (with what it generated, for a generating
    model); returns its latency in ms."""
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
        generated=generated,
    )
    usage.ensure_background_flush()
    return latency_ms
