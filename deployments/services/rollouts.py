"""Deploying tenant models: requesting a deployment, rolling it out, switching, rolling back.

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

Where a version goes and how it is loaded and probed is the deployment's backend's business
(``backend_for``: ``deployments.backends``); this module decides when, and switches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import Conflict, DomainError
from config.events import record_event
from config.queue import queue_task
from deployments.backends import backend_for, backend_named, backends_serving
from deployments.backends.base import record_rollout_progress
from deployments.exceptions import CapacityExceeded, InstanceUnavailable
from deployments.models import Deployment, Endpoint, Placement
from deployments.signals import routing_changed as signal_routing_changed
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion, TenantModel

logger = logging.getLogger(__name__)

MAX_ROLLOUT_ATTEMPTS = 3


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
    if mode == Endpoint.Mode.SHARED_BASE and get_kind(model.kind).shared_base is None:
        raise DomainError(
            f"mode shared-base serves kinds with a shared base; {model.kind} models have none "
            "(use mme, inference-component or dedicated).",
            field="mode",
        )
    if replicas is not None and not 1 <= replicas <= 8:
        raise DomainError("replicas must be between 1 and 8.", field="replicas")
    with transaction.atomic():
        TenantModel.objects.select_for_update().get(pk=model.pk)
        deployment = Deployment.objects.select_for_update().filter(model=model).first()
        mode = mode or (deployment.mode if deployment else Endpoint.Mode.MME)
        serving = backend_named(backend)
        if mode not in serving.modes:
            raise DomainError(
                f"The {backend} backend serves {' and '.join(serving.modes)} deployments; "
                f"{mode} needs DEPLOY_BACKEND={' or '.join(backends_serving(mode))}.",
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
        # Deploying directly ends a canary or shadow rollout: its version is unloaded after
        # the switch, with the other versions nobody routes to.
        deployment.candidate_version = None
        deployment.candidate_strategy = ""
        deployment.candidate_started_at = None
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
        transaction.on_commit(lambda: queue_rollout(deployment.pk))
    return deployment, True


def queue_rollout(deployment_id: int) -> None:
    """Send the deployment's rollout to a worker."""
    queue_task("deployments.tasks.run_rollout", deployment_id)


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
        serving = backend_named(deployment.backend)
        endpoint, probe_ms = serving.roll_out(deployment=deployment, actor=actor)
    except (InstanceUnavailable, CapacityExceeded) as exc:
        # Transient: the task retries; after the last attempt the rollout is failed.
        if deployment.attempts + 1 >= MAX_ROLLOUT_ATTEMPTS:
            fail_rollout(deployment, exc, actor=actor)
        else:
            record_rollout_progress(
                deployment, f"Attempt {deployment.attempts + 1} failed: {exc.message}"
            )
        raise
    except (DomainError, OSError) as exc:
        fail_rollout(deployment, exc, actor=actor)
        raise
    switched = _switch(deployment_id=deployment_id, target=target, endpoint=endpoint, actor=actor)
    if switched:
        retire_old_versions(deployment_id=deployment_id, actor=actor)
    else:
        _unload_abandoned(deployment_id=deployment_id, version=target, actor=actor)
    return RolloutOutcome(
        deployment_id=deployment_id,
        switched=switched,
        version=target.number,
        probe_latency_ms=probe_ms,
    )


def begin_candidate(*, deployment: Deployment, target: ModelVersion, actor: str) -> None:
    """The candidate answers its probe: it starts getting traffic (call under the row lock)."""
    deployment.candidate_version = target
    deployment.candidate_started_at = timezone.now()
    deployment.target_version = None
    deployment.status = Deployment.Status.LIVE
    deployment.status_reason = ""
    deployment.attempts = 0
    deployment.save()
    record_event(
        kind="canary.started",
        actor=actor,
        message=(
            f"{target.model}: v{target.number} now gets "
            + (
                f"{deployment.candidate_share:.0%} of requests as a canary"
                if deployment.candidate_strategy == Deployment.Strategy.CANARY
                else "a copy of every request as a shadow"
            )
            + f" beside v{deployment.live_version.number}."
        ),
        tenant=target.model.tenant,
        version=target,
        data={"strategy": deployment.candidate_strategy, "share": deployment.candidate_share},
    )


def _switch(*, deployment_id: int, target: ModelVersion, endpoint: Endpoint, actor: str) -> bool:
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        if deployment.target_version_id != target.pk:
            return False  # a newer request replaced this rollout; it runs its own switch
        if deployment.candidate_strategy:
            # A canary or shadow: the new version gets its traffic beside the live one, and
            # the live gate switches later (or not).
            begin_candidate(deployment=deployment, target=target, actor=actor)
            transaction.on_commit(lambda: routing_changed(model_id=target.model_id))
            return True
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
    signal_routing_changed.send(sender=Deployment, model_id=model_id)


def retire_old_versions(*, deployment_id: int, actor: str) -> None:
    """Unload versions other than the live one and the one kept for rollback."""
    deployment = Deployment.objects.get(pk=deployment_id)
    keep = {
        deployment.live_version_id,
        deployment.previous_version_id,
        deployment.candidate_version_id,
    }
    stale = (
        Placement.objects.filter(version__model_id=deployment.model_id)
        .exclude(version_id__in=[k for k in keep if k])
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("version__model", "instance", "endpoint")
    )
    for placement in stale:
        set_unloaded(placement=placement, actor=actor, reason="superseded by a newer deployment")
    # A model moved into or out of the shared-base layout is served in its new layout only.
    moved = (
        Placement.objects.filter(version_id=deployment.live_version_id)
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .exclude(endpoint__mode=deployment.mode)
        .select_related("version__model", "instance", "endpoint")
    )
    for placement in moved:
        if Endpoint.Mode.SHARED_BASE in (placement.endpoint.mode, deployment.mode):
            set_unloaded(
                placement=placement, actor=actor, reason=f"now served as {deployment.mode}"
            )
    # The version kept for rollback stays placed but no longer holds pinned memory.
    Placement.objects.filter(
        version_id=deployment.previous_version_id, desired_state=Placement.DesiredState.PINNED
    ).update(desired_state=Placement.DesiredState.LOADED, updated_at=timezone.now())


def _unload_abandoned(*, deployment_id: int, version: ModelVersion, actor: str) -> None:
    """A rollout overtaken by a newer request or a retirement placed a version nobody routes
    to: unload it rather than leave it holding memory (or billing, on SageMaker)."""
    deployment = Deployment.objects.get(pk=deployment_id)
    if version.pk in (
        deployment.live_version_id,
        deployment.target_version_id,
        deployment.previous_version_id,
        deployment.candidate_version_id,
    ):
        return
    abandoned = (
        Placement.objects.filter(version=version)
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("version__model", "instance", "endpoint")
    )
    for placement in abandoned:
        set_unloaded(placement=placement, actor=actor, reason="its rollout was overtaken")


def set_unloaded(*, placement: Placement, actor: str, reason: str) -> None:
    """Mark a placement as no longer wanted and unload it from its instance if it is there."""
    Placement.objects.filter(pk=placement.pk).mark_unwanted()
    backend_for(placement.endpoint).unload(placement=placement, actor=actor, reason=reason)


def fail_rollout(deployment: Deployment, exc: BaseException, *, actor: str) -> None:
    """Mark the deployment's rollout failed with the reason; what was live keeps serving."""
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
        if locked.candidate_version_id is None:
            locked.candidate_strategy = ""
        locked.save()
        transaction.on_commit(
            lambda: _unload_abandoned(deployment_id=deployment.pk, version=target, actor=actor)
        )
        record_event(
            kind="deployment.failed",
            severity="error",
            actor=actor,
            message=f"{deployment.model}: {locked.status_reason}",
            tenant=deployment.model.tenant,
            version=target,
            endpoint=locked.endpoint,
        )
