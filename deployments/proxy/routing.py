"""The routing table: tenant model → live version → its copies, cached in process.

An entry is built from the database on first use (``load_route``, run in a worker thread) and
kept until the model's routing changes (deploy, rollback, promotion, drain, an instance restart:
``invalidation`` drops it in every process) or ``PROXY_ROUTE_TTL_S`` passes, whichever is first.
A request therefore reads no table on the hot path. Which copy answers is decided per request:
least requests in flight, preferring copies last seen loaded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from deployments.backends.base import Copy
from deployments.models import Deployment, Placement


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

    @property
    def public_name(self) -> str:
        return f"{self.tenant_slug}.{self.model_name}"

    @property
    def deployed(self) -> bool:
        return self.version_id is not None


def load_route(*, tenant_slug: str, model_name: str) -> Route | None:
    """Build a route from the database (None when the tenant has no such model)."""
    from models_registry.models import TenantModel, triton_model_name

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
    deployment = Deployment.objects.select_related("live_version").filter(model=model).first()
    version = deployment.live_version if deployment else None
    if version is None:
        return Route(**base)
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
