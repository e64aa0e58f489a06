"""Rolling versions out onto local endpoints, and draining a local instance.

Which instance of a shared (MME) endpoint takes a new model: the one with the least placed
memory that still has room within its budget; when none has room and the endpoint may grow, a
new instance is started (scaling out is another Triton process locally). Pinned models (premium
tenants, dedicated endpoints) must fit in the budget together with the instance's other pinned
models; evictable ones may exceed it, because the multi-model cache loads them on demand.
"""

from __future__ import annotations

import logging

from config.errors import DomainError
from config.events import record_event
from deployments.backends.base import dedicated_endpoint_name, record_rollout_progress
from deployments.backends.local import runtime
from deployments.exceptions import CapacityExceeded, InstanceUnavailable, ModelLoadFailed
from deployments.models import Deployment, Endpoint, Instance, InstanceType, Placement
from deployments.placement.rows import DEFAULT_EXPECTED_MEMORY_MB, memory_of
from deployments.signals import routing_changed
from models_registry.models import ModelVersion, TenantModel

logger = logging.getLogger(__name__)


def roll_out(*, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
    """Place the target version on the deployment's local endpoint (``replicas`` instances),
    load it there and probe each copy; returns the endpoint and the slowest probe in ms."""
    target = deployment.target_version
    endpoint = _local_endpoint_for(deployment=deployment, actor=actor)
    record_rollout_progress(
        deployment, f"Placing v{target.number} on {endpoint.name}.", endpoint=endpoint
    )
    desired = Placement.desired_state_for(
        version=target, dedicated=deployment.mode == Endpoint.Mode.DEDICATED
    )
    pinned = desired == Placement.DesiredState.PINNED
    instances = _instances_for(
        endpoint=endpoint, version=target, replicas=deployment.replicas, pinned=pinned, actor=actor
    )
    slowest = 0.0
    for instance in instances:
        placement = runtime.place_on_instance(
            version=target, instance=instance, actor=actor, pinned=pinned
        )
        if placement.desired_state == Placement.DesiredState.UNLOADED or (
            pinned and not placement.is_pinned
        ):
            placement.desired_state = desired
            placement.save(update_fields=["desired_state", "updated_at"])
        record_rollout_progress(
            deployment, f"Loading v{target.number} on {instance} and probing it."
        )
        try:
            probe = runtime.probe_placement(placement=placement, actor=actor)
        except (ModelLoadFailed, InstanceUnavailable, CapacityExceeded):
            raise  # failed for good, or transient (the task retries)
        except DomainError as exc:
            raise ModelLoadFailed(
                f"v{target.number} loaded on {instance} but its probe failed: {exc.message}"
            ) from exc
        slowest = max(slowest, probe.latency_ms)
    return endpoint, slowest


def _local_endpoint_for(*, deployment: Deployment, actor: str) -> Endpoint:
    model = deployment.model
    if deployment.mode == Endpoint.Mode.DEDICATED:
        return _dedicated_endpoint(model=model, actor=actor)
    runtime.ensure_default_local_endpoints(actor=actor)
    endpoint = (
        Endpoint.objects.filter(
            backend=Endpoint.Backend.LOCAL, mode=Endpoint.Mode.MME, model_kind=model.kind
        )
        .exclude(status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED])
        .select_related("instance_type")
        .order_by("name")
        .first()
    )
    if endpoint is None:
        endpoint = Endpoint.objects.create(
            name=_unique_endpoint_name(f"local-{model.kind}"),
            backend=Endpoint.Backend.LOCAL,
            mode=Endpoint.Mode.MME,
            instance_type=_local_type(),
            model_kind=model.kind,
            min_instances=1,
            max_instances=2,
        )
        record_event(
            kind="endpoint.created",
            actor=actor,
            message=f"Local multi-model endpoint {endpoint.name} created for {model.kind} models.",
            endpoint=endpoint,
        )
    return endpoint


def _dedicated_endpoint(*, model: TenantModel, actor: str) -> Endpoint:
    name = dedicated_endpoint_name(model)
    endpoint, created = Endpoint.objects.get_or_create(
        name=name,
        defaults={
            "backend": Endpoint.Backend.LOCAL,
            "mode": Endpoint.Mode.DEDICATED,
            "instance_type": _local_type(),
            "model_kind": model.kind,
            "min_instances": 1,
            "max_instances": 1,
        },
    )
    if created:
        record_event(
            kind="endpoint.created",
            actor=actor,
            message=f"Dedicated endpoint {name} created for {model}.",
            tenant=model.tenant,
            endpoint=endpoint,
        )
    elif endpoint.status in (Endpoint.Status.RETIRING, Endpoint.Status.RETIRED):
        endpoint.status = Endpoint.Status.CREATING
        endpoint.save(update_fields=["status", "updated_at"])
    return endpoint


def _local_type() -> InstanceType:
    local_type = InstanceType.objects.filter(is_local=True).order_by("usd_per_hour", "name").first()
    if local_type is None:
        raise DomainError("The instance catalog has no local instance type.", field="instance_type")
    return local_type


def _unique_endpoint_name(base: str) -> str:
    name, number = base, 1
    while Endpoint.objects.filter(name=name).exists():
        number += 1
        name = f"{base}-{number}"
    return name


def placed_memory_mb(instance: Instance) -> tuple[float, float]:
    """(all placed, pinned) memory on an instance, from measured figures where there are any."""
    total = pinned = 0.0
    placements = instance.placements.exclude(
        desired_state=Placement.DesiredState.UNLOADED
    ).select_related("version__model")
    for placement in placements:
        memory = memory_of(placement)
        total += memory
        if placement.is_pinned:
            pinned += memory
    return total, pinned


def _instances_for(
    *, endpoint: Endpoint, version: ModelVersion, replicas: int, pinned: bool, actor: str
) -> list[Instance]:
    """The instances that take the version's copies (already placed ones first)."""
    already = [
        placement.instance
        for placement in Placement.objects.filter(
            version=version,
            endpoint=endpoint,
            instance__status__in=Instance.ROUTABLE_STATES,
        )
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("instance")
        .order_by("instance__ordinal")
    ]
    chosen = already[:replicas]
    memory = float(version.host_memory_mb or 0) or DEFAULT_EXPECTED_MEMORY_MB
    while len(chosen) < replicas:
        candidates = []
        for instance in endpoint.instances.filter(status__in=Instance.ROUTABLE_STATES):
            if instance in chosen or not runtime.instance_process_alive(instance):
                continue
            total, pinned_mb = placed_memory_mb(instance)
            if pinned and pinned_mb + memory > instance.memory_budget_mb:
                continue
            candidates.append((total + memory > instance.memory_budget_mb, total, instance))
        candidates.sort(key=lambda c: (c[0], c[1], c[2].ordinal))
        roomy = [c for c in candidates if not c[0]]
        live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
        if roomy:
            chosen.append(roomy[0][2])
        elif live < endpoint.max_instances or not candidates:
            if live >= endpoint.max_instances:
                raise CapacityExceeded(
                    f"{endpoint.name} has no instance with room for {version} "
                    f"({memory:.0f} MB{' pinned' if pinned else ''}) and may not grow past "
                    f"{endpoint.max_instances} instances.",
                    field="replicas",
                )
            chosen.append(runtime.start_local_instance(endpoint=endpoint, actor=actor))
        else:
            chosen.append(candidates[0][2])  # evictable: the multi-model cache makes room
    return chosen


def unload(*, placement: Placement, actor: str, reason: str) -> None:
    """Unload a copy from its instance if it is resident there; what fails now is left to the
    reconciler (an orphan by its next pass)."""
    if placement.actual_state not in Placement.RESIDENT_STATES or placement.instance is None:
        return
    try:
        runtime.unload_placement(placement=placement, actor=actor, reason=reason)
    except DomainError as exc:
        logger.warning("Could not unload %s now: %s", placement, exc.message)


def drain_instance(*, instance: Instance, actor: str, stop: bool = True) -> Instance:
    """Move every model off an instance (loaded elsewhere first), then stop it."""
    instance = runtime.begin_draining(instance=instance, actor=actor, what="models")
    if instance.status == Instance.Status.STOPPED:
        return instance
    endpoint = instance.endpoint
    moving = instance.placements.exclude(
        desired_state=Placement.DesiredState.UNLOADED
    ).select_related("version__model__tenant", "endpoint", "instance")
    for placement in moving:
        resident = placement.actual_state == Placement.ActualState.LOADED
        if placement.is_pinned or resident:
            targets = _instances_for(
                endpoint=endpoint,
                version=placement.version,
                replicas=1,
                pinned=placement.is_pinned,
                actor=actor,
            )
            move_copy(
                placement=placement,
                instance=targets[0],
                actor=actor,
                reason=f"{instance} is draining",
            )
        else:
            _retire_copy(placement, actor=actor, reason=f"{instance} is draining")
    if stop:
        instance = runtime.stop_local_instance(
            instance=instance, actor=actor, reason="drained by an operator"
        )
    return instance


def move_copy(*, placement: Placement, instance: Instance, actor: str, reason: str) -> Placement:
    """Move a copy to another instance of its endpoint by the rollout rules: load it there and
    answer its kind's warm-up request, switch the routes, then unload the old copy. A failed
    load leaves the old copy serving."""
    if instance.endpoint_id != placement.endpoint_id:
        raise DomainError(
            f"{instance} is not an instance of {placement.endpoint}.", field="instance"
        )
    new = runtime.place_on_instance(
        version=placement.version, instance=instance, actor=actor, pinned=placement.is_pinned
    )
    # A copy this instance held before and was told to drop is wanted again.
    wanted = Placement.DesiredState.PINNED if placement.is_pinned else Placement.DesiredState.LOADED
    if new.desired_state != wanted:
        Placement.objects.filter(pk=new.pk).update(desired_state=wanted)
        new.desired_state = wanted
    runtime.probe_placement(placement=new, actor=actor)
    _retire_copy(placement, actor=actor, reason=reason)
    return new


def _retire_copy(placement: Placement, *, actor: str, reason: str) -> None:
    Placement.objects.filter(pk=placement.pk).mark_unwanted()
    unload(placement=placement, actor=actor, reason=reason)
    routing_changed.send(sender=Placement, model_id=placement.version.model_id)
