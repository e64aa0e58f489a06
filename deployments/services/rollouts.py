"""Deploying tenant models: where a version goes, rolling it out, rolling back, draining.

A deployment is one row per tenant model (``Deployment``). Deploying version N+1 never touches
what serves N until N+1 answers:

1. ``request_deployment`` validates the request, records the target version on the row and
   queues the rollout (202); a repeated request for what is already live or rolling out changes
   nothing.
2. ``run_rollout`` (a Celery task, safe to run twice) picks the endpoint for the mode, starts
   instances it needs, places N+1 there, loads it and sends its kind's warm-up request as a
   probe. Only when the probe answers does one row update move N+1 to ``live_version`` and N to
   ``previous_version``; requests already routed to N finish on N, which stays loaded.
3. Rolling back (the registry's rollback, or ``rollback_deployment``) is the same switch in the
   other direction; the previous version is still loaded, so it is a probe and a row update.
4. Versions older than N-1 are unloaded after a switch; N-1 stays placed, evictable.

Which instance of a shared (MME) endpoint takes a new model: the one with the least placed
memory that still has room within its budget; when none has room and the endpoint may grow, a
new instance is started (scaling out is another Triton process locally). Pinned models (premium
tenants, dedicated endpoints) must fit in the budget together with the instance's other pinned
models; evictable ones may exceed it, because the multi-model cache loads them on demand.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import Conflict, DomainError
from config.events import record_event
from deployments.backends.local import runtime
from deployments.exceptions import CapacityExceeded, InstanceUnavailable, ModelLoadFailed
from deployments.models import Deployment, Endpoint, Instance, InstanceType, Placement
from models_registry.models import ModelVersion, TenantModel
from tenants.models import Tenant

logger = logging.getLogger(__name__)

MAX_ROLLOUT_ATTEMPTS = 3
LOCAL_MODES = (Endpoint.Mode.MME, Endpoint.Mode.DEDICATED)
ENDPOINT_NAME_MAX_LENGTH = 63


@dataclass(frozen=True)
class RolloutOutcome:
    deployment_id: int
    switched: bool
    version: int | None
    probe_latency_ms: float | None = None


# --- Requests --------------------------------------------------------------------------------


def request_deployment(
    *,
    model: TenantModel,
    actor: str,
    version: ModelVersion | None = None,
    mode: str | None = None,
    replicas: int | None = None,
    backend: str | None = None,
) -> tuple[Deployment, bool]:
    """Record a deployment request and queue its rollout; returns (deployment, queued).

    ``version`` defaults to the model's active version, ``mode`` to the current deployment's mode
    (MME for a first deployment), ``backend`` to the ``DEPLOY_BACKEND`` setting.
    """
    version = version or model.active_version
    if version is None:
        raise Conflict(
            f"{model} has no active version; promote one or name the version to deploy.",
            field="version",
        )
    if version.model_id != model.pk:
        raise DomainError(f"{version} is not a version of {model}.", field="version")
    if version.status != ModelVersion.Status.READY or not version.package_uri:
        raise Conflict(
            f"{version} is {version.status}; only a packaged, ready version can be deployed.",
            field="version",
        )
    backend = backend or settings.TENANTML_DEPLOY_BACKEND
    if mode is not None and mode not in Endpoint.Mode.values:
        raise DomainError(f"mode must be one of {', '.join(Endpoint.Mode.values)}.", field="mode")
    if replicas is not None and not 1 <= replicas <= 8:
        raise DomainError("replicas must be between 1 and 8.", field="replicas")
    with transaction.atomic():
        TenantModel.objects.select_for_update().get(pk=model.pk)
        deployment = Deployment.objects.select_for_update().filter(model=model).first()
        mode = mode or (deployment.mode if deployment else Endpoint.Mode.MME)
        if backend == Endpoint.Backend.LOCAL and mode not in LOCAL_MODES:
            raise DomainError(
                f"The local backend serves {' and '.join(LOCAL_MODES)} deployments; "
                f"{mode} needs DEPLOY_BACKEND=sagemaker.",
                field="mode",
            )
        replicas = replicas or (deployment.replicas if deployment else 1)
        if mode == Endpoint.Mode.DEDICATED and replicas > 1:
            raise DomainError(
                "A dedicated endpoint holds one copy per instance; use replicas=1 or mme.",
                field="replicas",
            )
        unchanged = (
            deployment is not None
            and deployment.mode == mode
            and deployment.backend == backend
            and deployment.replicas == replicas
            and (
                (
                    deployment.status == Deployment.Status.LIVE
                    and deployment.live_version_id == version.pk
                    and deployment.target_version_id is None
                )
                or (
                    deployment.status == Deployment.Status.ROLLING_OUT
                    and deployment.target_version_id == version.pk
                )
            )
        )
        if unchanged:
            return deployment, False
        if deployment is None:
            deployment = Deployment(model=model)
        deployment.mode = mode
        deployment.backend = backend
        deployment.replicas = replicas
        deployment.target_version = version
        deployment.status = Deployment.Status.ROLLING_OUT
        deployment.status_reason = f"Queued: v{version.number} ({mode})."
        deployment.attempts = 0
        deployment.rollout_started_at = timezone.now()
        deployment.save()
        record_event(
            kind="deployment.requested",
            actor=actor,
            message=f"{model}: deploy v{version.number} as {mode} on the {backend} backend.",
            tenant=model.tenant,
            version=version,
            data={"mode": mode, "backend": backend, "replicas": replicas},
        )
        transaction.on_commit(lambda: _queue_rollout(deployment.pk))
    return deployment, True


def _queue_rollout(deployment_id: int) -> None:
    from deployments import tasks

    tasks.run_rollout.delay(deployment_id)


def on_version_promoted(*, version: ModelVersion, actor: str) -> Deployment | None:
    """A promoted (or rolled-back-to) version rolls out to the model's existing deployment."""
    deployment = Deployment.objects.filter(model_id=version.model_id).first()
    if deployment is None or deployment.status == Deployment.Status.RETIRED:
        return None
    deployment, _ = request_deployment(
        model=version.model, version=version, actor=actor, mode=deployment.mode
    )
    return deployment


def rollback_deployment(*, model: TenantModel, actor: str) -> Deployment:
    """Route the model back to the version it served before (one call; it is still loaded)."""
    from models_registry.services.promotion import rollback_model

    deployment = Deployment.objects.filter(model=model).first()
    if deployment is None or deployment.previous_version_id is None:
        raise Conflict(f"{model} has no earlier deployed version to roll back to.")
    if model.active_version_id == deployment.live_version_id:
        rollback_model(model=model, actor=actor)  # its hook queues the rollout
    else:
        request_deployment(model=model, version=deployment.previous_version, actor=actor)
    return Deployment.objects.get(pk=deployment.pk)


# --- The rollout -----------------------------------------------------------------------------


def run_rollout(*, deployment_id: int, actor: str = "worker") -> RolloutOutcome:
    """Load, probe and switch to the deployment's target version (idempotent, crash-safe)."""
    deployment = (
        Deployment.objects.select_related("model__tenant", "target_version", "live_version")
        .filter(pk=deployment_id)
        .first()
    )
    if deployment is None or deployment.target_version_id is None:
        return RolloutOutcome(deployment_id=deployment_id, switched=False, version=None)
    target = deployment.target_version
    Deployment.objects.filter(pk=deployment_id).update(attempts=deployment.attempts + 1)
    try:
        if deployment.backend == Endpoint.Backend.SAGEMAKER:
            from deployments.backends.sagemaker import deploy as sagemaker_deploy

            endpoint, probe_ms = sagemaker_deploy.roll_out(deployment=deployment, actor=actor)
        else:
            endpoint, probe_ms = _roll_out_local(deployment=deployment, actor=actor)
    except (InstanceUnavailable, CapacityExceeded) as exc:
        # Transient: the task retries; after the last attempt the rollout is failed.
        if deployment.attempts + 1 >= MAX_ROLLOUT_ATTEMPTS:
            _fail(deployment, exc, actor=actor)
        else:
            _progress(deployment, f"Attempt {deployment.attempts + 1} failed: {exc.message}")
        raise
    except (DomainError, OSError) as exc:
        _fail(deployment, exc, actor=actor)
        raise
    switched = _switch(deployment_id=deployment_id, target=target, endpoint=endpoint, actor=actor)
    if switched:
        _retire_old_versions(deployment_id=deployment_id, actor=actor)
    return RolloutOutcome(
        deployment_id=deployment_id,
        switched=switched,
        version=target.number,
        probe_latency_ms=probe_ms,
    )


def _roll_out_local(*, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
    model = deployment.model
    target = deployment.target_version
    endpoint = _local_endpoint_for(deployment=deployment, actor=actor)
    _progress(deployment, f"Placing v{target.number} on {endpoint.name}.", endpoint=endpoint)
    pinned = model.tenant.tier == Tenant.Tier.PREMIUM or deployment.mode == Endpoint.Mode.DEDICATED
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
            placement.desired_state = (
                Placement.DesiredState.PINNED if pinned else Placement.DesiredState.LOADED
            )
            placement.save(update_fields=["desired_state", "updated_at"])
        _progress(deployment, f"Loading v{target.number} on {instance} and probing it.")
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


def _switch(*, deployment_id: int, target: ModelVersion, endpoint: Endpoint, actor: str) -> bool:
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        if deployment.target_version_id != target.pk:
            return False  # a newer request replaced this rollout; it runs its own switch
        previous = deployment.live_version
        if previous is not None and previous.pk != target.pk:
            deployment.previous_version = previous
        deployment.live_version = target
        deployment.target_version = None
        deployment.endpoint = endpoint
        deployment.status = Deployment.Status.LIVE
        deployment.status_reason = ""
        deployment.attempts = 0
        deployment.live_since = timezone.now()
        deployment.save()
        record_event(
            kind="deployment.switched",
            actor=actor,
            message=(
                f"{target.model}: traffic now goes to v{target.number} on {endpoint.name}"
                + (f" (was v{previous.number})." if previous and previous.pk != target.pk else ".")
            ),
            tenant=target.model.tenant,
            version=target,
            endpoint=endpoint,
            data={"previous": previous.number if previous else None},
        )
    routing_changed(model_id=target.model_id)
    return True


def routing_changed(*, model_id: int) -> None:
    """Tell routing caches that a model's live version or copies changed."""
    from deployments.signals import routing_changed as signal

    signal.send(sender=Deployment, model_id=model_id)


def _retire_old_versions(*, deployment_id: int, actor: str) -> None:
    """Unload versions other than the live one and the one kept for rollback."""
    deployment = Deployment.objects.get(pk=deployment_id)
    keep = {deployment.live_version_id, deployment.previous_version_id}
    stale = (
        Placement.objects.filter(version__model_id=deployment.model_id)
        .exclude(version_id__in=[k for k in keep if k])
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("version__model", "instance", "endpoint")
    )
    for placement in stale:
        set_unloaded(placement=placement, actor=actor, reason="superseded by a newer deployment")
    # The version kept for rollback stays placed but no longer holds pinned memory.
    Placement.objects.filter(
        version_id=deployment.previous_version_id, desired_state=Placement.DesiredState.PINNED
    ).update(desired_state=Placement.DesiredState.LOADED, updated_at=timezone.now())


def set_unloaded(*, placement: Placement, actor: str, reason: str) -> None:
    """Mark a placement as no longer wanted and unload it from its instance if it is there."""
    Placement.objects.filter(pk=placement.pk).update(
        desired_state=Placement.DesiredState.UNLOADED, updated_at=timezone.now()
    )
    resident = placement.actual_state in Placement.RESIDENT_STATES
    if resident and placement.instance is not None and placement.endpoint.backend == "local":
        try:
            runtime.unload_placement(placement=placement, actor=actor, reason=reason)
        except DomainError as exc:
            # The reconciler unloads it on its next pass (an orphan by then).
            logger.warning("Could not unload %s now: %s", placement, exc.message)


def _fail(deployment: Deployment, exc: BaseException, *, actor: str) -> None:
    reason = getattr(exc, "message", None) or str(exc)
    target = deployment.target_version
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.target_version_id != (target.pk if target else None):
            return
        locked.status = Deployment.Status.FAILED
        locked.status_reason = (
            f"Rollout of v{target.number} failed: {reason}"
            + (f" v{locked.live_version.number} keeps serving." if locked.live_version else "")
        )[:4000]
        locked.target_version = None
        locked.save()
        record_event(
            kind="deployment.failed",
            severity="error",
            actor=actor,
            message=f"{deployment.model}: {locked.status_reason}",
            tenant=deployment.model.tenant,
            version=target,
            endpoint=locked.endpoint,
        )


def _progress(deployment: Deployment, message: str, *, endpoint: Endpoint | None = None) -> None:
    update = {"status_reason": message[:4000], "updated_at": timezone.now()}
    if endpoint is not None and deployment.live_version_id is None:
        update["endpoint"] = endpoint
    Deployment.objects.filter(pk=deployment.pk).update(**update)


# --- Local endpoints and instances -----------------------------------------------------------


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


def dedicated_endpoint_name(model: TenantModel) -> str:
    """``ded-<tenant>-<model>``, shortened with a digest where it would pass 63 characters."""
    name = f"ded-{model.tenant.slug}-{model.name}"
    if len(name) <= ENDPOINT_NAME_MAX_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: ENDPOINT_NAME_MAX_LENGTH - 9]}-{digest}"


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
        memory = runtime.memory_of(placement)
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
            instance__status__in=runtime.ROUTABLE_INSTANCE_STATES,
        )
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("instance")
        .order_by("instance__ordinal")
    ]
    chosen = already[:replicas]
    memory = float(version.host_memory_mb or 0) or runtime.DEFAULT_EXPECTED_MEMORY_MB
    while len(chosen) < replicas:
        candidates = []
        for instance in endpoint.instances.filter(status__in=runtime.ROUTABLE_INSTANCE_STATES):
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


# --- Draining --------------------------------------------------------------------------------


def drain_instance(*, instance: Instance, actor: str, stop: bool = True) -> Instance:
    """Move every model off an instance (loaded elsewhere first), then stop it."""
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
        message=f"{instance} is draining; its models move to other instances first.",
        endpoint=instance.endpoint,
        instance=instance,
    )
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
            new = runtime.place_on_instance(
                version=placement.version,
                instance=targets[0],
                actor=actor,
                pinned=placement.is_pinned,
            )
            runtime.probe_placement(placement=new, actor=actor)
        set_unloaded(placement=placement, actor=actor, reason=f"{instance} is draining")
        routing_changed(model_id=placement.version.model_id)
    if stop:
        instance = runtime.stop_local_instance(
            instance=instance, actor=actor, reason="drained by an operator"
        )
    return instance
