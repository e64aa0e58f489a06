"""Repairing a local endpoint: its instances hold what the placements say.

Called by the reconciler (``deployments.services.reconciler``) for each local endpoint:

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
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends.base import ReconcileReport
from deployments.backends.local import runtime
from deployments.models import Endpoint, Instance, Placement
from deployments.placement.rows import memory_of

ACTOR = "reconciler"
MAX_LOAD_RETRIES = 3
MAX_RESTARTS = 3


def reconcile_endpoint(*, endpoint: Endpoint, report: ReconcileReport) -> None:
    live = list(endpoint.instances.exclude(status=Instance.Status.STOPPED).order_by("ordinal"))
    for instance in live:
        if instance.status == Instance.Status.DRAINING:
            continue
        report.instances_checked += 1
        if not runtime.instance_process_alive(instance):
            instance = _restart(instance=instance, report=report)
            if instance is None:
                continue
        elif instance.status != Instance.Status.HEALTHY:
            # Marked unhealthy (a request met it while it restarted) but answering: route to it
            # again, rather than leave it out of routing until it dies for real.
            runtime.check_instance_health(instance=instance, actor=ACTOR)
            instance.refresh_from_db()
            report.instances_recovered.append(str(instance))
        _reconcile_models(instance=instance, report=report)
        trimmed = runtime.trim_to_budget(instance=instance, actor=ACTOR)
        report.trimmed.extend(f"{name} on {instance}" for name in trimmed)
    running = endpoint.instances.exclude(
        status__in=[Instance.Status.STOPPED, Instance.Status.DRAINING]
    ).count()
    for _ in range(max(0, endpoint.min_instances - running)):
        try:
            started = runtime.start_local_instance(endpoint=endpoint, actor=ACTOR)
        except DomainError as exc:
            report.errors.append(f"{endpoint.name}: {exc.message}")
            break
        report.instances_started.append(str(started))


def _restart(*, instance: Instance, report: ReconcileReport) -> Instance | None:
    if instance.failed_restarts >= MAX_RESTARTS:
        runtime.stop_local_instance(
            instance=instance,
            actor=ACTOR,
            reason=f"gave up after {instance.failed_restarts} failed restarts",
        )
        report.instances_given_up.append(str(instance))
        return None
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


def _reconcile_models(*, instance: Instance, report: ReconcileReport) -> None:
    client = runtime.client_for(instance)
    try:
        actual = {model.name for model in client.list_models()}
    except DomainError as exc:
        report.errors.append(f"{instance}: {exc.message}")
        return
    placements = list(
        instance.placements.select_related("version__model__tenant", "endpoint", "instance")
    )
    wanted_names: set[str] = set()
    unwanted_ids: dict[str, list[int]] = {}
    for placement in placements:
        name = placement.version.triton_model_name
        if placement.desired_state != Placement.DesiredState.UNLOADED:
            wanted_names.add(name)
        else:
            unwanted_ids.setdefault(name, []).append(placement.pk)
        if (
            placement.actual_state == Placement.ActualState.LOADED
            and name not in actual
            and placement.desired_state != Placement.DesiredState.UNLOADED
        ):
            Placement.objects.filter(pk=placement.pk).update(
                actual_state=Placement.ActualState.EVICTED, updated_at=timezone.now()
            )
            placement.actual_state = Placement.ActualState.EVICTED
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
    for name in sorted(actual - wanted_names):
        try:
            client.unload_model(name)
        except DomainError as exc:
            report.errors.append(f"{instance}: {exc.message}")
            continue
        Placement.objects.filter(pk__in=unwanted_ids.get(name, [])).update(
            actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
        )
        report.orphans_unloaded.append(f"{name} on {instance}")
        record_event(
            kind="placement.orphan_unloaded",
            actor=ACTOR,
            message=f"{name} was loaded on {instance} with no placement wanting it; unloaded.",
            endpoint=instance.endpoint,
            instance=instance,
        )
    _reload_wanted(instance=instance, placements=placements, report=report)


def _reload_wanted(
    *, instance: Instance, placements: list[Placement], report: ReconcileReport
) -> None:
    """Load pinned models, then hot ones (most recent first) while they fit without eviction."""
    hot_since = _hot_since()
    pinned, hot = [], []
    for placement in placements:
        if placement.desired_state == Placement.DesiredState.UNLOADED:
            continue
        if placement.actual_state in Placement.RESIDENT_STATES:
            continue
        if placement.actual_state == Placement.ActualState.FAILED and (
            placement.retries >= MAX_LOAD_RETRIES
        ):
            continue
        if placement.is_pinned:
            pinned.append(placement)
        elif placement.last_invoked_at and placement.last_invoked_at >= hot_since:
            hot.append(placement)
    hot.sort(key=lambda p: p.last_invoked_at, reverse=True)
    used = sum(
        memory_of(p)
        for p in placements
        if p.actual_state in Placement.RESIDENT_STATES
        and p.desired_state != Placement.DesiredState.UNLOADED
    )
    for placement in pinned + hot:
        memory = memory_of(placement)
        if not placement.is_pinned and used + memory > instance.memory_budget_mb:
            continue  # a hot model never evicts another to come back
        try:
            runtime.ensure_loaded(placement=placement, actor=ACTOR)
        except DomainError as exc:
            report.errors.append(f"{placement}: {exc.message}")
            continue
        used += memory
        report.reloaded.append(str(placement))
        record_event(
            kind="placement.reloaded",
            actor=ACTOR,
            message=(
                f"{placement.version} reloaded on {instance} "
                f"({'pinned' if placement.is_pinned else 'hot'})."
            ),
            version=placement.version,
            endpoint=instance.endpoint,
            instance=instance,
        )
