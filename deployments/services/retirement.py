"""Retiring a deployment: the model stops answering, and every copy of it is unloaded and its
resources deleted (on SageMaker: nothing of it keeps billing).

``retire_deployment`` is the durable half, in one transaction: the deployment becomes
``retired`` (routing sends nothing to it), every placement of the model is marked unwanted, and
the cleanup is queued. ``retire_placements`` (a Celery task, safe to run twice) asks each
placement's backend to unload it; a worker lost half-way leaves placements that are unwanted but
not yet unloaded, which the reconciler finishes. Deploying the model again later is a new
deployment request.
"""

from __future__ import annotations

from django.db import transaction

from config.errors import NotFound
from config.events import record_event
from config.queue import queue_task
from deployments.backends import backend_for
from deployments.models import Deployment, Placement
from deployments.signals import routing_changed
from models_registry.models import TenantModel


def retire_deployment(*, model: TenantModel, actor: str) -> Deployment:
    """Stop serving ``model`` and queue the unloading of every copy; idempotent."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(model=model).first()
        if deployment is None:
            raise NotFound(f"{model} has not been deployed.")
        if deployment.status == Deployment.Status.RETIRED:
            return deployment
        live = deployment.live_version
        deployment.status = Deployment.Status.RETIRED
        deployment.status_reason = f"Retired by {actor}."
        deployment.live_version = None
        deployment.target_version = None
        deployment.previous_version = None
        deployment.attempts = 0
        deployment.save()
        unwanted = Placement.objects.filter(version__model=model).exclude(
            desired_state=Placement.DesiredState.UNLOADED
        )
        count = unwanted.count()
        unwanted.mark_unwanted()
        record_event(
            kind="deployment.retired",
            actor=actor,
            message=(
                f"{model}: retired"
                + (f" (was serving v{live.number})" if live else "")
                + f"; {count} placement(s) to unload."
            ),
            tenant=model.tenant,
            version=live,
        )
        transaction.on_commit(lambda: queue_task("deployments.tasks.retire_placements", model.pk))
    routing_changed.send(sender=Deployment, model_id=model.pk)
    return deployment


def retire_placements(*, model_id: int, actor: str = "worker") -> int:
    """Unload every unwanted placement of the model that is not unloaded yet; how many."""
    pending = (
        Placement.objects.filter(
            version__model_id=model_id, desired_state=Placement.DesiredState.UNLOADED
        )
        .exclude(actual_state=Placement.ActualState.UNLOADED)
        .select_related("endpoint", "version__model__tenant", "instance")
    )
    done = 0
    for placement in pending:
        backend_for(placement.endpoint).unload(
            placement=placement, actor=actor, reason="deployment retired"
        )
        done += 1
    return done
