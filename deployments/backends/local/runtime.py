"""Serving writes: local endpoint instances, and multi-model semantics on each instance.

SageMaker multi-model endpoints load a model on its first request, unload the least recently
used one when memory runs short and count cache hits; this module gives local endpoints the same
behaviour on real Triton processes:

- a request for a model that is not loaded loads it (``ensure_loaded``), and N concurrent requests
  for the same cold model cause one load (single-flight: in process through a shared future,
  across processes through the placement row, which only one process can move to ``loading``);
- before a load, the eviction policy picks least-recently-used unpinned models to unload so that
  the measured memory of what stays plus the new model fits the instance's budget; pinned models
  are never evicted, and a model that cannot fit raises ``CapacityExceeded``;
- ahead of need, a background evictor per instance (a thread of the serving process, woken when
  a load starts and when it ends) unloads models once what is resident crosses
  ``EVICTION_HIGH_WATERMARK`` of the budget, down to ``EVICTION_LOW_WATERMARK``, so a cold load
  normally finds room and never waits for an unload; a model being unloaded counts as resident
  until Triton reports it gone, and a load that needs its memory waits for that rather than
  choosing more victims;
- loads of different models on one instance run in parallel, each reserving its measured (or
  estimated) memory under the instance's row lock before it starts;
- every load verifies the package's sha256, measures the loaded model's real resident memory and
  stores it on the placement (and on the version the first time), and records an Event; a failed
  load marks the placement failed with Triton's reason and leaves the instance serving;
- on an instance type with GPUs whose Triton sees a GPU, the version is rendered for the GPU
  (``KIND_GPU``, CUDA first) and its GPU memory is measured and budgeted beside host memory;
  where Triton sees none, the CPU package loads instead (Triton refuses ``KIND_GPU`` there).

It is the serving half of the deployments services (``services.py`` keeps the bookkeeping), split
out because it is the only part that talks to a backend.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from config.errors import Conflict, DomainError
from config.events import record_event
from deployments import usage
from deployments.backends.base import InvokeResult, PreparedProbe, ProbeResult
from deployments.backends.generated import generation_body, whole_output
from deployments.backends.local.budgets import (
    budget_for_new_instance,
    record_starting_budget,
    share_machine_memory,
)
from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.gates import ModelGates, gates_in
from deployments.backends.local.memory import (
    gpu_memory_by_device_mb,
    gpu_memory_growth_mb,
    model_memory_mb,
)
from deployments.backends.local.packages import CPU, GPU, load_device, prepare_model_dir
from deployments.backends.local.process import start_triton, stop_triton
from deployments.exceptions import (
    InstanceUnavailable,
    ModelBusy,
    ModelLoadFailed,
    UnloadTimedOut,
)
from deployments.models import Endpoint, Instance, Placement
from deployments.placement.eviction import (
    AccessHistory,
    CapacityExceeded,
    ResidentModel,
    evictions_make_room,
    lru_order,
    plan_headroom,
    plan_load,
    plan_trim,
)
from deployments.placement.rows import held_gpu_memory_mb, instance_gpu_budget_mb, memory_of
from deployments.signals import routing_changed
from models_registry import artifacts
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion
from models_registry.services.packaging import device_model_dir

logger = logging.getLogger(__name__)

ACTOR = "serving"
# How long a request waits for another process's load of the same model.
FOREIGN_LOAD_WAIT_S = 60.0
LOAD_TIMEOUT_S = 120.0
# How long a load waits for other loads (and evictions) in flight to free the memory it needs,
# and how often it looks again meanwhile.
CAPACITY_WAIT_S = 20.0
CAPACITY_POLL_S = 0.05
# How long an eviction waits for the requests in flight on its model to finish.
DRAIN_TIMEOUT_S = 30.0
# An unload takes about 1.2 s through Triton's model control (2 s through the SageMaker front
# end); one that has not finished in this long has wedged the server, which is then restarted.
UNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class LoadOutcome:
    placement_id: int
    cold_start: bool
    load_time_ms: float | None = None


# --- Instances -------------------------------------------------------------------------------


def instances_root() -> Path:
    return Path(settings.VAR_DIR) / "triton" / "instances"


def gates_for(host: str, port: int) -> ModelGates:
    """The invocation gates of the models on the instance at ``host:port`` (shared by every
    process on this machine: see ``deployments.backends.local.gates``)."""
    return gates_in(Path(settings.VAR_DIR) / "triton" / "gates" / f"{host}-{port}")


def models_root() -> Path:
    """Where verified packages are unpacked, by sha256, shared by every local instance."""
    return Path(settings.VAR_DIR) / "triton" / "models"


def start_local_instance(
    *, endpoint: Endpoint, actor: str, memory_budget_mb: int | None = None
) -> Instance:
    """Start one more Triton process for a local endpoint and record it as a healthy instance."""
    if endpoint.backend != Endpoint.Backend.LOCAL:
        raise DomainError(f"Endpoint {endpoint.name} is not a local endpoint.", field="endpoint")
    # The machine's memory is shared by its running local instances: the new one's budget
    # comes out of the others' before its Triton starts (deployments.backends.local.budgets).
    starting = budget_for_new_instance(endpoint=endpoint, operator_mb=memory_budget_mb)
    with transaction.atomic():
        Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        ordinal = max(endpoint.instances.values_list("ordinal", flat=True), default=-1) + 1
        instance = Instance.objects.create(
            endpoint=endpoint,
            ordinal=ordinal,
            status=Instance.Status.STARTING,
            host="127.0.0.1",
            memory_budget_mb=starting.budget_mb,
        )
        record_starting_budget(instance=instance, starting=starting, actor=actor)
    plan = share_machine_memory(actor=actor, reason=f"{instance} is starting", trim=trim_to_budget)
    budget = instance.memory_budget_mb = plan.budgets[instance.pk].budget_mb
    workdir = instances_root() / f"{endpoint.name}-{ordinal}"
    try:
        process = start_triton(workdir=workdir, host="127.0.0.1")
    except InstanceUnavailable as exc:
        instance.status = Instance.Status.STOPPED
        instance.status_reason = exc.message
        instance.save(update_fields=["status", "status_reason", "updated_at"])
        record_event(
            kind="instance.start_failed",
            severity="error",
            actor=actor,
            message=f"{instance} did not start: {exc.message}",
            endpoint=endpoint,
            instance=instance,
        )
        share_machine_memory(actor=actor, reason=f"{instance} did not start", trim=trim_to_budget)
        raise
    _record_running(instance, process, workdir)
    if endpoint.status != Endpoint.Status.IN_SERVICE:
        endpoint.status = Endpoint.Status.IN_SERVICE
        endpoint.save(update_fields=["status", "updated_at"])
    record_event(
        kind="instance.started",
        actor=actor,
        message=(
            f"{instance} started: Triton pid {process.pid} on port {process.port}, "
            f"{budget:,} MB budget."
        ),
        endpoint=endpoint,
        instance=instance,
    )
    return instance


def _record_running(instance: Instance, process, workdir: Path) -> None:
    """Store where a freshly started Triton process answers and mark the instance healthy."""
    _STARTED[process.pid] = process
    now = timezone.now()
    instance.port = process.port
    instance.metrics_port = process.metrics_port
    instance.pid = process.pid
    instance.external_id = str(workdir)
    instance.status = Instance.Status.HEALTHY
    instance.status_reason = ""
    instance.started_at = now
    instance.last_health_at = now
    # Not the memory budget: it is shared out (and edited by operators) apart from the process.
    instance.save(
        update_fields=[
            "port",
            "metrics_port",
            "pid",
            "external_id",
            "status",
            "status_reason",
            "started_at",
            "last_health_at",
            "restarts",
            "failed_restarts",
            "updated_at",
        ]
    )


def stop_local_instance(*, instance: Instance, actor: str, reason: str = "") -> Instance:
    """Stop an instance's Triton process; its placements become unloaded."""
    process = _process_of(instance)
    if process is not None:
        stop_triton(process)
    with transaction.atomic():
        instance = Instance.objects.select_for_update().get(pk=instance.pk)
        instance.status = Instance.Status.STOPPED
        instance.status_reason = reason
        instance.pid = None
        instance.save(update_fields=["status", "status_reason", "pid", "updated_at"])
        instance.placements.filter(actual_state__in=Placement.RESIDENT_STATES).update(
            actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
        )
        record_event(
            kind="instance.stopped",
            actor=actor,
            message=f"{instance} stopped{': ' + reason if reason else '.'}",
            endpoint=instance.endpoint,
            instance=instance,
        )
    _forget_client(instance)
    _instance_routing_changed()
    share_machine_memory(actor=actor, reason=f"{instance} stopped", trim=trim_to_budget)
    return instance


def check_instance_health(*, instance: Instance, actor: str = ACTOR) -> bool:
    """Ping the instance; a dead one is marked unhealthy with an Event (the reconciler restarts
    it)."""
    if instance.status == Instance.Status.STOPPED:
        return False
    healthy = client_for(instance).ping()
    now = timezone.now()
    if healthy:
        Instance.objects.filter(pk=instance.pk).update(
            last_health_at=now, status=Instance.Status.HEALTHY, status_reason=""
        )
        return True
    if instance.status != Instance.Status.UNHEALTHY:
        Instance.objects.filter(pk=instance.pk).update(
            status=Instance.Status.UNHEALTHY, status_reason="Did not answer /ping."
        )
        instance.placements.filter(actual_state__in=Placement.RESIDENT_STATES).update(
            actual_state=Placement.ActualState.UNLOADED, updated_at=now
        )
        record_event(
            kind="instance.unhealthy",
            severity="error",
            actor=actor,
            message=f"{instance} stopped answering; its models are marked unloaded.",
            endpoint=instance.endpoint,
            instance=instance,
        )
        _instance_routing_changed()
    return False


def restart_local_instance(*, instance: Instance, actor: str, reason: str) -> Instance:
    """Start a fresh Triton process for an instance whose process died or stopped answering.

    The row, its ordinal and its working directory stay; the placements it held are marked
    unloaded first (a new process has nothing loaded), so the record is true even if the start
    fails. A failed start counts in ``failed_restarts`` and raises InstanceUnavailable.
    """
    old = _process_of(instance)
    if old is not None:
        stop_triton(old)
    _forget_client(instance)
    now = timezone.now()
    with transaction.atomic():
        instance = (
            Instance.objects.select_for_update().select_related("endpoint").get(pk=instance.pk)
        )
        instance.placements.filter(actual_state__in=Placement.RESIDENT_STATES).update(
            actual_state=Placement.ActualState.UNLOADED, updated_at=now
        )
        instance.status = Instance.Status.STARTING
        instance.status_reason = reason
        instance.pid = None
        instance.save(update_fields=["status", "status_reason", "pid", "updated_at"])
    workdir = (
        Path(instance.external_id)
        if instance.external_id
        else instances_root() / f"{instance.endpoint.name}-{instance.ordinal}"
    )
    try:
        process = start_triton(workdir=workdir, host=instance.host or "127.0.0.1")
    except InstanceUnavailable as exc:
        Instance.objects.filter(pk=instance.pk).update(
            status=Instance.Status.UNHEALTHY,
            status_reason=f"Restart failed: {exc.message}"[:4000],
            failed_restarts=instance.failed_restarts + 1,
        )
        record_event(
            kind="instance.restart_failed",
            severity="error",
            actor=actor,
            message=f"{instance} did not restart ({reason}): {exc.message}",
            endpoint=instance.endpoint,
            instance=instance,
        )
        raise
    instance.restarts += 1
    instance.failed_restarts = 0
    _record_running(instance, process, workdir)
    record_event(
        kind="instance.restarted",
        actor=actor,
        message=(
            f"{instance} restarted ({reason}): Triton pid {process.pid} on port {process.port}."
        ),
        endpoint=instance.endpoint,
        instance=instance,
        data={"restarts": instance.restarts},
    )
    _instance_routing_changed()
    return instance


def begin_draining(*, instance: Instance, actor: str, what: str) -> Instance:
    """Mark an instance draining and record it (``what`` moves off it: "models", "heads");
    a stopped instance is returned as it is."""
    with transaction.atomic():
        instance = (
            Instance.objects.select_for_update().select_related("endpoint").get(pk=instance.pk)
        )
        if instance.status == Instance.Status.STOPPED:
            return instance
        instance.status = Instance.Status.DRAINING
        instance.save(update_fields=["status", "updated_at"])
    record_event(
        kind="instance.draining",
        actor=actor,
        message=f"{instance} is draining; its {what} move to other instances first.",
        endpoint=instance.endpoint,
        instance=instance,
    )
    return instance


def _instance_routing_changed() -> None:
    # An instance's address or health changed: every route through it is stale. Instance
    # changes are rare, so dropping all routes is simpler than tracking which go through it.
    routing_changed.send(sender=Instance, model_id=None)


def instance_process_alive(instance: Instance) -> bool:
    """Whether the instance's recorded Triton process exists and answers ``/ping``."""
    from deployments.backends.local.process import TritonProcess

    if instance.status == Instance.Status.STOPPED or not instance.pid or not instance.port:
        return False
    process = TritonProcess.from_record(
        pid=instance.pid,
        host=instance.host,
        port=instance.port,
        metrics_port=instance.metrics_port,
        workdir=Path(instance.external_id) if instance.external_id else None,
    )
    if process is None or not process.is_running():
        return False
    return client_for(instance).ping()


def ensure_default_local_endpoints(*, actor: str) -> list[Endpoint]:
    """On a platform with no local endpoint yet, create one per model kind (one kind per
    endpoint keeps each Triton's memory profile homogeneous) on the ``local`` instance type."""
    from deployments.models import InstanceType
    from models_registry.kinds import kind_names

    if Endpoint.objects.filter(backend=Endpoint.Backend.LOCAL).exists():
        return []
    local_type = InstanceType.objects.filter(is_local=True).order_by("usd_per_hour").first()
    if local_type is None:
        raise DomainError("The instance catalog has no local instance type.", field="instance_type")
    created = []
    for kind in kind_names():
        endpoint = Endpoint.objects.create(
            name=f"local-{kind}",
            backend=Endpoint.Backend.LOCAL,
            mode=Endpoint.Mode.MME,
            instance_type=local_type,
            model_kind=kind,
            min_instances=1,
            max_instances=2,
        )
        record_event(
            kind="endpoint.created",
            actor=actor,
            message=f"Local multi-model endpoint {endpoint.name} created for {kind} models.",
            endpoint=endpoint,
        )
        created.append(endpoint)
    return created


def start_local_endpoints(*, actor: str) -> list[Instance]:
    """Bring every local endpoint up to its minimum instance count on this machine.

    Instances recorded as live whose Triton process is gone (the machine or ``up`` stopped
    without a clean shutdown) are first marked stopped, with their placements unloaded, so the
    record is true before anything routes to them.
    """
    from deployments.backends.local.process import TritonProcess

    started: list[Instance] = []
    endpoints = Endpoint.objects.filter(backend=Endpoint.Backend.LOCAL).exclude(
        status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED]
    )
    for endpoint in endpoints.select_related("instance_type"):
        live = 0
        for instance in endpoint.instances.exclude(status=Instance.Status.STOPPED):
            process = (
                TritonProcess.from_record(
                    pid=instance.pid,
                    host=instance.host,
                    port=instance.port,
                    metrics_port=instance.metrics_port,
                    workdir=Path(instance.external_id) if instance.external_id else None,
                )
                if instance.pid
                else None
            )
            if process is not None and process.is_running():
                live += 1
                continue
            stop_local_instance(
                instance=instance, actor=actor, reason="its Triton process was gone at start-up"
            )
        for _ in range(max(0, endpoint.min_instances - live)):
            started.append(start_local_instance(endpoint=endpoint, actor=actor))
    for instance in started:  # each start shared the machine again: the budgets as they are now
        instance.refresh_from_db(fields=["memory_budget_mb"])
    return started


def stop_local_endpoints(*, actor: str, reason: str) -> list[Instance]:
    """Stop every live local instance, whichever process started it (the reconciler restarts
    instances from a worker); the instances stopped, in endpoint and ordinal order."""
    live = list(
        Instance.objects.filter(endpoint__backend=Endpoint.Backend.LOCAL)
        .exclude(status=Instance.Status.STOPPED)
        .select_related("endpoint")
        .order_by("endpoint__name", "ordinal")
    )
    for instance in live:
        stop_local_instance(instance=instance, actor=actor, reason=reason)
    return live


def local_serving_problems() -> list[str]:
    """Why local serving is not ready: each local endpoint in service needs an instance that
    answers Triton's readiness probe (``/ping`` on its SageMaker port). Empty when ready."""
    endpoints = Endpoint.objects.filter(backend=Endpoint.Backend.LOCAL).exclude(
        status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED]
    )
    if not endpoints.exists():
        return ["no local endpoint exists yet"]
    problems = []
    for endpoint in endpoints.order_by("name"):
        instances = endpoint.instances.exclude(status=Instance.Status.STOPPED).exclude(port=None)
        if not any(client_for(instance).ping() for instance in instances):
            problems.append(f"{endpoint.name}: no instance answers /ping")
    return problems


# --- Placements on instances --------------------------------------------------------------


def place_on_instance(
    *, version: ModelVersion, instance: Instance, actor: str, pinned: bool = False
) -> Placement:
    """Assign a packaged version to an instance (loaded on first request, or by a warm-up)."""
    if version.status != ModelVersion.Status.READY or not version.package_uri:
        raise Conflict(
            f"{version} is {version.status}, not a packaged version ready to serve.",
            field="version",
        )
    desired = Placement.DesiredState.PINNED if pinned else Placement.DesiredState.LOADED
    placement, created = Placement.objects.get_or_create(
        version=version,
        instance=instance,
        defaults={"endpoint": instance.endpoint, "desired_state": desired},
    )
    if created:
        record_event(
            kind="placement.created",
            actor=actor,
            message=f"{version} placed on {instance} ({desired}).",
            version=version,
            endpoint=instance.endpoint,
            instance=instance,
        )
        routing_changed.send(sender=Placement, model_id=version.model_id)
    return placement


def ensure_loaded(*, placement: Placement, actor: str = ACTOR) -> LoadOutcome:
    """Make sure the placement's model is loaded on its instance; loads it if not (one load for
    any number of concurrent callers) and says whether this call was a cold start."""
    state = Placement.objects.values_list("actual_state", flat=True).get(pk=placement.pk)
    if state == Placement.ActualState.LOADED:
        return LoadOutcome(placement_id=placement.pk, cold_start=False)
    future, leader = _SINGLE_FLIGHT.join(placement.pk)
    if not leader:
        outcome = future.result(timeout=LOAD_TIMEOUT_S + FOREIGN_LOAD_WAIT_S)
        return LoadOutcome(placement_id=placement.pk, cold_start=outcome.cold_start)
    try:
        outcome = _load_when_room(placement=placement, actor=actor)
    except BaseException as exc:
        _SINGLE_FLIGHT.fail(placement.pk, exc)
        raise
    _SINGLE_FLIGHT.resolve(placement.pk, outcome)
    return outcome


def unload_placement(*, placement: Placement, actor: str, reason: str) -> Placement:
    """Unload a placement's model from its instance (the desired state is left as it is)."""
    client = client_for(placement.instance)
    name = placement.version.triton_model_name
    client.unload_model(name)
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
    )
    record_event(
        kind="placement.unloaded",
        actor=actor,
        message=f"{placement.version} unloaded from {placement.instance}: {reason}",
        version=placement.version,
        endpoint=placement.endpoint,
        instance=placement.instance,
    )
    placement.actual_state = Placement.ActualState.UNLOADED
    return placement


def invoke_placement(*, placement: Placement, inputs: list) -> InvokeResult:
    """Answer ``inputs`` with the placement's model, loading it first when it is cold."""
    version = placement.version
    kind = get_kind(version.model.kind)
    started = time.perf_counter()
    cold_start = False
    record_access(placement)
    try:
        cold_start = ensure_loaded(placement=placement).cold_start
        client = client_for(placement.instance)
        if kind.generation is not None:
            # A generating model answers through the generate extension, one prompt at a time.
            outputs = [
                whole_output(client.generate(version.triton_model_name, generation_body(text)))
                for text in inputs
            ]
        else:
            answer = client.invoke(version.triton_model_name, kind.encode_request(inputs))
            outputs = kind.decode_response(answer)
    except Exception:
        _count(placement, started, cold_start=cold_start, error=True)
        raise
    latency_ms = _count(placement, started, cold_start=cold_start, error=False)
    return InvokeResult(
        outputs=outputs,
        cold_start=cold_start,
        latency_ms=latency_ms,
        model_version=version.number,
    )


def probe_placement(*, placement: Placement, actor: str = ACTOR) -> ProbeResult:
    """Load the placement if needed and send its kind's warm-up request; the answer must decode.

    Probes are platform traffic: they are not counted as the tenant's invocations.
    """
    prepared = prepare_probe(placement=placement, actor=actor)
    latency_ms = prepared.prepare_ms + prepared.send()
    record_probe(placement=placement, latency_ms=latency_ms)
    return ProbeResult(latency_ms=latency_ms, cold_start=prepared.cold_start)


def prepare_probe(*, placement: Placement, actor: str = ACTOR) -> PreparedProbe:
    """Load the placement if needed (in the calling thread: the load reads and writes rows);
    the warm-up request itself is the result's ``send``, which only talks to Triton."""
    version = placement.version
    kind = get_kind(version.model.kind)
    name = version.triton_model_name
    warmup_inputs = list(kind.warmup_inputs or ["warm-up"])
    body = None if kind.generation is not None else kind.encode_request(warmup_inputs)
    started = time.perf_counter()
    cold_start = ensure_loaded(placement=placement, actor=actor).cold_start
    prepare_ms = (time.perf_counter() - started) * 1000
    client = client_for(placement.instance)

    def send() -> float:
        sent = time.perf_counter()
        if body is None:
            # A generating model warms up on one short answer through the generate extension.
            client.generate(name, generation_body(str(warmup_inputs[0]), {"max_new_tokens": 1}))
            return (time.perf_counter() - sent) * 1000
        answer = client.invoke(name, body)
        if kind.decode_response is not None:
            kind.decode_response(answer)
        return (time.perf_counter() - sent) * 1000

    return PreparedProbe(cold_start=cold_start, prepare_ms=prepare_ms, send=send)


def record_probe(*, placement: Placement, latency_ms: float) -> None:
    """Stamp a placement with its warm-up's time and latency."""
    Placement.objects.filter(pk=placement.pk).update(
        last_warmed_at=timezone.now(), warmup_latency_ms=round(latency_ms, 2)
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
    touch(placement.pk)
    return latency_ms


# --- The load itself -------------------------------------------------------------------------


def _resident_view(instance: Instance, *, exclude: int) -> tuple[list[ResidentModel], dict]:
    """The instance's resident placements as the eviction policy sees them."""
    resident = (
        Placement.objects.filter(
            instance=instance,
            actual_state__in=Placement.RESIDENT_STATES,
        )
        .exclude(pk=exclude)
        .select_related("version")
    )
    view, by_key = [], {}
    for other in resident:
        key = str(other.pk)
        by_key[key] = other
        last_used = _last_used(other)
        view.append(
            ResidentModel(
                key=key,
                memory_mb=memory_of(other),
                gpu_memory_mb=held_gpu_memory_mb(other),
                pinned=other.is_pinned,
                last_used=last_used,
                # Neither a loading model nor one already being evicted can be chosen.
                loading=other.actual_state != Placement.ActualState.LOADED,
                evicting=other.actual_state == Placement.ActualState.EVICTING,
            )
        )
    return view, by_key


def _load_when_room(*, placement: Placement, actor: str) -> LoadOutcome:
    """Load, waiting up to CAPACITY_WAIT_S while other loads in flight hold the memory needed.

    A loading model cannot be evicted, so a burst of cold requests for different models can
    fill the budget for a moment; the request waits for those loads (which then become
    evictable), or for the unloads under way that make its room, instead of failing at once.
    Pinned memory that leaves no room fails at once. Loads waiting for room on an instance take
    it in the order they came (in this process): a load that finds others waiting queues behind
    them, and only the first in line tries again, so none is starved by later arrivals.
    """
    deadline = time.monotonic() + CAPACITY_WAIT_S
    line = _waiting_line(placement.instance_id)
    queued = retried_alone = False
    try:
        while True:
            with line.turn:
                if not queued and line.waiting:
                    line.waiting.append(placement.pk)
                    queued = True
                while queued and line.waiting[0] != placement.pk:
                    if time.monotonic() >= deadline:
                        raise CapacityExceeded(
                            f"{placement.version} waited {CAPACITY_WAIT_S:g} s behind other "
                            f"loads for room on {placement.instance}; retry shortly."
                        )
                    line.turn.wait(CAPACITY_POLL_S)
            try:
                return _load(placement_id=placement.pk, actor=actor)
            except _RoomComing:
                # Unloads were under way that make this load's room; they may have ended since.
                if time.monotonic() >= deadline:
                    raise
            except CapacityExceeded:
                others_loading = (
                    Placement.objects.filter(
                        instance_id=placement.instance_id,
                        actual_state__in=[
                            Placement.ActualState.LOADING,
                            Placement.ActualState.EVICTING,
                        ],
                    )
                    .exclude(pk=placement.pk)
                    .exists()
                )
                # The loads or unloads that held the room may have ended since the plan: one
                # more try then, and the refusal stands only if that fails too.
                if (not others_loading and retried_alone) or time.monotonic() >= deadline:
                    raise
                retried_alone = not others_loading
                if retried_alone:
                    continue
            with line.turn:
                if not queued:
                    line.waiting.append(placement.pk)
                    queued = True
                line.turn.wait(CAPACITY_POLL_S)
    finally:
        if queued:
            with line.turn:
                line.waiting.remove(placement.pk)
                line.turn.notify_all()


class _RoomComing(CapacityExceeded):
    """The load does not fit yet, but the unloads under way make its room: it tries again."""


class _WaitingLine:
    """The loads of one instance waiting for room in this process, first come first served."""

    def __init__(self) -> None:
        self.turn = threading.Condition()
        self.waiting: deque[int] = deque()


_WAITING_LINES: dict[int, _WaitingLine] = {}
_WAITING_LINES_LOCK = threading.Lock()


def _waiting_line(instance_id: int) -> _WaitingLine:
    with _WAITING_LINES_LOCK:
        line = _WAITING_LINES.get(instance_id)
        if line is None:
            line = _WAITING_LINES[instance_id] = _WaitingLine()
        return line


def _load(*, placement_id: int, actor: str) -> LoadOutcome:
    # 1. Claim the load under the instance's row lock: the plan, the "loading" mark and the
    #    victims' "evicting" marks are one decision, so two processes can neither both load nor
    #    both spend the same free memory (nor evict the same model twice).
    with transaction.atomic():
        placement = (
            Placement.objects.select_for_update(of=("self",))
            .select_related(
                "version__model__tenant", "instance__endpoint", "endpoint__instance_type"
            )
            .get(pk=placement_id)
        )
        if placement.actual_state == Placement.ActualState.LOADED:
            return LoadOutcome(placement_id=placement_id, cold_start=False)
        foreign = None
        if (
            placement.actual_state
            in (Placement.ActualState.LOADING, Placement.ActualState.EVICTING)
            and _recently_updated(placement)
            and not _loader_gone(placement)
        ):
            foreign = placement.actual_state
        else:
            instance = Instance.objects.select_for_update().get(pk=placement.instance_id)
            if instance.status not in (Instance.Status.HEALTHY, Instance.Status.STARTING):
                raise InstanceUnavailable(
                    f"{instance} is {instance.status}; retry once the reconciler restarts it."
                )
            resident, by_key = _resident_view(instance, exclude=placement.pk)
            if evictions_make_room(
                resident=resident,
                incoming_mb=memory_of(placement),
                budget_mb=instance.memory_budget_mb,
                incoming_gpu_mb=held_gpu_memory_mb(placement),
                gpu_budget_mb=_gpu_budget_mb(placement.endpoint),
            ):
                # Unloads under way (the background evictor's, or another load's) free the room
                # this load needs: it waits for them (see _load_when_room) instead of choosing
                # more victims.
                raise _RoomComing(
                    f"{placement.version} waited for the unloads under way on {instance} to "
                    "free its memory; retry shortly."
                )
            plan = plan_load(
                resident=resident,
                incoming_key=str(placement.pk),
                incoming_mb=memory_of(placement),
                budget_mb=instance.memory_budget_mb,
                order=eviction_order(instance.pk),
                incoming_gpu_mb=held_gpu_memory_mb(placement),
                gpu_budget_mb=_gpu_budget_mb(placement.endpoint),
            )
            victims = [by_key[key] for key in plan.evict]
            _claim_victims(victims)
            prior_state = placement.actual_state
            placement.actual_state = Placement.ActualState.LOADING
            placement.failure_reason = ""
            placement.loading_by = _this_process()
            placement.save(
                update_fields=["actual_state", "failure_reason", "loading_by", "updated_at"]
            )
    if foreign == Placement.ActualState.LOADING:
        return _wait_for_foreign_load(placement_id)
    if foreign is None:
        # The reservation just made may leave too little room for the next cold model: the
        # evictor unloads beside this load rather than after it.
        wake_evictor(placement.instance_id)
    if foreign == Placement.ActualState.EVICTING:
        # Another process is unloading this very model to make room: load it again only once
        # that unload is done (Triton must not be asked to load a model while it unloads it).
        _wait_for_eviction(placement_id)
        return _load(placement_id=placement_id, actor=actor)

    version = placement.version
    instance = placement.instance
    client = client_for(instance)
    try:
        _evict_all(client=client, victims=victims, to_make_room_for=placement, actor=actor)
    except (ModelBusy, InstanceUnavailable):
        # A victim still answered requests (or the instance had to be restarted): this load did
        # not happen, through no fault of the model's; the caller is told to retry (503) and
        # the placement is as it was.
        Placement.objects.filter(
            pk=placement.pk, actual_state=Placement.ActualState.LOADING
        ).update(
            actual_state=(
                prior_state
                if prior_state != Placement.ActualState.LOADING
                else Placement.ActualState.UNLOADED
            ),
            loading_by="",
            updated_at=timezone.now(),
        )
        raise
    except (DomainError, OSError) as exc:
        _mark_load_failed(placement, exc, actor=actor)
        raise
    try:
        gpu_before = _gpu_memory_used_mb(client)
        device = load_device(
            instance_gpu_count=placement.endpoint.instance_type.gpu_count,
            gpus_seen=gpu_before is not None,
        )
        model_dir = _unpacked_package(version, device=device)
        started = time.perf_counter()
        client.load_model(version.triton_model_name, str(model_dir), timeout_s=LOAD_TIMEOUT_S)
        load_time_ms = (time.perf_counter() - started) * 1000
    except (DomainError, OSError) as exc:
        _mark_load_failed(placement, exc, actor=actor)
        raise
    reading = _measure(instance, version)
    # Triton reports GPU memory per device, not per model: the load's growth is the model's.
    # A model loaded on the CPU holds none, and records none (not a 0 for GPU placement).
    gpu_mb = (
        gpu_memory_growth_mb(gpu_before, _gpu_memory_used_mb(client)) if device == GPU else None
    )
    now = timezone.now()
    with transaction.atomic():
        Placement.objects.filter(pk=placement.pk).update(
            actual_state=Placement.ActualState.LOADED,
            host_memory_mb=reading,
            gpu_memory_mb=gpu_mb,
            load_time_ms=load_time_ms,
            loaded_at=now,
            last_invoked_at=now,
            retries=0,
            updated_at=now,
        )
        if reading is not None and version.host_memory_mb is None:
            ModelVersion.objects.filter(pk=version.pk, host_memory_mb__isnull=True).update(
                host_memory_mb=reading
            )
        if gpu_mb is not None and version.gpu_memory_mb is None:
            ModelVersion.objects.filter(pk=version.pk, gpu_memory_mb__isnull=True).update(
                gpu_memory_mb=gpu_mb
            )
        record_event(
            kind="placement.loaded",
            actor=actor,
            message=(
                f"{version} loaded on {instance} in {load_time_ms:,.0f} ms"
                + (f", {reading:,.0f} MB resident" if reading is not None else "")
                + (f", {gpu_mb:,.0f} MB on its GPUs" if gpu_mb is not None else "")
                + _device_note(placement.endpoint.instance_type, device)
                + "."
            ),
            version=version,
            endpoint=placement.endpoint,
            instance=instance,
            data={
                "load_time_ms": round(load_time_ms, 1),
                "host_memory_mb": reading,
                "gpu_memory_mb": gpu_mb,
                "device": device,
            },
        )
    _trim_to_budget(instance=instance, keep=placement, client=client, actor=actor)
    wake_evictor(instance.pk)
    return LoadOutcome(placement_id=placement.pk, cold_start=True, load_time_ms=load_time_ms)


def _claim_victims(victims: list[Placement]) -> None:
    """Mark the chosen victims "evicting" (inside the caller's transaction, under the instance's
    lock): they still hold their memory but no other plan may count on freeing it again."""
    if victims:
        _EVICTING_HERE.update(v.pk for v in victims)
        Placement.objects.filter(pk__in=[v.pk for v in victims]).update(
            actual_state=Placement.ActualState.EVICTING,
            loading_by=_this_process(),
            updated_at=timezone.now(),
        )


def _release_victims(victims: list[Placement]) -> None:
    """Victims that were not unloaded after all are loaded still."""
    _EVICTING_HERE.difference_update(v.pk for v in victims)
    if victims:
        Placement.objects.filter(
            pk__in=[v.pk for v in victims], actual_state=Placement.ActualState.EVICTING
        ).update(
            actual_state=Placement.ActualState.LOADED, loading_by="", updated_at=timezone.now()
        )


def _evict_all(
    *, client, victims: list[Placement], to_make_room_for: Placement | None, actor: str
) -> None:
    """Unload the claimed victims one by one; those not unloaded when one fails are released."""
    for index, victim in enumerate(victims):
        try:
            _evict(client=client, placement=victim, to_make_room_for=to_make_room_for, actor=actor)
        except BaseException:
            _release_victims(victims[index:])
            raise


def _evict(
    *,
    client,
    placement: Placement,
    to_make_room_for: Placement | None,
    actor: str,
    ahead_of_need: bool = False,
) -> None:
    # The client drains the model's requests in flight before Triton unloads it, and returns
    # once Triton reports the model gone (its stub exited); until then the placement is
    # "evicting" and its memory counts as resident.
    try:
        client.unload_model(placement.version.triton_model_name, timeout_s=UNLOAD_TIMEOUT_S)
    except UnloadTimedOut as exc:
        _restart_wedged(placement.instance_id, exc, actor=actor)
        raise InstanceUnavailable(
            f"{placement.instance} did not finish unloading a model and was restarted "
            "(its models load again on their next request); retry shortly."
        ) from exc
    finally:
        _EVICTING_HERE.discard(placement.pk)
    Placement.objects.filter(
        pk=placement.pk,
        actual_state__in=[Placement.ActualState.EVICTING, Placement.ActualState.LOADED],
    ).update(actual_state=Placement.ActualState.EVICTED, loading_by="", updated_at=timezone.now())
    reason = (
        "to keep room for cold loads (memory above the "
        f"{settings.TENANTML_EVICTION_HIGH_WATERMARK:.0%} high watermark)"
        if ahead_of_need
        else f"to make room for {_incoming_for(placement, to_make_room_for)}"
    )
    record_event(
        kind="placement.evicted",
        actor=actor,
        message=(
            f"{placement.version} evicted from {placement.instance} {reason} ({_policy_words()})."
        ),
        version=placement.version,
        endpoint=placement.endpoint,
        instance=placement.instance,
        data={"host_memory_mb": memory_of(placement)},
    )


def _restart_wedged(instance_id: int, exc: UnloadTimedOut, *, actor: str) -> None:
    """A Triton that does not finish an unload stays wedged (its other calls wait too): start
    a fresh process in its place at once rather than leave it to the next reconciler pass."""
    instance = Instance.objects.select_related("endpoint").get(pk=instance_id)
    logger.error("Restarting %s: %s", instance, exc.message)
    restart_local_instance(instance=instance, actor=actor, reason=f"Wedged: {exc.message}"[:4000])


def _incoming_for(evicted: Placement, incoming: Placement | None) -> str:
    """The model that caused an eviction, as the evicted model's tenant may see it: an event
    is filed under that tenant, so another tenant's model is not named."""
    if incoming is None:
        return "the instance's memory budget"
    if incoming.version.model.tenant_id == evicted.version.model.tenant_id:
        return str(incoming.version)
    return "another tenant's model"


def _policy_words() -> str:
    if settings.TENANTML_EVICTION_POLICY == "lru":
        return "least recently used"
    return "least requested lately, per MB"


def _trim_to_budget(
    *, instance: Instance, keep: Placement | None, client, actor: str
) -> list[Placement]:
    """Evict until the instance is within budget (after a load measured more than expected,
    or a lowered budget); never the pinned ones, nor ``keep``. Returns the evicted. A victim
    still answering requests after the drain's time stays loaded (the next trim retries)."""
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        resident, by_key = _resident_view(locked, exclude=-1)
        victims = [
            by_key[key]
            for key in plan_trim(
                resident=resident,
                budget_mb=locked.memory_budget_mb,
                keep=str(keep.pk) if keep is not None else None,
                order=eviction_order(locked.pk),
                gpu_budget_mb=_gpu_budget_mb(
                    Endpoint.objects.select_related("instance_type").get(pk=locked.endpoint_id)
                ),
            )
        ]
        _claim_victims(victims)
    evicted = []
    for index, victim in enumerate(victims):
        try:
            _evict(client=client, placement=victim, to_make_room_for=keep, actor=actor)
        except ModelBusy as exc:
            _release_victims([victim])
            logger.warning("Trim of %s skipped %s: %s", instance, victim, exc.message)
            continue
        except BaseException:
            _release_victims(victims[index:])
            raise
        evicted.append(victim)
    return evicted


def make_headroom(*, instance_id: int, actor: str = ACTOR) -> list[Placement]:
    """Unload models ahead of need once the instance's resident memory crosses the high
    watermark (or leaves less room than its largest model), down to the low watermark; returns
    the evicted. Each victim is drained first; one still answering after the drain stays."""
    high = settings.TENANTML_EVICTION_HIGH_WATERMARK
    low = settings.TENANTML_EVICTION_LOW_WATERMARK
    if high >= 1:
        return []
    with transaction.atomic():
        locked = (
            Instance.objects.select_for_update(of=("self",))
            .select_related("endpoint__instance_type")
            .filter(pk=instance_id)
            .first()
        )
        if locked is None or locked.status != Instance.Status.HEALTHY or not locked.port:
            return []
        resident, by_key = _resident_view(locked, exclude=-1)
        frequency_aware = settings.TENANTML_EVICTION_POLICY != "lru"
        victims = [
            by_key[key]
            for key in plan_headroom(
                resident=resident,
                budget_mb=locked.memory_budget_mb,
                high_watermark=high,
                low_watermark=low,
                order=eviction_order(locked.pk, protect=not frequency_aware),
                # The next cold model is likely as large as the largest this instance holds
                # (one model kind per endpoint).
                room_for_mb=max((m.memory_mb for m in resident if not m.pinned), default=0.0),
                gpu_budget_mb=_gpu_budget_mb(locked.endpoint),
                # By request counts, a tail model loading now is the next victim once loaded
                # (the evictor runs again when a load ends); a victim is drained before it is
                # unloaded, and a model loaded for a request answers it first (the proxy loads
                # from inside the model's gate), so the model used last needs no keeping.
                defer_to_loading=frequency_aware,
                keep_most_recent=not frequency_aware,
            )
        ]
        _claim_victims(victims)
    if not victims:
        return []
    client = client_for(locked)
    evicted = []
    for index, victim in enumerate(victims):
        try:
            _evict(
                client=client, placement=victim, to_make_room_for=None, actor=actor,
                ahead_of_need=True,
            )  # fmt: skip
        except ModelBusy as exc:
            _release_victims([victim])
            logger.info("Headroom on %s kept %s: %s", locked, victim, exc.message)
            continue
        except BaseException:
            _release_victims(victims[index:])
            raise
        evicted.append(victim)
    return evicted


class _Evictor:
    """The background evictor of one instance in this process: a daemon thread that runs
    ``make_headroom`` whenever woken (after each load), one pass at a time."""

    def __init__(self, instance_id: int) -> None:
        self.instance_id = instance_id
        self._woken = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(
            target=self._run, name=f"evictor-{instance_id}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        self._idle.clear()
        self._woken.set()

    def wait_idle(self, timeout_s: float) -> bool:
        return self._idle.wait(timeout_s)

    def _run(self) -> None:
        while True:
            self._woken.wait()
            self._woken.clear()
            try:
                make_headroom(instance_id=self.instance_id)
            except Exception:
                # The next load wakes it again; loads make room themselves meanwhile.
                logger.exception("Background eviction on instance %s failed", self.instance_id)
            finally:
                connections.close_all()  # this thread's own connections
                if not self._woken.is_set():
                    self._idle.set()


_EVICTORS: dict[int, _Evictor] = {}
_EVICTORS_LOCK = threading.Lock()


def _evictor(instance_id: int) -> _Evictor:
    with _EVICTORS_LOCK:
        evictor = _EVICTORS.get(instance_id)
        if evictor is None:
            evictor = _EVICTORS[instance_id] = _Evictor(instance_id)
        return evictor


def wake_evictor(instance_id: int) -> None:
    """Have the instance's background evictor check its watermarks once the caller's
    transaction commits (it reads what the caller wrote)."""
    if settings.TENANTML_EVICTION_HIGH_WATERMARK >= 1:
        return
    transaction.on_commit(lambda: _evictor(instance_id).wake())


def wait_for_evictions(instance_id: int, *, timeout_s: float = 30.0) -> bool:
    """Wait until the instance's background evictor in this process is idle; False on timeout."""
    with _EVICTORS_LOCK:
        evictor = _EVICTORS.get(instance_id)
    return evictor is None or evictor.wait_idle(timeout_s)


def _forget_evictors_after_fork() -> None:
    # A forked child has none of its parent's threads: it starts evictors (and waiting lines)
    # of its own.
    global _EVICTORS_LOCK, _WAITING_LINES_LOCK
    _EVICTORS_LOCK = threading.Lock()
    _EVICTORS.clear()
    _WAITING_LINES_LOCK = threading.Lock()
    _WAITING_LINES.clear()


os.register_at_fork(after_in_child=_forget_evictors_after_fork)


def trim_to_budget(*, instance: Instance, actor: str) -> list[str]:
    """Evict an instance's least valuable unpinned models until it is within its budget."""
    client = client_for(instance)
    victims = _trim_to_budget(instance=instance, keep=None, client=client, actor=actor)
    return [victim.version.triton_model_name for victim in victims]


def _mark_load_failed(placement: Placement, exc: BaseException, *, actor: str) -> None:
    reason = getattr(exc, "message", None) or str(exc)
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.FAILED,
        failure_reason=reason[:4000],
        retries=placement.retries + 1,
        updated_at=timezone.now(),
    )
    ModelVersion.objects.filter(pk=placement.version_id).update(
        status_reason=f"Load on {placement.instance} failed: {reason}"[:4000]
    )
    record_event(
        kind="placement.load_failed",
        severity="error",
        actor=actor,
        message=f"{placement.version} failed to load on {placement.instance}: {reason}",
        version=placement.version,
        endpoint=placement.endpoint,
        instance=placement.instance,
    )


def _wait_for_foreign_load(placement_id: int) -> LoadOutcome:
    """Another process is loading this model: wait for its outcome instead of loading twice."""
    deadline = time.monotonic() + FOREIGN_LOAD_WAIT_S
    while time.monotonic() < deadline:
        state, reason = Placement.objects.values_list("actual_state", "failure_reason").get(
            pk=placement_id
        )
        if state == Placement.ActualState.LOADED:
            return LoadOutcome(placement_id=placement_id, cold_start=True)
        if state == Placement.ActualState.FAILED:
            raise ModelLoadFailed(reason or "The model failed to load.")
        if state != Placement.ActualState.LOADING:
            break
        time.sleep(0.05)
    raise InstanceUnavailable("The model is still loading in another worker; retry shortly.")


def _wait_for_eviction(placement_id: int) -> None:
    """Another process is unloading this model: wait until it is out (or that process died)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        placement = Placement.objects.only("actual_state", "loading_by", "updated_at").get(
            pk=placement_id
        )
        if placement.actual_state != Placement.ActualState.EVICTING or _loader_gone(placement):
            return
        time.sleep(0.05)
    raise ModelBusy("The model is still being unloaded by another worker; retry shortly.")


def _unpacked_package(version: ModelVersion, *, device: str = CPU) -> Path:
    """The verified, unpacked Triton package of a version (the MME ``url`` to load from); for a
    GPU, the version rendered for it from its artifact."""
    if device == GPU:
        return device_model_dir(version=version, device=GPU, models_root=models_root())
    package_path = Path(version.package_uri)
    if version.package_uri.startswith("s3://"):
        cache = models_root() / "downloads" / f"{version.sha256}.tar.gz"
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".part")
            tmp.write_bytes(artifacts.read_bytes(version.package_uri))
            tmp.replace(cache)
        package_path = cache
    return prepare_model_dir(
        package_path=package_path, expected_sha256=version.sha256, models_root=models_root()
    )


def _gpu_memory_used_mb(client) -> dict[str, float] | None:
    """GPU memory in use per GPU of the instance, or None without a GPU (or metrics)."""
    if client.metrics_port is None:
        return None
    try:
        return gpu_memory_by_device_mb(client.metrics())
    except DomainError:
        return None


def _gpu_budget_mb(endpoint: Endpoint) -> float | None:
    """The GPU memory an instance of the endpoint may fill; None on a type without GPUs."""
    return instance_gpu_budget_mb(
        endpoint.instance_type, target_utilization=float(endpoint.target_memory_utilization)
    )


def _device_note(instance_type, device: str) -> str:
    if device == GPU:
        return " (GPU package)"
    if instance_type.gpu_count > 0:
        return f" (CPU package: {instance_type.name} has GPUs but this Triton sees none)"
    return ""


def _measure(instance: Instance, version: ModelVersion) -> float | None:
    if not instance.pid:
        return None
    reading = model_memory_mb(instance.pid, version.triton_model_name)
    return round(reading.rss_mb, 1) if reading is not None else None


# --- Small helpers -------------------------------------------------------------------------


def _this_process() -> str:
    """This process as ``loading_by`` records it (read per call: a forked worker has its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Placements this process is evicting now (their ``loading_by`` names this process).
_EVICTING_HERE: set[int] = set()


def _loader_gone(placement: Placement) -> bool:
    """Whether the process recorded as loading this placement is known to be dead: on this
    host and not running, or this very process with no load of it in flight (a crashed call)."""
    host, _, pid = placement.loading_by.rpartition(":")
    if not pid.isdigit() or host != socket.gethostname():
        return False  # another machine's load, or none recorded: wait it out
    if int(pid) == os.getpid():
        return not (_SINGLE_FLIGHT.in_flight(placement.pk) or placement.pk in _EVICTING_HERE)
    return not _running(int(pid))


def _running(pid: int) -> bool:
    """Whether a process of this host runs: a zombie does not (a killed worker's pool process
    stays one where the container's first process reaps no orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _recently_updated(placement: Placement) -> bool:
    return placement.updated_at >= timezone.now() - timedelta(seconds=LOAD_TIMEOUT_S)


# Last use per placement in this process (monotonic clock), so ordering by recency needs no
# database write per request; the database's last_invoked_at is the cross-process fallback.
_LAST_USED: dict[int, float] = {}
_LAST_USED_LOCK = threading.Lock()


def touch(placement_id: int) -> None:
    """Stamp a placement as just used (least-recently-used order, in this process)."""
    with _LAST_USED_LOCK:
        _LAST_USED[placement_id] = time.monotonic()


def _last_used(placement: Placement) -> float:
    with _LAST_USED_LOCK:
        local = _LAST_USED.get(placement.pk)
    if local is not None:
        # Map the monotonic stamp onto the wall clock so it compares with database stamps.
        return time.time() - (time.monotonic() - local)
    stamp = placement.last_invoked_at or placement.loaded_at
    return stamp.timestamp() if stamp else 0.0


# Requests per placement, decayed, per instance in this process: the frequency-aware eviction
# order (deployments.placement.eviction.AccessHistory) keeps the models that are asked for most.
_HISTORIES: dict[int, AccessHistory] = {}
_HISTORIES_LOCK = threading.Lock()


def access_history(instance_id: int | None) -> AccessHistory:
    """The decayed request counts of an instance's placements in this process."""
    with _HISTORIES_LOCK:
        history = _HISTORIES.get(instance_id or 0)
        if history is None:
            history = _HISTORIES[instance_id or 0] = AccessHistory()
        return history


def record_access(placement: Placement) -> None:
    """Count a request to a placement, before it is loaded (hits and cold starts alike)."""
    access_history(placement.instance_id).record(str(placement.pk))


def eviction_order(instance_id: int | None, *, protect: bool = True):
    """The configured eviction order for an instance: frequency-aware, or plain LRU.

    ``protect`` puts the models of the last few requests last (for a load choosing its victims
    on a request's path); the background evictor drains each victim before unloading it and
    orders by request counts alone."""
    if settings.TENANTML_EVICTION_POLICY == "lru":
        return lru_order
    return access_history(instance_id).order(protect=protect)


class _SingleFlight:
    """One in-process load per placement; later callers wait on the first caller's future."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[int, Future] = {}

    def join(self, key: int) -> tuple[Future, bool]:
        with self._lock:
            future = self._inflight.get(key)
            if future is not None:
                return future, False
            future = Future()
            self._inflight[key] = future
            return future, True

    def in_flight(self, key: int) -> bool:
        with self._lock:
            return key in self._inflight

    def resolve(self, key: int, outcome: LoadOutcome) -> None:
        with self._lock:
            future = self._inflight.pop(key)
        future.set_result(outcome)

    def fail(self, key: int, exc: BaseException) -> None:
        with self._lock:
            future = self._inflight.pop(key)
        future.set_exception(exc)


_SINGLE_FLIGHT = _SingleFlight()

# Triton processes this process started, by pid: their handles reap the child on stop.
_STARTED: dict[int, object] = {}

# Keyed by the process as well as its address: a port a stopped or killed server held may be
# taken by a new one, whose model-control port and log differ.
_CLIENTS: dict[tuple[str, int, int | None, str], TritonMultiModelClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(instance: Instance) -> TritonMultiModelClient:
    """A pooled protocol client for a local instance."""
    if instance is None or not instance.port:
        raise InstanceUnavailable("The placement has no running instance.")
    key = (instance.host, instance.port, instance.pid, instance.external_id or "")
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = TritonMultiModelClient(
                host=instance.host,
                port=instance.port,
                metrics_port=instance.metrics_port,
                # Load failures without a Python traceback are explained by the server's log.
                log_path=Path(instance.external_id) / "triton.log"
                if instance.external_id
                else None,
                gates=gates_for(instance.host, instance.port),
                drain_timeout_s=DRAIN_TIMEOUT_S,
            )
            _CLIENTS[key] = client
        return client


def _forget_client(instance: Instance) -> None:
    with _CLIENTS_LOCK:
        for key in [key for key in _CLIENTS if key[:2] == (instance.host, instance.port or 0)]:
            del _CLIENTS[key]


def _process_of(instance: Instance):
    from deployments.backends.local.process import TritonProcess

    if not instance.pid:
        return None
    started_here = _STARTED.pop(instance.pid, None)
    if started_here is not None:
        return started_here  # holds the child handle, so stopping also reaps it
    return TritonProcess.from_record(
        pid=instance.pid,
        host=instance.host,
        port=instance.port,
        metrics_port=instance.metrics_port,
        workdir=Path(instance.external_id) if instance.external_id else None,
    )


__all__ = [
    "CapacityExceeded",
    "InvokeResult",
    "LoadOutcome",
    "check_instance_health",
    "ensure_loaded",
    "invoke_placement",
    "make_headroom",
    "place_on_instance",
    "prepare_probe",
    "probe_placement",
    "record_probe",
    "restart_local_instance",
    "start_local_instance",
    "stop_local_instance",
    "unload_placement",
    "wait_for_evictions",
    "wake_evictor",
]
