"""The shared-base layout on local endpoints: one loaded encoder per instance, every tenant's head.

A shared-base endpoint (``Endpoint.Mode.SHARED_BASE``) serves one model kind whose registry entry
has ``shared_base``. Each of its instances (a Triton process) loads the kind's shared encoder once,
as one Triton model (``models_registry.shared_base``), and keeps the tenants' heads in that
model's in-process cache. The platform's records stay the same as for any other copy:

- each tenant model version on an instance is a ``Placement``; its memory is its head's bytes,
  first the head files' measured sizes, then what the serving model reports holding once it is
  loaded (never a guess), so the eviction policy weighs heads by memory as it weighs models;
- the encoder is no placement: its measured memory is ``Instance.shared_base_memory_mb``,
  counted once, and the heads share what is left of the instance's budget;
- a head is loaded by sending its bytes (read from the version's artifact, checked against the
  digest recorded when it was placed, and checked again by the model) through the encoder's own
  ``invoke`` (``deployments.backends.shared_heads`` writes the bodies); unloading or evicting one
  is the same kind of call, milliseconds, never a Triton unload;
- a request's texts go to the encoder with the head id of each row; an answer that says the head
  is not resident (the serving model's cache dropped it, or Triton restarted) loads it and asks
  again once: a cold start, reported and counted like any other;
- concurrent requests for a cold head load it once (single flight in the process; the
  instance's row lock across processes), and loads and evictions on one instance are one
  decision under that lock, so two processes never spend the same free memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from config.errors import Conflict, DomainError
from config.events import record_event
from deployments import usage
from deployments.backends.base import (
    Copy,
    Forwarded,
    InvokeResult,
    PreparedProbe,
    ReconcileReport,
    in_thread,
    record_rollout_progress,
)
from deployments.backends.local import runtime
from deployments.backends.local.forward import upstream_pool
from deployments.backends.local.memory import model_memory_mb
from deployments.backends.local.runtime import LoadOutcome
from deployments.backends.local.upstream import UpstreamError
from deployments.backends.shared_heads import (
    HeadsNotLoaded,
    infer_body,
    list_heads_body,
    load_head_body,
    parse_heads_answer,
    parse_infer_answer,
    unload_head_body,
)
from deployments.backends.shared_requests import (
    head_files,
    head_id,
    join_body,
    single_model_answer,
    split_body,
    with_head,
)
from deployments.exceptions import (
    CapacityExceeded,
    ForwardFailed,
    InstanceUnavailable,
    ModelLoadConflict,
    ModelLoadFailed,
    ModelNotLoaded,
)
from deployments.models import (
    Deployment,
    Endpoint,
    EndpointUsageMinute,
    Instance,
    InstanceType,
    Placement,
)
from deployments.placement.eviction import ResidentModel, plan_load
from deployments.placement.rows import memory_of
from deployments.placement.throughput import ThroughputPlan, encoder_instances
from deployments.signals import routing_changed
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion
from models_registry.shared_base import shared_base_model_dir, shared_base_model_name
from models_registry.triton_runtime.tenantml_head import head_digest

logger = logging.getLogger(__name__)

ACTOR = "serving"
MB = 1024 * 1024
# How long a caller waits for another caller's load of the same head (in this process).
HEAD_LOAD_WAIT_S = 30.0


def serves(placement: Placement) -> bool:
    """Whether a copy is a head on a shared-base endpoint (served by this module)."""
    return placement.endpoint.mode == Endpoint.Mode.SHARED_BASE


_ENCODER_NAMES: dict[str, str] = {}


def encoder_name(kind: str) -> str:
    """The Triton name of a kind's shared encoder (named by its base's digest)."""
    name = _ENCODER_NAMES.get(kind)
    if name is None:
        name = _ENCODER_NAMES[kind] = shared_base_model_name(kind=kind)
    return name


# --- Endpoints and placements ----------------------------------------------------------------


def shared_base_endpoint(*, kind: str, actor: str) -> Endpoint:
    """The local shared-base endpoint of a kind, created on its first shared-base deployment
    (``local-shared-<kind>``, on the local instance type, one to two instances)."""
    if get_kind(kind).shared_base is None:
        raise DomainError(f"{kind} models have no shared base to serve them.", field="mode")
    endpoint = (
        Endpoint.objects.filter(
            backend=Endpoint.Backend.LOCAL, mode=Endpoint.Mode.SHARED_BASE, model_kind=kind
        )
        .exclude(status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED])
        .select_related("instance_type")
        .order_by("name")
        .first()
    )
    if endpoint is not None:
        return endpoint
    local_type = InstanceType.objects.filter(is_local=True).order_by("usd_per_hour", "name").first()
    if local_type is None:
        raise DomainError("The instance catalog has no local instance type.", field="instance_type")
    name, number = f"local-shared-{kind}", 1
    while Endpoint.objects.filter(name=name).exists():
        number += 1
        name = f"local-shared-{kind}-{number}"
    endpoint = Endpoint.objects.create(
        name=name,
        backend=Endpoint.Backend.LOCAL,
        mode=Endpoint.Mode.SHARED_BASE,
        instance_type=local_type,
        model_kind=kind,
        min_instances=1,
        max_instances=2,
    )
    record_event(
        kind="endpoint.created",
        actor=actor,
        message=(
            f"Local shared-base endpoint {endpoint.name} created for {kind} models: one "
            "encoder per instance answers every tenant's head."
        ),
        endpoint=endpoint,
    )
    return endpoint


def place_head(
    *, version: ModelVersion, instance: Instance, actor: str, pinned: bool = False
) -> Placement:
    """Assign a version's head to a shared-base instance (loaded on its first request, or by a
    probe), recording the head files' digest and measured size."""
    if version.status in (ModelVersion.Status.FAILED, ModelVersion.Status.RETIRED):
        raise Conflict(f"{version} is {version.status}; it cannot be served.", field="version")
    head_npz, labels_json = head_files(version)
    digest = head_digest(head_npz, labels_json)
    desired = Placement.DesiredState.PINNED if pinned else Placement.DesiredState.LOADED
    placement, created = Placement.objects.get_or_create(
        version=version,
        instance=instance,
        defaults={
            "endpoint": instance.endpoint,
            "desired_state": desired,
            "head_sha256": digest,
            "host_memory_mb": (len(head_npz) + len(labels_json)) / MB,
        },
    )
    if created:
        record_event(
            kind="placement.created",
            actor=actor,
            message=(
                f"{version} placed on {instance} as a head of the shared encoder "
                f"({len(head_npz) + len(labels_json):,} bytes, {desired})."
            ),
            version=version,
            endpoint=instance.endpoint,
            instance=instance,
        )
        routing_changed.send(sender=Placement, model_id=version.model_id)
    elif not placement.head_sha256:
        Placement.objects.filter(pk=placement.pk).update(head_sha256=digest)
        placement.head_sha256 = digest
    return placement


def heads_on(instance: Instance) -> int:
    """How many heads are placed (and wanted) on an instance."""
    return instance.placements.exclude(desired_state=Placement.DesiredState.UNLOADED).count()


def roll_out(*, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
    """Place the target version's head on the kind's shared-base endpoint (``replicas``
    instances: those with the fewest heads), load it and probe it; the endpoint and the slowest
    probe in ms."""
    target = deployment.target_version
    endpoint = shared_base_endpoint(kind=deployment.model.kind, actor=actor)
    record_rollout_progress(
        deployment, f"Placing v{target.number}'s head on {endpoint.name}.", endpoint=endpoint
    )
    desired = Placement.desired_state_for(version=target)
    pinned = desired == Placement.DesiredState.PINNED
    slowest = 0.0
    for instance in instances_for(
        endpoint=endpoint, version=target, replicas=deployment.replicas, actor=actor
    ):
        placement = place_head(version=target, instance=instance, actor=actor, pinned=pinned)
        if placement.desired_state != desired and (
            placement.desired_state == Placement.DesiredState.UNLOADED or pinned
        ):
            placement.desired_state = desired
            placement.save(update_fields=["desired_state", "updated_at"])
        record_rollout_progress(deployment, f"Loading v{target.number}'s head on {instance}.")
        prepared = prepare_probe(placement=placement, actor=actor)
        try:
            latency_ms = prepared.prepare_ms + prepared.send()
        except DomainError as exc:
            raise ModelLoadFailed(
                f"v{target.number}'s head loaded on {instance} but its probe failed: {exc.message}"
            ) from exc
        runtime.record_probe(placement=placement, latency_ms=latency_ms)
        slowest = max(slowest, latency_ms)
    return endpoint, slowest


def instances_for(
    *, endpoint: Endpoint, version: ModelVersion, replicas: int, actor: str
) -> list[Instance]:
    """The instances that take a version's head: where it is placed already, then the live
    instances with the fewest heads (heads are small: the encoder's throughput, not memory, is
    what an instance runs out of, and the endpoint scales out by request rate); a new instance
    when there are fewer live ones than ``replicas``."""
    chosen = [
        placement.instance
        for placement in Placement.objects.filter(
            version=version, endpoint=endpoint, instance__status__in=Instance.ROUTABLE_STATES
        )
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("instance__endpoint")
        .order_by("instance__ordinal")
    ][:replicas]
    while len(chosen) < replicas:
        candidates = [
            instance
            for instance in endpoint.instances.filter(status__in=Instance.ROUTABLE_STATES)
            if instance not in chosen and runtime.instance_process_alive(instance)
        ]
        if candidates:
            chosen.append(min(candidates, key=lambda i: (heads_on(i), i.ordinal)))
            continue
        live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
        if live >= endpoint.max_instances:
            raise CapacityExceeded(
                f"{endpoint.name} has no other live instance for {version} and may not grow "
                f"past {endpoint.max_instances} instances.",
                field="replicas",
            )
        chosen.append(runtime.start_local_instance(endpoint=endpoint, actor=actor))
    return chosen


# --- The shared encoder ----------------------------------------------------------------------

# Instances (id, Triton pid) whose encoder this process has seen loaded.
_ENCODERS_READY: set[tuple[int, int | None]] = set()
_ENCODER_LOCKS: dict[tuple[int, int | None], threading.Lock] = {}
_ENCODER_LOCKS_LOCK = threading.Lock()


def _encoder_lock(key: tuple[int, int | None]) -> threading.Lock:
    with _ENCODER_LOCKS_LOCK:
        return _ENCODER_LOCKS.setdefault(key, threading.Lock())


def forget_encoder(instance: Instance) -> None:
    """This process no longer assumes the instance's encoder is loaded (Triton said otherwise)."""
    _ENCODERS_READY.discard((instance.pk, instance.pid))


def ensure_encoder(*, instance: Instance, kind: str, actor: str = ACTOR) -> bool:
    """Load the kind's shared encoder on the instance if it is not there (once, whatever the
    number of callers); True when this call loaded it. A freshly loaded encoder holds no head,
    so the instance's heads are then recorded evicted."""
    key = (instance.pk, instance.pid)
    if key in _ENCODERS_READY:
        return False
    with _encoder_lock(key):
        if key in _ENCODERS_READY:
            return False
        client = runtime.client_for(instance)
        name = encoder_name(kind)
        if client.get_model(name) is not None:
            _ENCODERS_READY.add(key)
            return False
        configured = settings.TENANTML_SHARED_BASE_HEAD_BUDGET_MB
        model_dir = shared_base_model_dir(
            kind=kind,
            models_root=runtime.models_root(),
            head_cache_bytes=int(configured * MB) if configured else None,
        )
        started = time.perf_counter()
        try:
            client.load_model(name, str(model_dir), timeout_s=runtime.LOAD_TIMEOUT_S)
        except ModelLoadConflict:
            # Another process registered it under this name meanwhile: it is loaded.
            if client.get_model(name) is None:
                raise
        load_ms = (time.perf_counter() - started) * 1000
        reading = model_memory_mb(instance.pid, name) if instance.pid else None
        memory_mb = round(reading.rss_mb, 1) if reading is not None else None
        with transaction.atomic():
            Instance.objects.filter(pk=instance.pk).update(
                shared_base_memory_mb=memory_mb, updated_at=timezone.now()
            )
            gone = Placement.objects.filter(
                instance_id=instance.pk, actual_state=Placement.ActualState.LOADED
            ).update(actual_state=Placement.ActualState.EVICTED, updated_at=timezone.now())
            record_event(
                kind="shared_base.loaded",
                actor=actor,
                message=(
                    f"The shared {kind} encoder loaded on {instance} in {load_ms:,.0f} ms"
                    + (f", {memory_mb:,.0f} MB resident" if memory_mb is not None else "")
                    + (f"; {gone} heads it held before load again on demand." if gone else ".")
                ),
                endpoint=instance.endpoint,
                instance=instance,
                data={"load_time_ms": round(load_ms, 1), "host_memory_mb": memory_mb},
            )
        instance.shared_base_memory_mb = memory_mb
        _ENCODERS_READY.add(key)
        return True


def head_budget_mb(instance: Instance, *, kind: str) -> float:
    """The memory an instance's heads may hold: its budget less the encoder's measured memory,
    within the serving model's head cache and ``SHARED_BASE_HEAD_BUDGET_MB`` when set."""
    encoder_mb = instance.shared_base_memory_mb
    if encoder_mb is None:
        encoder_mb = float(getattr(get_kind(kind), "expected_memory_mb", 0) or 0)
    budget = max(0.0, instance.memory_budget_mb - encoder_mb)
    spec = get_kind(kind).shared_base
    if spec is not None:
        budget = min(budget, spec.head_cache_bytes / MB)
    configured = settings.TENANTML_SHARED_BASE_HEAD_BUDGET_MB
    return min(budget, configured) if configured else budget


# --- Loading and evicting heads --------------------------------------------------------------


class _SingleFlight:
    """One load per head in this process; later callers wait on the first caller's future."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[int, Future] = {}

    def join(self, key: int) -> tuple[Future, bool]:
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                return future, False
            future = self._inflight[key] = Future()
            return future, True

    def finish(self, key: int) -> Future:
        with self._lock:
            return self._inflight.pop(key)


_HEAD_LOADS = _SingleFlight()


def ensure_loaded(*, placement: Placement, actor: str = ACTOR) -> LoadOutcome:
    """Make sure the placement's head (and its instance's encoder) is loaded; one load for any
    number of concurrent callers; says whether this call was a cold start."""
    state = Placement.objects.values_list("actual_state", flat=True).get(pk=placement.pk)
    if state == Placement.ActualState.LOADED:
        return LoadOutcome(placement_id=placement.pk, cold_start=False)
    future, leader = _HEAD_LOADS.join(placement.pk)
    if not leader:
        outcome = future.result(timeout=HEAD_LOAD_WAIT_S + runtime.LOAD_TIMEOUT_S)
        return LoadOutcome(placement_id=placement.pk, cold_start=outcome.cold_start)
    try:
        outcome = _load_head(placement_id=placement.pk, actor=actor)
    except BaseException as exc:
        _HEAD_LOADS.finish(placement.pk).set_exception(exc)
        raise
    _HEAD_LOADS.finish(placement.pk).set_result(outcome)
    return outcome


def _resident_heads(instance: Instance, *, exclude: int) -> tuple[list[ResidentModel], dict]:
    resident = (
        Placement.objects.filter(instance=instance, actual_state__in=Placement.RESIDENT_STATES)
        .exclude(pk=exclude)
        .select_related("version__model__tenant")
    )
    view, by_key = [], {}
    for other in resident:
        by_key[str(other.pk)] = other
        stamp = other.last_invoked_at or other.loaded_at
        view.append(
            ResidentModel(
                key=str(other.pk),
                memory_mb=memory_of(other),
                pinned=other.is_pinned,
                last_used=stamp.timestamp() if stamp else 0.0,
                loading=other.actual_state != Placement.ActualState.LOADED,
            )
        )
    return view, by_key


def _load_head(*, placement_id: int, actor: str) -> LoadOutcome:
    placement = Placement.objects.select_related(
        "version__model__tenant", "instance__endpoint", "endpoint"
    ).get(pk=placement_id)
    instance, version = placement.instance, placement.version
    if instance is None or instance.status not in Instance.ROUTABLE_STATES:
        raise InstanceUnavailable(
            f"{instance or placement.endpoint} is not serving; retry once the reconciler "
            "restarts it."
        )
    kind = version.model.kind
    ensure_encoder(instance=instance, kind=kind, actor=actor)
    head_npz, labels_json = head_files(version)
    digest = head_digest(head_npz, labels_json)
    if placement.head_sha256 and digest != placement.head_sha256:
        reason = (
            f"{version}'s head files do not match the digest recorded when it was placed "
            f"({digest[:12]}… ≠ {placement.head_sha256[:12]}…); it is not loaded."
        )
        _mark_failed(placement, reason, actor=actor)
        raise ModelLoadFailed(reason)
    client = runtime.client_for(instance)
    name = encoder_name(kind)
    incoming_mb = (len(head_npz) + len(labels_json)) / MB
    # The plan, the victims' unloads and the load are one decision under the instance's lock:
    # each call takes milliseconds, so holding it costs other loads on the instance little.
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        state = Placement.objects.values_list("actual_state", flat=True).get(pk=placement.pk)
        if state == Placement.ActualState.LOADED:
            return LoadOutcome(placement_id=placement.pk, cold_start=False)
        resident, by_key = _resident_heads(locked, exclude=placement.pk)
        plan = plan_load(
            resident=resident,
            incoming_key=head_id(version),
            incoming_mb=incoming_mb,
            budget_mb=head_budget_mb(locked, kind=kind),
            order=runtime.eviction_order(locked.pk),
        )
        victims = [by_key[key] for key in plan.evict]
        for victim in victims:
            _send_control(client, name, unload_head_body(head_id=head_id(victim.version)))
        started = time.perf_counter()
        try:
            resident_bytes = _send_control(
                client,
                name,
                load_head_body(
                    head_id=head_id(version),
                    head_npz=head_npz,
                    labels_json=labels_json,
                    sha256=digest,
                ),
            )
        except ModelNotLoaded:
            forget_encoder(instance)
            raise InstanceUnavailable(
                f"The shared encoder on {instance} went away; retry shortly."
            ) from None
        except DomainError as exc:
            _mark_failed(placement, exc.message, actor=actor)
            raise ModelLoadFailed(f"{version}'s head was refused: {exc.message}") from exc
        load_time_ms = (time.perf_counter() - started) * 1000
        now = timezone.now()
        held = resident_bytes.get(head_id(version))
        Placement.objects.filter(pk=placement.pk).update(
            actual_state=Placement.ActualState.LOADED,
            host_memory_mb=(held / MB) if held is not None else incoming_mb,
            load_time_ms=load_time_ms,
            loaded_at=now,
            last_invoked_at=now,
            failure_reason="",
            loading_by="",
            retries=0,
            updated_at=now,
        )
        if victims:
            Placement.objects.filter(pk__in=[v.pk for v in victims]).update(
                actual_state=Placement.ActualState.EVICTED, updated_at=now
            )
        # Heads the serving model's own cache let go of are no longer resident either.
        dropped = [
            p.pk
            for p in by_key.values()
            if p not in victims and head_id(p.version) not in resident_bytes
        ]
        if dropped:
            Placement.objects.filter(pk__in=dropped).update(
                actual_state=Placement.ActualState.EVICTED, updated_at=now
            )
        record_event(
            kind="placement.loaded",
            actor=actor,
            message=(
                f"{version}'s head loaded into the shared encoder on {instance} in "
                f"{load_time_ms:,.1f} ms ({held if held is not None else 0:,} bytes)."
            ),
            version=version,
            endpoint=placement.endpoint,
            instance=instance,
            data={"load_time_ms": round(load_time_ms, 2), "head_bytes": held, "head": True},
        )
        for victim in victims:
            record_event(
                kind="placement.evicted",
                actor=actor,
                message=(
                    f"{victim.version}'s head evicted from {instance} to make room for "
                    + (
                        str(version)
                        if victim.version.model.tenant_id == version.model.tenant_id
                        else "another tenant's model"
                    )
                    + "."
                ),
                version=victim.version,
                endpoint=placement.endpoint,
                instance=instance,
                data={"host_memory_mb": memory_of(victim)},
            )
    return LoadOutcome(placement_id=placement.pk, cold_start=True, load_time_ms=load_time_ms)


def _send_control(client, name: str, body: dict) -> dict[str, int]:
    """Send a control body to the shared encoder; the resident heads (id → bytes) it reports."""
    return parse_heads_answer(client.invoke(name, body))


def _mark_failed(placement: Placement, reason: str, *, actor: str) -> None:
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.FAILED,
        failure_reason=reason[:4000],
        retries=placement.retries + 1,
        updated_at=timezone.now(),
    )
    record_event(
        kind="placement.load_failed",
        severity="error",
        actor=actor,
        message=f"{placement.version}'s head failed to load on {placement.instance}: {reason}",
        version=placement.version,
        endpoint=placement.endpoint,
        instance=placement.instance,
    )


def unload(*, placement: Placement, actor: str, reason: str) -> None:
    """Take a head nobody wants out of its instance's cache (an in-process call); what fails
    now the reconciler finishes."""
    if placement.actual_state not in Placement.RESIDENT_STATES or placement.instance is None:
        return
    try:
        _send_control(
            runtime.client_for(placement.instance),
            encoder_name(placement.version.model.kind),
            unload_head_body(head_id=head_id(placement.version)),
        )
    except ModelNotLoaded:
        pass  # no encoder, so no head either
    except DomainError as exc:
        logger.warning("Could not unload %s's head now: %s", placement, exc.message)
        return
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
    )
    record_event(
        kind="placement.unloaded",
        actor=actor,
        message=f"{placement.version}'s head unloaded from {placement.instance}: {reason}",
        version=placement.version,
        endpoint=placement.endpoint,
        instance=placement.instance,
    )


# --- Answering -------------------------------------------------------------------------------


def _mark_not_resident(placement_id: int) -> None:
    Placement.objects.filter(pk=placement_id, actual_state=Placement.ActualState.LOADED).update(
        actual_state=Placement.ActualState.EVICTED, updated_at=timezone.now()
    )


def _reload(placement: Placement, *, encoder_gone: bool, actor: str = ACTOR) -> bool:
    """The head (or the whole encoder) was not there: record it and load it again."""
    if encoder_gone:
        forget_encoder(placement.instance)
    _mark_not_resident(placement.pk)
    ensure_loaded(placement=placement, actor=actor)
    return True


def invoke(*, placement: Placement, inputs: list) -> InvokeResult:
    """Answer ``inputs`` with the placement's head on its instance's shared encoder, loading
    the head (and the encoder) first when cold; counted in the usage ledger."""
    version = placement.version
    texts = [str(text) for text in inputs]
    body = infer_body(texts=texts, head_ids=[head_id(version)] * len(texts))
    client = runtime.client_for(placement.instance)
    name = encoder_name(version.model.kind)
    started = time.perf_counter()
    cold_start = False
    runtime.record_access(placement)
    try:
        cold_start = ensure_loaded(placement=placement).cold_start
        for attempt in range(2):
            try:
                outputs = parse_infer_answer(client.invoke(name, body))
                break
            except (HeadsNotLoaded, ModelNotLoaded) as exc:
                if attempt == 1:
                    raise InstanceUnavailable(
                        f"{version}'s head was unloaded again before it could answer; retry "
                        "shortly."
                    ) from exc
                cold_start = _reload(placement, encoder_gone=isinstance(exc, ModelNotLoaded))
    except Exception:
        _count(placement, started, cold_start=cold_start, error=True)
        raise
    latency_ms = _count(placement, started, cold_start=cold_start, error=False)
    return InvokeResult(
        outputs=outputs, cold_start=cold_start, latency_ms=latency_ms, model_version=version.number
    )


def _count(placement: Placement, started: float, *, cold_start: bool, error: bool) -> float:
    latency_ms = (time.perf_counter() - started) * 1000
    usage.COUNTERS.record(
        version_id=placement.version_id,
        endpoint_id=placement.endpoint_id,
        tenant_id=placement.version.model.tenant_id,
        latency_ms=latency_ms,
        cold_start=cold_start,
        error=error,
        placement_id=placement.pk,
    )
    runtime.touch(placement.pk)
    return latency_ms


def prepare_probe(*, placement: Placement, actor: str = ACTOR) -> PreparedProbe:
    """Load the head if needed (here: rows are read and written); the warm-up request is the
    result's ``send``, which only talks to Triton."""
    version = placement.version
    kind = get_kind(version.model.kind)
    texts = [str(text) for text in (kind.warmup_inputs or ["warm-up"])]
    body = infer_body(texts=texts, head_ids=[head_id(version)] * len(texts))
    started = time.perf_counter()
    cold_start = ensure_loaded(placement=placement, actor=actor).cold_start
    prepare_ms = (time.perf_counter() - started) * 1000
    client = runtime.client_for(placement.instance)
    name = encoder_name(version.model.kind)

    def send() -> float:
        sent = time.perf_counter()
        try:
            parse_infer_answer(client.invoke(name, body))
        except HeadsNotLoaded as exc:
            raise ModelNotLoaded(
                f"{version}'s head is not loaded on {placement.instance}."
            ) from exc
        return (time.perf_counter() - sent) * 1000

    return PreparedProbe(cold_start=cold_start, prepare_ms=prepare_ms, send=send)


# --- Proxied bodies (Open Inference Protocol, SageMaker runtime, the REST invoke) ------------

_ENCODER_OF_ENDPOINT: dict[int, str] = {}


def _encoder_of(endpoint_id: int) -> str:
    name = _ENCODER_OF_ENDPOINT.get(endpoint_id)
    if name is None:
        kind = Endpoint.objects.values_list("model_kind", flat=True).get(pk=endpoint_id)
        name = _ENCODER_OF_ENDPOINT[endpoint_id] = encoder_name(kind)
    return name


def _load_for_request(placement_id: int, *, encoder_gone: bool) -> None:
    placement = Placement.objects.select_related(
        "version__model__tenant", "instance__endpoint", "endpoint"
    ).get(pk=placement_id)
    _reload(placement, encoder_gone=encoder_gone, actor="proxy")


def _instance_down(instance_id: int) -> None:
    instance = Instance.objects.filter(pk=instance_id).select_related("endpoint").first()
    if instance is not None:
        runtime.check_instance_health(instance=instance, actor="proxy")


# Loads of a head for proxied requests in this process: concurrent requests share one.
_REQUEST_LOADS: dict[int, asyncio.Future] = {}


async def _load_once(copy: Copy, *, encoder_gone: bool) -> None:
    waiting = _REQUEST_LOADS.get(copy.placement_id)
    if waiting is not None:
        await asyncio.shield(waiting)
        return
    future = asyncio.get_running_loop().create_future()
    _REQUEST_LOADS[copy.placement_id] = future
    try:
        await in_thread(_load_for_request)(copy.placement_id, encoder_gone=encoder_gone)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no warning when nobody else waited
        raise
    finally:
        _REQUEST_LOADS.pop(copy.placement_id, None)
    future.set_result(None)


async def _post(copy: Copy, encoder: str, body: bytes, content_type: str, public_name: str):
    try:
        return await upstream_pool().post(
            copy.host,
            copy.port,
            f"/models/{encoder}/invoke",
            body,
            content_type,
            settings.TENANTML_PROXY_UPSTREAM_TIMEOUT_S,
        )
    except UpstreamError as exc:
        await in_thread(_instance_down)(copy.instance_id)
        raise ForwardFailed(
            f"The instance serving {public_name} is not answering ({exc!s:.80}); retry "
            "shortly while it is restored.",
            retry_after_s=5,
            metric="connection",
            stale_route=True,
        ) from exc


def _refusal(status: int, data: bytes) -> ForwardFailed:
    try:
        message = str(json.loads(data).get("error", ""))[:500]
    except (ValueError, AttributeError):
        message = data[:200].decode("utf-8", "replace")
    if status == 400:
        return ForwardFailed(
            f"The model refused the request: {message}", status=400, code="invalid"
        )
    return ForwardFailed(
        f"The model's server failed the request ({status}): {message or 'no details'}",
        status=502,
        code="upstream",
        metric=f"status_{status}",
    )


async def forward(
    *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
) -> Forwarded:
    """Send a proxied single-model request body to the copy's shared encoder with its head id
    on every row, and answer as the single model would. A head that is not resident (or an
    encoder that is not: Triton restarted) is loaded and the request sent again once, a cold
    start."""
    try:
        header, binary, is_binary = split_body(body, content_type)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ForwardFailed(
            f"The request is not valid JSON: {exc}", status=400, code="invalid"
        ) from exc
    shared_body, shared_type = join_body(with_head(header, model_name), binary, is_binary)
    encoder = _ENCODER_OF_ENDPOINT.get(copy.endpoint_id) or await in_thread(_encoder_of)(
        copy.endpoint_id
    )
    if copy.instance_id is not None:
        runtime.access_history(copy.instance_id).record(str(copy.placement_id))
    cold = False
    for attempt in range(2):
        response = await _post(copy, encoder, shared_body, shared_type, public_name)
        if response.status == 404:
            missing, encoder_gone = True, True  # no encoder: Triton restarted
        elif response.status != 200:
            raise _refusal(response.status, response.body)
        else:
            answer_type = response.headers.get("content-type", "application/json")
            try:
                answer, answer_binary, answer_is_binary = split_body(response.body, answer_type)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ForwardFailed(
                    "The shared encoder answered with something that is not JSON.",
                    status=502,
                    code="upstream",
                ) from exc
            single, missing = single_model_answer(answer)
            encoder_gone = False
            if not missing:
                runtime.touch(copy.placement_id)
                data, data_type = join_body(single, answer_binary, answer_is_binary)
                return Forwarded(status=200, content_type=data_type, body=data, cold_start=cold)
        if attempt == 1:
            break
        await _load_once(copy, encoder_gone=encoder_gone)
        cold = True
    raise ForwardFailed(
        f"{public_name} was unloaded again to make room for another model before it could "
        "answer; retry shortly.",
        retry_after_s=1,
    )


# --- Repairs ---------------------------------------------------------------------------------


def reconcile_instance(
    *, instance: Instance, loaded: frozenset[str], report: ReconcileReport
) -> None:
    """Make a shared-base instance hold what its placements say: the encoder loaded when any
    head is wanted, heads recorded loaded that the encoder does not hold marked evicted, heads it
    holds that nobody wants unloaded, pinned and recently used heads loaded again."""
    placements = list(
        Placement.objects.filter(instance=instance).select_related(
            "version__model__tenant", "endpoint"
        )
    )
    placements = [p for p in placements if p.endpoint_id == instance.endpoint_id]
    for placement in placements:
        placement.instance = instance
    wanted = [p for p in placements if p.desired_state != Placement.DesiredState.UNLOADED]
    kind = instance.endpoint.model_kind
    name = encoder_name(kind)
    client = runtime.client_for(instance)
    if name not in loaded:
        forget_encoder(instance)
        gone = [p for p in placements if p.actual_state in Placement.RESIDENT_STATES]
        if gone:
            Placement.objects.filter(pk__in=[p.pk for p in gone]).update(
                actual_state=Placement.ActualState.EVICTED, updated_at=timezone.now()
            )
            report.marked_missing.extend(str(p) for p in gone)
            for p in gone:
                p.actual_state = Placement.ActualState.EVICTED
        if not wanted:
            return
        try:
            ensure_encoder(instance=instance, kind=kind, actor="reconciler")
        except DomainError as exc:
            report.errors.append(f"{instance}: {exc.message}")
            return
        report.reloaded.append(f"{name} on {instance}")
        resident: dict[str, int] = {}
    else:
        try:
            resident = _send_control(client, name, list_heads_body())
        except DomainError as exc:
            report.errors.append(f"{instance}: {exc.message}")
            return
    by_head = {head_id(p.version): p for p in placements}
    for placement in placements:
        if (
            placement.actual_state == Placement.ActualState.LOADED
            and head_id(placement.version) not in resident
        ):
            _mark_not_resident(placement.pk)
            placement.actual_state = Placement.ActualState.EVICTED
            report.marked_missing.append(str(placement))
    for head, _bytes in sorted(resident.items()):
        owner = by_head.get(head)
        if owner is not None and owner.desired_state != Placement.DesiredState.UNLOADED:
            continue
        try:
            _send_control(client, name, unload_head_body(head_id=head))
        except DomainError as exc:
            report.errors.append(f"{instance}: {exc.message}")
            continue
        if owner is not None:
            Placement.objects.filter(pk=owner.pk).update(
                actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
            )
        report.orphans_unloaded.append(f"{head} on {instance}")
    hot_since = timezone.now() - timedelta(seconds=settings.TENANTML_HOT_MODEL_WINDOW_S)
    for placement in _reload_order(wanted, hot_since=hot_since):
        try:
            ensure_loaded(placement=placement, actor="reconciler")
        except (DomainError, CapacityExceeded) as exc:
            report.errors.append(f"{placement}: {getattr(exc, 'message', exc)}")
            continue
        report.reloaded.append(str(placement))


def _reload_order(placements: Sequence[Placement], *, hot_since) -> list[Placement]:
    """Pinned heads, then those used within the hot window (most recent first), that are not
    resident and have not failed for good."""
    pinned, hot = [], []
    for placement in placements:
        if placement.actual_state in Placement.RESIDENT_STATES:
            continue
        if placement.actual_state == Placement.ActualState.FAILED and placement.retries >= 3:
            continue
        if placement.is_pinned:
            pinned.append(placement)
        elif placement.last_invoked_at and placement.last_invoked_at >= hot_since:
            hot.append(placement)
    hot.sort(key=lambda p: p.last_invoked_at, reverse=True)
    return pinned + hot


# --- Scaling by request rate ----------------------------------------------------------------

# The minutes of traffic a scaling decision reads.
SCALE_WINDOW_MINUTES = 5


def scale_endpoints(*, endpoints: Sequence[Endpoint], report: ReconcileReport) -> None:
    """Run each shared-base endpoint on the instances its request rate needs (see
    ``deployments.placement.throughput``); one endpoint's failure is an error in the report."""
    for endpoint in endpoints:
        if endpoint.mode != Endpoint.Mode.SHARED_BASE:
            continue
        try:
            scale_for_throughput(endpoint=endpoint, report=report)
        except DomainError as exc:
            report.errors.append(f"{endpoint.name}: {exc.message}")


def measured_rate(endpoint: Endpoint) -> tuple[float, float]:
    """The endpoint's requests a second over the last ``SCALE_WINDOW_MINUTES`` and their mean
    latency in ms, from the usage time series."""
    since = timezone.now() - timedelta(minutes=SCALE_WINDOW_MINUTES)
    totals = EndpointUsageMinute.objects.filter(endpoint=endpoint, minute__gte=since).aggregate(
        invocations=Sum("invocations"), latency_ms=Sum("latency_ms_sum")
    )
    invocations = totals["invocations"] or 0
    if not invocations:
        return 0.0, 0.0
    return invocations / (SCALE_WINDOW_MINUTES * 60), (totals["latency_ms"] or 0) / invocations


def scale_for_throughput(*, endpoint: Endpoint, report: ReconcileReport) -> ThroughputPlan:
    """Start or stop instances of a shared-base endpoint so that its measured request rate keeps
    each encoder busy at most ``TARGET_BUSY_FRACTION``; a new instance takes a copy of every
    head the endpoint serves (loaded on its first request), a stopped one's copies are dropped."""
    requests_per_s, service_ms = measured_rate(endpoint)
    live = list(endpoint.instances.filter(status__in=Instance.ROUTABLE_STATES).order_by("ordinal"))
    plan = encoder_instances(
        requests_per_s=requests_per_s,
        service_ms=service_ms,
        current=len(live),
        min_instances=endpoint.min_instances,
        max_instances=endpoint.max_instances,
    )
    if plan.instances > len(live):
        for _ in range(plan.instances - len(live)):
            instance = runtime.start_local_instance(endpoint=endpoint, actor="reconciler")
            copied = copy_heads_to(instance=instance, actor="reconciler")
            report.instances_started.append(str(instance))
            record_event(
                kind="endpoint.scaled_out",
                actor="reconciler",
                message=(
                    f"{endpoint.name} scaled out to {instance}: {plan.basis()}; it takes a "
                    f"copy of each of the endpoint's {copied} heads."
                ),
                endpoint=endpoint,
                instance=instance,
                data={"requests_per_s": requests_per_s, "service_ms": service_ms},
            )
    elif plan.instances < len(live):
        keep = live[: plan.instances]
        for instance in live[plan.instances :]:
            _keep_heads_served(leaving=instance, staying=keep, actor="reconciler")
            moved = list(
                instance.placements.exclude(
                    desired_state=Placement.DesiredState.UNLOADED
                ).values_list("version__model_id", flat=True)
            )
            instance.placements.all().mark_unwanted()
            runtime.stop_local_instance(
                instance=instance, actor="reconciler", reason=f"fewer requests: {plan.basis()}"
            )
            report.trimmed.append(f"{instance} (scaled in)")
            record_event(
                kind="endpoint.scaled_in",
                actor="reconciler",
                message=f"{endpoint.name} scaled in, {instance} stopped: {plan.basis()}.",
                endpoint=endpoint,
                instance=instance,
                data={"requests_per_s": requests_per_s, "service_ms": service_ms},
            )
            for model_id in set(moved):
                routing_changed.send(sender=Placement, model_id=model_id)
    return plan


def _keep_heads_served(*, leaving: Instance, staying: list[Instance], actor: str) -> None:
    """Place each head of an instance about to stop that no staying instance holds on the
    staying instance with the fewest heads (loaded there on its next request)."""
    held = set(
        Placement.objects.filter(instance__in=staying)
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .values_list("version_id", flat=True)
    )
    orphaned = (
        leaving.placements.exclude(desired_state=Placement.DesiredState.UNLOADED)
        .exclude(version_id__in=held)
        .select_related("version__model__tenant")
    )
    for placement in orphaned:
        target = min(staying, key=lambda i: (heads_on(i), i.ordinal))
        place_head(
            version=placement.version, instance=target, actor=actor, pinned=placement.is_pinned
        )


def copy_heads_to(*, instance: Instance, actor: str) -> int:
    """Place every head wanted on the instance's endpoint on this instance too (any instance
    holds any head: they are KB); how many were placed."""
    wanted = (
        Placement.objects.filter(endpoint_id=instance.endpoint_id)
        .exclude(instance=instance)
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("version__model__tenant")
        .order_by("version_id", "-desired_state")
    )
    versions: dict[int, Placement] = {}
    for placement in wanted:
        versions.setdefault(placement.version_id, placement)
    for placement in versions.values():
        place_head(
            version=placement.version, instance=instance, actor=actor, pinned=placement.is_pinned
        )
    return len(versions)


def drain_instance(*, instance: Instance, actor: str, stop: bool = True) -> Instance:
    """Move every head off an instance (placed and loaded on the endpoint's other instances
    first, a new one started when there is none and the endpoint may grow), then stop it
    unless ``stop`` is false."""
    instance = runtime.begin_draining(instance=instance, actor=actor, what="heads")
    if instance.status == Instance.Status.STOPPED:
        return instance
    endpoint = instance.endpoint
    moving = list(
        instance.placements.exclude(desired_state=Placement.DesiredState.UNLOADED).select_related(
            "version__model__tenant", "endpoint", "instance"
        )
    )
    others = [
        other
        for other in endpoint.instances.filter(status__in=Instance.ROUTABLE_STATES)
        if other.pk != instance.pk and runtime.instance_process_alive(other)
    ]
    live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
    if moving and not others and live < endpoint.max_instances:
        others = [runtime.start_local_instance(endpoint=endpoint, actor=actor)]
    for placement in moving:
        if others:
            target = min(others, key=lambda i: (heads_on(i), i.ordinal))
            copy = place_head(
                version=placement.version, instance=target, actor=actor, pinned=placement.is_pinned
            )
            if placement.actual_state == Placement.ActualState.LOADED or placement.is_pinned:
                copy.instance = target
                ensure_loaded(placement=copy, actor=actor)
        Placement.objects.filter(pk=placement.pk).mark_unwanted()
        unload(placement=placement, actor=actor, reason=f"{instance} is draining")
        routing_changed.send(sender=Placement, model_id=placement.version.model_id)
    if stop:
        instance = runtime.stop_local_instance(
            instance=instance, actor=actor, reason="drained by an operator"
        )
    return instance
