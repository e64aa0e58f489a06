"""Retiring on SageMaker: deleting what serves a placement nobody wants any more, endpoints left
with no model, and the rollback copy once its window has passed — so nothing keeps billing.

What a placement holds alone, by mode:
- MME: its ``TargetModel`` archive under the endpoint's S3 prefix (instances that loaded it drop
  it when they need the memory, as SageMaker does).
- Inference components: the component, its scaling target with its policies, its alarms (5xx,
  no capacity) and their ``ScalingPolicy`` rows when the component still serves this version;
  otherwise only the version's SageMaker model.
- Dedicated: the whole endpoint with its configs, model and scaling target.

An endpoint retired goes with every scaling target, policy and alarm of its own and of its
components, and the ``ScalingPolicy`` rows that described them.

An MME or IC endpoint with no wanted placement left is deleted with its configs, models,
scaling targets and S3 prefix when ``SAGEMAKER_EMPTY_ENDPOINT_POLICY`` is ``delete`` (the
default); with ``keep`` it stays, billing its minimum instances, for a faster next deploy.
Deletions of resources already gone count as done, so a retry after a crash finishes the job;
each resource deleted is an Event.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends.sagemaker import deploy, scaling, shared_base
from deployments.backends.sagemaker.client import SageMakerEndpointBackend
from deployments.backends.sagemaker.deploy import (
    component_name,
    endpoint_backend,
    mme_prefix,
    version_model_name,
)
from deployments.backends.sagemaker.instances import sync_instances
from deployments.models import Deployment, Endpoint, Placement


def record_deletion(
    *, what: str, name: str, actor: str, reason: str, endpoint: Endpoint | None = None, **refs
) -> None:
    """The Event every deletion of a cloud resource leaves (``sagemaker.resource_deleted``)."""
    record_event(
        kind="sagemaker.resource_deleted",
        actor=actor,
        message=f"Deleted {what} {name} ({reason}).",
        endpoint=endpoint,
        data={"resource": what, "name": name, "reason": reason},
        **refs,
    )


def retire_placement(*, placement: Placement, actor: str, reason: str) -> None:
    """Delete what serves ``placement`` alone, then the endpoint if nothing wanted is left."""
    placement = Placement.objects.select_related("version__model__tenant", "endpoint").get(
        pk=placement.pk
    )
    endpoint = placement.endpoint
    version = placement.version
    backend = endpoint_backend()
    if endpoint.mode == Endpoint.Mode.MME:
        if placement.external_name:
            backend.remove_model(
                endpoint_prefix=mme_prefix(endpoint), target_model=placement.external_name
            )
            record_deletion(
                what="S3 object",
                name=f"{mme_prefix(endpoint)}{placement.external_name}",
                endpoint=endpoint,
                actor=actor,
                reason=reason,
                version=version,
            )
    elif endpoint.mode == Endpoint.Mode.INFERENCE_COMPONENT:
        _retire_component_version(backend=backend, placement=placement, actor=actor, reason=reason)
    elif endpoint.mode == Endpoint.Mode.SHARED_BASE:
        # Only the head goes: the encoder serves the endpoint's other tenants (the endpoint
        # and its prefix go below once no head is wanted there).
        shared_base.unload_head(backend=backend, placement=placement)
    else:
        _retire_endpoint(backend=backend, endpoint=endpoint, actor=actor, reason=reason)
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
    )
    if endpoint.mode != Endpoint.Mode.DEDICATED:
        retire_endpoint_if_empty(endpoint=endpoint, actor=actor)


def _retire_component_version(
    *, backend: SageMakerEndpointBackend, placement: Placement, actor: str, reason: str
) -> None:
    endpoint = placement.endpoint
    version = placement.version
    component = component_name(version.model)
    model_name = version_model_name(version)
    state = backend.describe_component(component)
    deleted = []
    if state is not None and state.model_name == model_name:
        deleted += backend.remove_component(component, delay_s=deploy.WAIT_DELAY_S)
    if state is None or state.model_name == model_name:
        # The component's policies go with it (or after it, if it went some other way).
        deleted += [
            ("alarm", alarm)
            for alarm in scaling.retire_component_policies(backend=backend, component=component)
        ]
    if backend.delete_model(model_name):
        deleted.append(("model", model_name))
    for what, name in deleted:
        record_deletion(
            what=what, name=name, endpoint=endpoint, actor=actor, reason=reason, version=version
        )


def _retire_endpoint(
    *, backend: SageMakerEndpointBackend, endpoint: Endpoint, actor: str, reason: str
) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(status=Endpoint.Status.RETIRING)
    retired = backend.retire_endpoint(endpoint.name, delay_s=deploy.WAIT_DELAY_S)
    # What the rows name goes too, even where the endpoint itself was gone already.
    alarms = scaling.retire_endpoint_policies(backend=backend, endpoint=endpoint)
    for what, names in (
        ("inference component", retired.inference_components),
        ("alarm", (*retired.alarms, *alarms)),
        ("endpoint config", retired.endpoint_configs),
        ("model", retired.models),
        ("endpoint", (retired.endpoint,) if retired.endpoint else ()),
    ):
        for name in names:
            record_deletion(what=what, name=name, endpoint=endpoint, actor=actor, reason=reason)
    if endpoint.mode in (Endpoint.Mode.MME, Endpoint.Mode.SHARED_BASE):
        for key in backend.remove_prefix(mme_prefix(endpoint)):
            record_deletion(
                what="S3 object", name=key, endpoint=endpoint, actor=actor, reason=reason
            )
    Endpoint.objects.filter(pk=endpoint.pk).update(
        status=Endpoint.Status.RETIRED, status_reason=f"Retired: {reason}."
    )
    # Nothing of it runs any more: its mirrored hosts stop costing.
    sync_instances(endpoint=endpoint, state=None, actor=actor)
    record_event(
        kind="endpoint.retired",
        actor=actor,
        message=f"SageMaker endpoint {endpoint.name} retired ({reason}); nothing of it bills.",
        endpoint=endpoint,
    )


def discard_failed(*, name: str, actor: str) -> None:
    """Delete what a failed rollout created and left Failed: a dedicated endpoint (with its
    config and model) or an inference component (with its model and alarm)."""
    endpoint = Endpoint.objects.filter(name=name, backend=Endpoint.Backend.SAGEMAKER).first()
    if endpoint is not None:
        if endpoint.mode == Endpoint.Mode.DEDICATED:
            _retire_endpoint(
                backend=endpoint_backend(), endpoint=endpoint, actor=actor, reason="it failed"
            )
        return
    backend = endpoint_backend()
    state = backend.describe_component(name)
    if state is None or state.status != "Failed":
        return
    deleted = backend.remove_component(name, delay_s=deploy.WAIT_DELAY_S)
    deleted += [
        ("alarm", alarm)
        for alarm in scaling.retire_component_policies(backend=backend, component=name)
    ]
    if backend.delete_model(state.model_name):
        deleted.append(("model", state.model_name))
    for what, resource in deleted:
        record_deletion(what=what, name=resource, actor=actor, reason="its rollout failed")


def finish_retiring(*, endpoint: Endpoint, actor: str) -> None:
    """Finish an endpoint's retirement that a crash interrupted (deleting what is left)."""
    _retire_endpoint(
        backend=endpoint_backend(), endpoint=endpoint, actor=actor, reason="finishing retirement"
    )


def retire_endpoint_if_empty(*, endpoint: Endpoint, actor: str) -> bool:
    """Delete a shared endpoint no wanted placement is left on (per policy); True if it went."""
    if settings.TENANTML_SAGEMAKER_EMPTY_ENDPOINT_POLICY != "delete":
        return False
    with transaction.atomic():
        locked = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        if locked.status in (Endpoint.Status.RETIRING, Endpoint.Status.RETIRED):
            return False
        wanted = Placement.objects.filter(endpoint=locked).exclude(
            desired_state=Placement.DesiredState.UNLOADED
        )
        # A rollout that is placing a version here right now has no placement yet.
        rolling_out = Deployment.objects.filter(
            status=Deployment.Status.ROLLING_OUT, mode=locked.mode, backend=locked.backend
        )
        if wanted.exists() or rolling_out.exists():
            return False
        Endpoint.objects.filter(pk=locked.pk).update(status=Endpoint.Status.RETIRING)
    _retire_endpoint(
        backend=endpoint_backend(), endpoint=endpoint, actor=actor, reason="no model left on it"
    )
    return True


def retire_unwanted(*, endpoint: Endpoint, actor: str) -> list[str]:
    """Finish retiring placements marked unwanted whose resources may still exist (a crash
    between the mark and the deletion); the errors met, one line each."""
    pending = Placement.objects.filter(
        endpoint=endpoint, desired_state=Placement.DesiredState.UNLOADED
    ).exclude(actual_state=Placement.ActualState.UNLOADED)
    errors = []
    for placement in pending:
        try:
            retire_placement(placement=placement, actor=actor, reason="no longer wanted")
        except DomainError as exc:
            errors.append(f"{placement}: {exc.message}")
    return errors


def expire_rollback_copies(*, endpoint: Endpoint, actor: str, now=None) -> list[int]:
    """Retire the rollback version's resources once ``SAGEMAKER_ROLLBACK_WINDOW_MINUTES`` have
    passed since its deployment switched (a rollback after that redeploys it)."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.TENANTML_SAGEMAKER_ROLLBACK_WINDOW_MINUTES)
    expired = Placement.objects.filter(
        endpoint=endpoint,
        version__model__deployment__previous_version_id=F("version_id"),
        version__model__deployment__live_since__lte=cutoff,
    ).exclude(desired_state=Placement.DesiredState.UNLOADED)
    retired = []
    for placement in expired.select_related("version"):
        Placement.objects.filter(pk=placement.pk).mark_unwanted()
        retire_placement(
            placement=placement,
            actor=actor,
            reason=(
                f"rollback window of {settings.TENANTML_SAGEMAKER_ROLLBACK_WINDOW_MINUTES} "
                "minutes passed"
            ),
        )
        retired.append(placement.pk)
    return retired
