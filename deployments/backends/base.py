"""The serving backend interface: what the platform asks of the endpoints that serve its models.

Rollouts, the reconciler, warm-ups, routing and the proxy hold an endpoint (or a copy of a model
on one) and call ``backend_for(endpoint)`` (``deployments.backends``); they never name a backend.
A backend rolls a version out onto its endpoints, probes and invokes copies, forwards proxied
request bodies, unloads copies nobody wants and repairs its endpoints' drift. Everything it
returns is a plain value; the errors it raises are domain errors (``deployments.exceptions``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from django.utils import timezone

if TYPE_CHECKING:
    from deployments.models import Deployment, Endpoint, Instance, Placement
    from models_registry.models import TenantModel

ENDPOINT_NAME_MAX_LENGTH = 63


@dataclass(frozen=True)
class InvokeResult:
    """A model's answer to one request, as the invoke API returns it."""

    outputs: list
    cold_start: bool
    latency_ms: float
    model_version: int


@dataclass(frozen=True)
class ProbeResult:
    """A warm-up request's outcome: how long it took and whether it had to load the model."""

    latency_ms: float
    cold_start: bool


@dataclass(frozen=True)
class PreparedProbe:
    """A copy made ready for its warm-up request (loaded first where it was not).

    ``send`` is the request itself: it only talks to the copy's instance or endpoint (no
    database), so a warm-up pass may run many of them in pool threads (``NetworkCalls``); it
    returns the request's latency in ms and raises a DomainError when the answer does not come
    or does not decode. ``prepare_ms`` is what the preparation took (a cold load, mostly).
    """

    cold_start: bool
    prepare_ms: float
    send: Callable[[], float]


@dataclass(frozen=True)
class Copy:
    """One loaded (or loadable) copy of a version: where the proxy sends requests for it."""

    placement_id: int
    endpoint_id: int
    backend: str
    endpoint_name: str
    endpoint_mode: str
    instance_id: int | None = None
    host: str = ""
    port: int | None = None
    external_name: str = ""
    loaded: bool = False


@dataclass(frozen=True)
class Forwarded:
    """A copy's answer to a proxied request body."""

    status: int
    content_type: str
    body: bytes
    cold_start: bool


@runtime_checkable
class GenerationStream(Protocol):
    """A copy's open answer to a generation request: the model's responses as they come."""

    #: Whether the model had to be loaded for this request.
    cold_start: bool

    def events(self) -> AsyncIterator[dict]:
        """Each response (Triton's generate event: ``text_output``, ``finish_reason``, or
        ``error``) as it arrives; ForwardFailed when the stream breaks off."""
        ...

    def close(self) -> None:
        """End the stream; mid-answer, the model stops generating."""
        ...


@dataclass
class ReconcileReport:
    """What one reconciler pass found and did (backends add to it as they repair)."""

    instances_checked: int = 0
    instances_restarted: list[str] = field(default_factory=list)
    instances_started: list[str] = field(default_factory=list)
    instances_given_up: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    marked_missing: list[str] = field(default_factory=list)
    orphans_unloaded: list[str] = field(default_factory=list)
    rollouts_requeued: list[int] = field(default_factory=list)
    instances_recovered: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)
    # Cloud resources the platform's names mark as its own but the database does not know.
    cloud_orphans_found: list[str] = field(default_factory=list)
    cloud_orphans_deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(
            (
                self.instances_restarted,
                self.instances_started,
                self.instances_given_up,
                self.reloaded,
                self.marked_missing,
                self.orphans_unloaded,
                self.rollouts_requeued,
                self.instances_recovered,
                self.trimmed,
                self.cloud_orphans_deleted,
            )
        )


@dataclass(frozen=True)
class CloudMetricPoint:
    """One minute of one statistic of a cloud metric: an endpoint variant's (``component``
    empty) or one of its inference components'."""

    endpoint_id: int
    component: str
    metric: str
    statistic: str
    minute: datetime
    value: float
    unit: str


@dataclass
class CloudMetrics:
    """What a backend read of its endpoints' cloud metrics: the points, the endpoints it could
    not read (endpoint id: why) and how many API calls it made."""

    points: list[CloudMetricPoint] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    calls: int = 0


@runtime_checkable
class ServingBackend(Protocol):
    """One serving technology (local Triton processes, SageMaker endpoints) behind one API."""

    #: The ``Endpoint.backend`` / ``Deployment.backend`` value this backend serves.
    name: str
    #: The deployment modes it can serve (``Endpoint.Mode`` values).
    modes: tuple[str, ...]
    #: Whether its endpoints' figures come from the cloud (``cloud_metrics``) as well.
    reports_cloud_metrics: bool

    def roll_out(self, *, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
        """Place the deployment's target version, load it and probe it; returns the endpoint
        that now holds it and the slowest probe's latency in ms. Raises InstanceUnavailable or
        CapacityExceeded for what a retry may fix, another DomainError for what it will not."""
        ...

    def prepare_probe(self, *, placement: Placement, actor: str) -> PreparedProbe:
        """Make a copy ready for its kind's warm-up request, loading it if needed (database
        reads and writes, in the calling thread); the request goes out when the caller calls
        the result's ``send``, in any thread."""
        ...

    def record_probe(self, *, placement: Placement, latency_ms: float) -> None:
        """Record a warm-up's time and latency on the placement."""
        ...

    def invoke(self, *, placement: Placement, inputs: list) -> InvokeResult:
        """Answer ``inputs`` with a copy, counted in the usage ledger."""
        ...

    async def forward(
        self, *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
    ) -> Forwarded:
        """Send a proxied request body, as it came, to a copy of ``model_name`` (its Triton
        name); raises ForwardFailed (``deployments.exceptions``) when the copy cannot answer."""
        ...

    async def generate(
        self, *, copy: Copy, model_name: str, public_name: str, body: bytes
    ) -> GenerationStream:
        """Open a generation request (``body``: the JSON of Triton's generate extension) on a
        copy of a generating model and return its stream once the copy has accepted it; raises
        ForwardFailed when the copy cannot answer. The caller closes the stream."""
        ...

    def close_connections(self) -> None:
        """Close the connections ``forward`` keeps open (the web server is stopping)."""
        ...

    def unload(self, *, placement: Placement, actor: str, reason: str) -> None:
        """Take a copy nobody wants any more out of memory, if it is there (never raises: what
        cannot be done now the reconciler finishes)."""
        ...

    def warmup_budget_mb(self, *, placement: Placement) -> float | None:
        """The memory copies like this one may hold on its instance, which a warm-up fills
        without evicting anything; None where the backend finds room itself (it loads a model
        on its first request)."""
        ...

    def reconcile(self, *, endpoints: Sequence[Endpoint], report: ReconcileReport) -> None:
        """Make each of these endpoints (all of this backend's live ones) hold what its
        placements say, recording each repair in ``report`` and as an Event; one endpoint's or
        instance's failure is an error in the report, never the end of the others' repairs."""
        ...

    def hourly_cost_usd(self, *, endpoint: Endpoint) -> Decimal:
        """What the endpoint costs per hour now."""
        ...

    def audit_account(self, *, report: ReconcileReport) -> None:
        """Find what this backend's account holds under the platform's names that the database
        does not know (reported as Events; deleted where the operator enabled it)."""
        ...

    def drain_instance(self, *, instance: Instance, actor: str, stop: bool = True) -> Instance:
        """Move every copy off one of the endpoint's instances (loaded elsewhere first), then
        stop it unless ``stop`` is false."""
        ...

    def rebalance_refusal(self, *, endpoint: Endpoint) -> str:
        """Why this endpoint's copies are not rebalanced model by model ("" where they are: the
        platform chooses each copy's instance and memory bounds them)."""
        ...

    def move_copy(
        self, *, placement: Placement, instance: Instance, actor: str, reason: str
    ) -> Placement:
        """Move a copy to another of its endpoint's instances by the rollout rules (loaded and
        warmed there, routes switched, then the old copy unloaded); returns the new copy.
        Only where the platform chooses each copy's instance."""
        ...

    def cloud_metrics(
        self, *, endpoints: Sequence[Endpoint], start: datetime, end: datetime
    ) -> CloudMetrics:
        """The cloud's per-minute metrics of these endpoints (this backend's live ones) from
        ``start`` to ``end``; one endpoint's failure is an error in the answer, never the end
        of the others' reads. A backend that measures its endpoints itself returns none."""
        ...


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


class NetworkCalls:
    """A bounded pool of threads for calls to instances and endpoints (HTTP, AWS): at most
    ``limit`` run at once, the rest wait their turn.

    Only the network goes to the threads. Django's connections are per thread, and a pass's
    reads and writes belong to the thread that holds its transaction and counts its queries,
    so a query made in one of these threads raises (``DatabaseInThread``) instead of quietly
    opening a connection of its own.
    """

    def __init__(self, *, limit: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix=name)

    def submit(self, function: Callable, /, *args, **kwargs) -> Future:
        """Queue ``function(*args, **kwargs)``; its result (or exception) is the future's."""
        return self._pool.submit(_without_database, function, args, kwargs)

    def __enter__(self) -> NetworkCalls:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # Leaving normally waits for every call; leaving on an error drops those not started.
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)


class DatabaseInThread(RuntimeError):
    """A ``NetworkCalls`` thread tried to query the database (a bug in the caller)."""


def _refuse_query(execute, sql, params, many, context):
    raise DatabaseInThread(f"A network-call thread tried to query the database: {sql[:200]}")


def _without_database(function: Callable, args: tuple, kwargs: dict):
    with connection.execute_wrapper(_refuse_query):
        try:
            return function(*args, **kwargs)
        finally:
            # Only a refused query opens this thread's connection; none is left behind.
            connection.close()


def record_rollout_progress(
    deployment: Deployment, message: str, *, endpoint: Endpoint | None = None
) -> None:
    """Show how far a rollout got on its deployment row (and, for a first deployment, where it
    is going)."""
    from deployments.models import Deployment

    update = {"status_reason": message[:4000], "updated_at": timezone.now()}
    if endpoint is not None and deployment.live_version_id is None:
        update["endpoint"] = endpoint
    Deployment.objects.filter(pk=deployment.pk).update(**update)


def within_name_limit(name: str) -> str:
    """``name`` if it fits 63 characters, else its head and a digest of the whole."""
    if len(name) <= ENDPOINT_NAME_MAX_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: ENDPOINT_NAME_MAX_LENGTH - 9]}-{digest}"


def short_endpoint_name(name: str) -> str:
    """An endpoint or component name as SageMaker takes it: lower case, within 63 characters."""
    return within_name_limit(name.lower().replace("_", "-"))


def dedicated_endpoint_name(model: TenantModel) -> str:
    """``ded-<tenant>-<model>``, shortened with a digest where it would pass 63 characters."""
    return within_name_limit(f"ded-{model.tenant.slug}-{model.name}")
