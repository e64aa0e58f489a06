"""Repairing local endpoints: their instances hold what the placements say.

Called by the reconciler (``deployments.services.reconciler``) once a pass with every live local
endpoint:

- an instance whose Triton process is gone or does not answer is restarted in place, and its
  pinned models and its hot ones (invoked within ``HOT_MODEL_WINDOW_S``, most recent first, as
  many as fit the budget without evicting anything) are loaded again;
- an endpoint with fewer live instances than its minimum gets new ones;
- a placement the record calls loaded that the instance does not have is marked evicted, and
  reloaded if it is pinned or hot;
- a pinned placement that is not loaded is loaded;
- a model the instance holds that no placement wants there (an orphan) is unloaded;
- an instance holding more than its memory budget (an operator lowered it, or measurements
  came in higher) has its least valuable unpinned models evicted until it fits;
- an instance marked unhealthy that answers again is put back into routing.

Retries are bounded: a placement that failed ``MAX_LOAD_RETRIES`` times in a row is left failed
(with its reason) until an operator acts, and an instance that failed ``MAX_RESTARTS`` restarts
in a row is stopped. Every action is an Event with actor "reconciler".

A pass costs the same few queries whatever the fleet's size: the live instances in one query,
then every instance is asked at once, at most ``RECONCILE_CONCURRENCY`` at a time (its process
and ``/ping``, then ``GET /models``; pool threads, HTTP only), then every placement on them in
one query. Only repairs cost more queries, each in proportion to the drift it puts right. One
instance's failure is an error in the report; the others are repaired all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends.base import NetworkCalls, ReconcileReport
from deployments.backends.local import runtime, shared_base
from deployments.models import Endpoint, Instance, Placement
from deployments.placement.rows import copy_memory_mb
from models_registry.models import triton_model_name

logger = logging.getLogger(__name__)

ACTOR = "reconciler"
MAX_LOAD_RETRIES = 3
MAX_RESTARTS = 3


@dataclass(frozen=True)
class InstanceCheck:
    """What one instance answered: whether its process lives and, if it does, the models it
    lists and when the listing was asked for (``error`` says why there is no listing)."""

    alive: bool
    loaded: frozenset[str] | None = None
    listed_at: datetime | None = None
    error: str = ""


def check_instance(instance: Instance) -> InstanceCheck:
    """Whether the instance's process lives and answers, and what it has loaded (its process
    table entry and HTTP only, never the database: this runs in a pool thread)."""
    if not runtime.instance_process_alive(instance):
        return InstanceCheck(alive=False)
    return _listing(instance)


def _listing(instance: Instance) -> InstanceCheck:
    listed_at = timezone.now()
    try:
        loaded = runtime.client_for(instance).list_models()
    except DomainError as exc:
        return InstanceCheck(alive=True, error=exc.message)
    return InstanceCheck(
        alive=True, loaded=frozenset(model.name for model in loaded), listed_at=listed_at
    )


def reconcile_endpoints(*, endpoints: Sequence[Endpoint], report: ReconcileReport) -> None:
    """Repair every given local endpoint in one pass (see the module docstring)."""
    by_endpoint = _live_instances(endpoints)
    checked = [
        instance
        for instances in by_endpoint.values()
        for instance in instances
        if instance.status != Instance.Status.DRAINING
    ]
    checks = _check_all(checked, report=report)
    placements = _placements_on(checked)
    for endpoint in endpoints:
        running = 0
        for instance in by_endpoint.get(endpoint.pk, []):
            if instance.status == Instance.Status.DRAINING:
                continue
            report.instances_checked += 1
            running += 1
            check = checks.get(instance.pk)
            if check is None:
                continue  # its check failed outright; the error is in the report
            try:
                kept = _repair_instance(
                    instance=instance,
                    check=check,
                    placements=placements.get(instance.pk, []),
                    report=report,
                )
            except DomainError as exc:
                report.errors.append(f"{instance}: {exc.message}")
                continue
            if not kept:
                running -= 1
        _top_up(endpoint=endpoint, running=running, report=report)


def _live_instances(endpoints: Sequence[Endpoint]) -> dict[int, list[Instance]]:
    """Every instance of these endpoints that is not stopped (one query), by endpoint, in
    ordinal order, each holding its endpoint object (so naming it costs no query)."""
    endpoint_of = {endpoint.pk: endpoint for endpoint in endpoints}
    by_endpoint: dict[int, list[Instance]] = {}
    instances = (
        Instance.objects.filter(endpoint_id__in=list(endpoint_of))
        .exclude(status=Instance.Status.STOPPED)
        .order_by("endpoint_id", "ordinal")
    )
    for instance in instances:
        instance.endpoint = endpoint_of[instance.endpoint_id]
        by_endpoint.setdefault(instance.endpoint_id, []).append(instance)
    return by_endpoint


def _check_all(instances: list[Instance], *, report: ReconcileReport) -> dict[int, InstanceCheck]:
    """Every instance's check, at most ``RECONCILE_CONCURRENCY`` at once."""
    with NetworkCalls(limit=settings.TENANTML_RECONCILE_CONCURRENCY, name="reconcile") as calls:
        futures = [(instance, calls.submit(check_instance, instance)) for instance in instances]
    checks: dict[int, InstanceCheck] = {}
    for instance, future in futures:
        try:
            checks[instance.pk] = future.result()
        except Exception as exc:  # one instance's surprise must not stop the others' repairs
            logger.exception("Checking %s failed.", instance)
            report.errors.append(f"{instance}: could not be checked ({type(exc).__name__}: {exc})")
    return checks


@dataclass
class CopyRecord:
    """What the repair rules read of one placement, from a plain row: building 100,000
    placements with their versions, models and tenants was most of a pass. A copy that needs a
    repair is read whole (``_placement``), which costs in proportion to the drift."""

    pk: int
    name: str
    desired_state: str
    actual_state: str
    memory_mb: float
    loaded_at: datetime | None
    last_invoked_at: datetime | None
    retries: int

    @property
    def is_pinned(self) -> bool:
        return self.desired_state == Placement.DesiredState.PINNED


_RECORD_FIELDS = (
    "pk",
    "instance_id",
    "version__model__tenant__slug",
    "version__model__name",
    "version__number",
    "version__model__kind",
    "version__host_memory_mb",
    "host_memory_mb",
    "desired_state",
    "actual_state",
    "loaded_at",
    "last_invoked_at",
    "retries",
)


def _records(**filters) -> dict[int, list[CopyRecord]]:
    """The placements matching ``filters`` (one query) as records, by instance, most recently
    invoked first."""
    by_instance: dict[int, list[CopyRecord]] = {}
    rows = (
        Placement.objects.filter(**filters)
        .order_by("-last_invoked_at", "id")
        .values_list(*_RECORD_FIELDS)
    )
    for (
        pk,
        instance_id,
        tenant_slug,
        model_name,
        number,
        kind,
        version_mb,
        copy_mb,
        desired_state,
        actual_state,
        loaded_at,
        last_invoked_at,
        retries,
    ) in rows:
        by_instance.setdefault(instance_id, []).append(
            CopyRecord(
                pk=pk,
                name=triton_model_name(
                    tenant_slug=tenant_slug, model_name=model_name, number=number
                ),
                desired_state=desired_state,
                actual_state=actual_state,
                memory_mb=copy_memory_mb(copy_mb=copy_mb, version_mb=version_mb, kind=kind),
                loaded_at=loaded_at,
                last_invoked_at=last_invoked_at,
                retries=retries,
            )
        )
    return by_instance


def _placements_on(instances: list[Instance]) -> dict[int, list[CopyRecord]]:
    """Every placement on these instances (one query), by instance."""
    if not instances:
        return {}
    return _records(instance_id__in=[instance.pk for instance in instances])


def _placement(record: CopyRecord, instance: Instance) -> Placement:
    """The whole placement behind ``record``, for a repair (its instance and endpoint are the
    ones already read)."""
    placement = Placement.objects.select_related("version__model__tenant").get(pk=record.pk)
    placement.instance = instance
    if placement.endpoint_id == instance.endpoint_id:
        placement.endpoint = instance.endpoint
    return placement


def _repair_instance(
    *,
    instance: Instance,
    check: InstanceCheck,
    placements: list[CopyRecord],
    report: ReconcileReport,
) -> bool:
    """Apply the repair rules to one instance; False when it was given up (stopped)."""
    if not check.alive:
        if instance.failed_restarts >= MAX_RESTARTS:
            runtime.stop_local_instance(
                instance=instance,
                actor=ACTOR,
                reason=f"gave up after {instance.failed_restarts} failed restarts",
            )
            report.instances_given_up.append(str(instance))
            return False
        restarted = _restart(instance=instance, report=report)
        if restarted is None:
            return True  # still live (unhealthy): the next pass tries again
        instance = restarted
        # A new process holds nothing: read what the restart left of the record, and list it.
        placements = _records(instance_id=instance.pk).get(instance.pk, [])
        check = _listing(instance)
    elif instance.status != Instance.Status.HEALTHY:
        # Marked unhealthy (a request met it while it restarted) but answering: route to it
        # again, rather than leave it out of routing until it dies for real.
        if runtime.check_instance_health(instance=instance, actor=ACTOR):
            report.instances_recovered.append(str(instance))
        instance.refresh_from_db(fields=["status", "status_reason", "last_health_at"])
    if check.error:
        report.errors.append(f"{instance}: {check.error}")
    else:
        _reconcile_models(instance=instance, check=check, placements=placements, report=report)
    # Trimming locks the instance and reads its resident placements: only for one that the
    # placements already read say is over its budget.
    resident_mb = sum(
        p.memory_mb for p in placements if p.actual_state in Placement.RESIDENT_STATES
    )
    if resident_mb > instance.memory_budget_mb:
        trimmed = runtime.trim_to_budget(instance=instance, actor=ACTOR)
        report.trimmed.extend(f"{name} on {instance}" for name in trimmed)
    return True


def _top_up(*, endpoint: Endpoint, running: int, report: ReconcileReport) -> None:
    for _ in range(max(0, endpoint.min_instances - running)):
        try:
            started = runtime.start_local_instance(endpoint=endpoint, actor=ACTOR)
        except DomainError as exc:
            report.errors.append(f"{endpoint.name}: {exc.message}")
            break
        report.instances_started.append(str(started))


def _restart(*, instance: Instance, report: ReconcileReport) -> Instance | None:
    try:
        instance = runtime.restart_local_instance(
            instance=instance, actor=ACTOR, reason="its Triton process was gone or not answering"
        )
    except DomainError as exc:
        report.errors.append(f"{instance}: {exc.message}")
        return None
    report.instances_restarted.append(str(instance))
    return instance


def _hot_since():
    return timezone.now() - timedelta(seconds=settings.TENANTML_HOT_MODEL_WINDOW_S)


def _reconcile_models(
    *,
    instance: Instance,
    check: InstanceCheck,
    placements: list[CopyRecord],
    report: ReconcileReport,
) -> None:
    actual = check.loaded or frozenset()
    if instance.endpoint.mode == Endpoint.Mode.SHARED_BASE:
        # Its one Triton model is the shared encoder; the heads inside it are listed and
        # repaired through that model (deployments.backends.local.shared_base).
        shared_base.reconcile_instance(instance=instance, loaded=actual, report=report)
        return
    wanted_names: set[str] = set()
    unwanted: dict[str, list[CopyRecord]] = {}
    for record in placements:
        if record.desired_state != Placement.DesiredState.UNLOADED:
            wanted_names.add(record.name)
        else:
            unwanted.setdefault(record.name, []).append(record)
        if (
            record.actual_state == Placement.ActualState.LOADED
            and record.name not in actual
            and record.desired_state != Placement.DesiredState.UNLOADED
            and not _loaded_after(record, check)
        ):
            Placement.objects.filter(pk=record.pk).update(
                actual_state=Placement.ActualState.EVICTED, updated_at=timezone.now()
            )
            record.actual_state = Placement.ActualState.EVICTED
            placement = _placement(record, instance)
            report.marked_missing.append(str(placement))
            record_event(
                kind="placement.missing",
                severity="warning",
                actor=ACTOR,
                message=f"{placement.version} was recorded loaded on {instance} but is not there.",
                version=placement.version,
                endpoint=instance.endpoint,
                instance=instance,
            )
    orphans = sorted(actual - wanted_names)
    client = runtime.client_for(instance) if orphans else None
    for name in orphans:
        try:
            client.unload_model(name)
        except DomainError as exc:
            report.errors.append(f"{instance}: {exc.message}")
            continue
        Placement.objects.filter(pk__in=[p.pk for p in unwanted.get(name, [])]).update(
            actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
        )
        for record in unwanted.get(name, []):
            record.actual_state = Placement.ActualState.UNLOADED
        report.orphans_unloaded.append(f"{name} on {instance}")
        record_event(
            kind="placement.orphan_unloaded",
            actor=ACTOR,
            message=f"{name} was loaded on {instance} with no placement wanting it; unloaded.",
            endpoint=instance.endpoint,
            instance=instance,
        )
    _reload_wanted(instance=instance, placements=placements, report=report)


def _loaded_after(placement: CopyRecord, check: InstanceCheck) -> bool:
    """Whether the copy finished loading after its instance was listed: the placements are
    read after every instance answered, and a listing cannot show what came later."""
    return bool(placement.loaded_at and check.listed_at and placement.loaded_at >= check.listed_at)


def _reload_wanted(
    *, instance: Instance, placements: list[CopyRecord], report: ReconcileReport
) -> None:
    """Load pinned models, then hot ones (most recent first) while they fit without eviction."""
    hot_since = _hot_since()
    pinned, hot = [], []
    for record in placements:
        if record.desired_state == Placement.DesiredState.UNLOADED:
            continue
        if record.actual_state in Placement.RESIDENT_STATES:
            continue
        if record.actual_state == Placement.ActualState.FAILED and (
            record.retries >= MAX_LOAD_RETRIES
        ):
            continue
        if record.is_pinned:
            pinned.append(record)
        elif record.last_invoked_at and record.last_invoked_at >= hot_since:
            hot.append(record)
    hot.sort(key=lambda p: p.last_invoked_at, reverse=True)
    used = sum(
        p.memory_mb
        for p in placements
        if p.actual_state in Placement.RESIDENT_STATES
        and p.desired_state != Placement.DesiredState.UNLOADED
    )
    for record in pinned + hot:
        if not record.is_pinned and used + record.memory_mb > instance.memory_budget_mb:
            continue  # a hot model never evicts another to come back
        placement = _placement(record, instance)
        try:
            runtime.ensure_loaded(placement=placement, actor=ACTOR)
        except DomainError as exc:
            report.errors.append(f"{placement}: {exc.message}")
            continue
        used += record.memory_mb
        # Resident now (its load trimmed the instance to budget around it).
        record.actual_state = Placement.ActualState.LOADED
        report.reloaded.append(str(placement))
        record_event(
            kind="placement.reloaded",
            actor=ACTOR,
            message=(
                f"{placement.version} reloaded on {instance} "
                f"({'pinned' if record.is_pinned else 'hot'})."
            ),
            version=placement.version,
            endpoint=instance.endpoint,
            instance=instance,
        )
