"""The routing table: tenant model → live version → its copies, cached in process.

An entry is built from the database on first use (``load_route``, run in a worker thread) and
kept until the model's routing changes (deploy, rollback, promotion, drain, an instance restart:
``invalidation`` drops it in every process) or ``PROXY_ROUTE_TTL_S`` passes, whichever is first.
A request therefore reads no table on the hot path. Which copy answers is decided per request:
least requests in flight, preferring copies last seen loaded.

A model with no live version gets a route too, kept ``UNDEPLOYED_ROUTE_TTL_S``: either its first
rollout is under way (callers get 503 and a Retry-After from the rollout's expected length) or
it is not deployed, perhaps because its deployment failed (409 with the reason).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import threading
import time
from dataclasses import dataclass, field

from django.db.models import Avg, Max

from deployments.backends.base import Copy
from deployments.models import Deployment, Placement

# A rollout's expected length before any copy of the model (or of its kind) was measured loading.
DEFAULT_ROLLOUT_S = 10.0
# Bounds of the Retry-After a caller gets while the model's first deployment is under way.
RETRY_AFTER_BOUNDS_S = (1, 10)
# How long a route without a live version is cached: its deployment may be about to go live or
# to fail, and a caller polling it should learn either soon.
UNDEPLOYED_ROUTE_TTL_S = 2.0


@dataclass(frozen=True)
class Route:
    """What the proxy needs to answer a tenant model's requests."""

    tenant_id: int
    tenant_slug: str
    tenant_active: bool
    model_id: int
    model_name: str
    kind: str
    version_id: int | None = None
    version_number: int | None = None
    triton_name: str = ""
    signature: dict = field(default_factory=dict)
    copies: tuple[Copy, ...] = ()
    # With no live version: the version a rollout under way is loading, when it started (epoch
    # seconds) and how long it is expected to take; or why the last deployment failed.
    rollout_version_number: int | None = None
    rollout_started_at: float | None = None
    expected_rollout_s: float = DEFAULT_ROLLOUT_S
    failure_reason: str = ""
    # A canary or shadow rollout under way: the new version's route, and how it gets traffic
    # (``choose_version`` and ``core.forward_parts`` read these).
    candidate: Route | None = None
    strategy: str = ""
    canary_share: float = 0.0

    @property
    def public_name(self) -> str:
        return f"{self.tenant_slug}.{self.model_name}"

    @property
    def deployed(self) -> bool:
        return self.version_id is not None

    @property
    def rolling_out(self) -> bool:
        """No live version yet, but one is on its way (the caller should retry, not deploy)."""
        return not self.deployed and self.rollout_version_number is not None

    def retry_after_s(self, *, now: float | None = None) -> int:
        """Whole seconds until the rollout under way is expected to be live (bounded)."""
        return rollout_retry_after_s(
            started_at=self.rollout_started_at, expected_s=self.expected_rollout_s, now=now
        )


def rollout_retry_after_s(
    *, started_at: float | None, expected_s: float, now: float | None = None
) -> int:
    """The Retry-After of a request for a model whose first rollout started at ``started_at``
    (epoch seconds) and is expected to take ``expected_s``: the time left, within bounds."""
    now = time.time() if now is None else now
    elapsed = now - (started_at or now)
    low, high = RETRY_AFTER_BOUNDS_S
    return int(min(high, max(low, math.ceil(expected_s - elapsed))))


def first_rollout_in_flight(deployment: Deployment | None) -> bool:
    """Whether a model with no live version has a rollout on its way (requested, placing or
    loading): its callers are told to retry (503) rather than that it is not deployed (409)."""
    return (
        deployment is not None
        and deployment.live_version_id is None
        and deployment.status == Deployment.Status.ROLLING_OUT
        and deployment.target_version_id is not None
    )


def expected_rollout_s(*, model_id: int, kind: str) -> float:
    """How long the model's rollout is expected to take: its copies' longest measured load, or
    its kind's average load, plus a second for the warm-up probe; ``DEFAULT_ROLLOUT_S`` before
    anything was measured."""
    own = Placement.objects.filter(
        version__model_id=model_id, load_time_ms__isnull=False
    ).aggregate(longest=Max("load_time_ms"))["longest"]
    if own is None:
        own = Placement.objects.filter(
            version__model__kind=kind, load_time_ms__isnull=False
        ).aggregate(average=Avg("load_time_ms"))["average"]
    return DEFAULT_ROLLOUT_S if own is None else own / 1000 + 1.0


def load_route(*, tenant_slug: str, model_name: str) -> Route | None:
    """Build a route from the database (None when the tenant has no such model)."""
    from models_registry.models import TenantModel

    model = (
        TenantModel.objects.select_related("tenant")
        .filter(tenant__slug=tenant_slug, name=model_name)
        .first()
    )
    if model is None:
        return None
    base = {
        "tenant_id": model.tenant_id,
        "tenant_slug": model.tenant.slug,
        "tenant_active": model.tenant.status == "active",
        "model_id": model.pk,
        "model_name": model.name,
        "kind": model.kind,
    }
    deployment = (
        Deployment.objects.select_related("live_version", "target_version", "candidate_version")
        .filter(model=model)
        .first()
    )
    version = deployment.live_version if deployment else None
    if version is None:
        if first_rollout_in_flight(deployment):
            started = deployment.rollout_started_at
            return Route(
                **base,
                rollout_version_number=deployment.target_version.number,
                rollout_started_at=started.timestamp() if started else None,
                expected_rollout_s=expected_rollout_s(model_id=model.pk, kind=model.kind),
            )
        failed = deployment is not None and deployment.status == Deployment.Status.FAILED
        return Route(**base, failure_reason=deployment.status_reason if failed else "")
    candidate = None
    if deployment.candidate_version is not None and deployment.candidate_strategy:
        candidate = version_route(base=base, model=model, version=deployment.candidate_version)
    return dataclasses.replace(
        version_route(base=base, model=model, version=version),
        candidate=candidate if candidate is not None and candidate.copies else None,
        strategy=deployment.candidate_strategy if candidate is not None else "",
        canary_share=deployment.candidate_share,
    )


def version_route(*, base: dict, model, version) -> Route:
    """The route to one version of a model: its serving name, signature and reachable copies."""
    from models_registry.models import triton_model_name

    reachable = list(
        Placement.objects.reachable()
        .filter(version=version)
        .select_related("instance", "endpoint")
        .order_by("pk")
    )
    usable = [p for p in reachable if p.actual_state != Placement.ActualState.FAILED] or reachable
    copies = tuple(
        Copy(
            placement_id=p.pk,
            endpoint_id=p.endpoint_id,
            backend=p.endpoint.backend,
            endpoint_name=p.endpoint.name,
            endpoint_mode=p.endpoint.mode,
            instance_id=p.instance_id,
            host=p.instance.host if p.instance else "",
            port=p.instance.port if p.instance else None,
            external_name=p.external_name,
            loaded=p.actual_state == Placement.ActualState.LOADED,
        )
        for p in usable
    )
    return Route(
        **base,
        version_id=version.pk,
        version_number=version.number,
        triton_name=triton_model_name(
            tenant_slug=model.tenant.slug, model_name=model.name, number=version.number
        ),
        signature=version.signature or {},
        copies=copies,
    )


def choose_version(route: Route, *, request_key: str | None = None) -> Route:
    """The route one request is served on: the canary's for its share of requests (the same
    one every time for the same request key), the live version's otherwise."""
    candidate = route.candidate
    if candidate is None or route.strategy != Deployment.Strategy.CANARY:
        return route
    if request_key:
        digest = hashlib.sha256(f"{route.model_id}:{request_key}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
    else:
        draw = random.random()
    return candidate if draw < route.canary_share else route


_MISSING = object()


class RouteCache:
    """Routes by (tenant slug, model name), with hit and miss counts for ``/metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, Route | None]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]):
        """The cached route (None: known not to exist) or ``MISSING``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return _MISSING
        self.hits += 1
        return entry[1]

    def get_stale(self, key: tuple[str, str], *, max_stale_s: float):
        """The route cached under ``key`` even if expired, up to ``max_stale_s`` past its expiry
        (``MISSING`` beyond): what a request may use while the database cannot be asked."""
        entry = self._entries.get(key)
        if entry is None or entry[0] + max_stale_s < time.monotonic():
            return _MISSING
        return entry[1]

    def put(self, key: tuple[str, str], route: Route | None, ttl_s: float) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl_s, route)

    def invalidate(self, model_id: int | None = None) -> None:
        """Forget one model's route (by id), or every route."""
        with self._lock:
            if model_id is None:
                self._entries.clear()
                return
            for key, (_, route) in list(self._entries.items()):
                if route is None or route.model_id == model_id:
                    del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


MISSING = _MISSING
ROUTES = RouteCache()
