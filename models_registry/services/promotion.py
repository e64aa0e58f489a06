"""Writes for promotion: the quality gate applied to a new version, promoting a version to active
and rolling a model back to the version promoted before."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.events import record_event
from models_registry.exceptions import (
    InvalidVersion,
    NothingToRollBack,
    QualityGateFailed,
)
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion, TenantModel
from models_registry.quality_gate import GateDecision, evaluate_gate
from models_registry.signals import version_activated


def _gate_for(*, model: TenantModel, candidate: ModelVersion) -> GateDecision:
    kind = get_kind(model.kind)
    active = model.active_version
    return evaluate_gate(
        candidate_metrics=candidate.metrics if isinstance(candidate.metrics, dict) else {},
        active_metrics=(
            (active.metrics if isinstance(active.metrics, dict) else {}) if active else None
        ),
        primary_metric=getattr(kind, "primary_metric", "") or "macro_f1",
        tolerance=float(settings.TENANTML_QUALITY_GATE_TOLERANCE),
        higher_is_better=getattr(kind, "higher_is_better", True),
        guarded_metrics=getattr(kind, "guarded_metrics", ()),
        baseline_metric=getattr(kind, "baseline_metric", ""),
    )


def apply_quality_gate(
    *,
    version: ModelVersion,
    actor: str,
    on_decided: Callable[[GateDecision], None] | None = None,
) -> GateDecision:
    """Promote a freshly trained version if it passes the gate, else hold it with the reason.

    ``on_decided`` is called with the decision inside the transaction that records it, so what
    a caller writes about the decision (a training job's outcome) commits with it or not at all.
    """
    with transaction.atomic():
        version, decision, activated = _decide_promotion(version=version, actor=actor, force=False)
        if on_decided is not None:
            on_decided(decision)
    if activated:
        _announce_activation(version=version, actor=actor)
    return decision


def _announce_activation(*, version: ModelVersion, actor: str) -> None:
    """Tell listeners (the deployments app) that ``version`` is now its model's active one."""
    version_activated.send(sender=ModelVersion, version=version, actor=actor)


def promote_version(*, version: ModelVersion, actor: str, force: bool = False) -> ModelVersion:
    """Make a ready version the model's active one; the quality gate applies unless ``force``.

    A version the gate holds back keeps the reason in ``status_reason`` and the call raises
    QualityGateFailed (409). Promoting the active version again changes nothing.
    """
    with transaction.atomic():
        version, decision, activated = _decide_promotion(version=version, actor=actor, force=force)
    if not decision.promote and not force:
        raise QualityGateFailed(version.status_reason, field="version")
    if activated:
        _announce_activation(version=version, actor=actor)
    return version


def _decide_promotion(
    *, version: ModelVersion, actor: str, force: bool
) -> tuple[ModelVersion, GateDecision, bool]:
    """Put a ready version to the gate under the model's row lock and record the outcome (call
    inside a transaction); the version, the gate's decision and whether the version became
    active. The active version again is a promotion that changes nothing."""
    model = (
        TenantModel.objects.select_for_update(of=("self",))
        .select_related("tenant", "active_version")
        .get(pk=version.model_id)
    )
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.status != ModelVersion.Status.READY:
        raise InvalidVersion(
            f"{version} is {version.status}; only a ready version can be promoted.",
            field="version",
        )
    if model.active_version_id == version.pk:
        return version, GateDecision(True, f"{version} is already the active version."), False
    decision = _gate_for(model=model, candidate=version)
    previous = model.active_version
    if not decision.promote and not force:
        version.status_reason = f"Held back by the quality gate: {decision.reason}"
        version.save(update_fields=["status_reason", "updated_at"])
        record_event(
            kind="version.held",
            severity="warning",
            message=f"{version} not promoted: {decision.reason}",
            actor=actor,
            version=version,
            data={"active": previous.number if previous else None},
        )
        return version, decision, False
    version.promoted_at = timezone.now()
    version.status_reason = (
        f"Promoted by {actor} over the quality gate: {decision.reason}"
        if not decision.promote
        else ""
    )
    version.save(update_fields=["promoted_at", "status_reason", "updated_at"])
    model.active_version = version
    model.save(update_fields=["active_version", "updated_at"])
    record_event(
        kind="version.promoted",
        message=(
            f"{version} promoted"
            + (f" (replacing v{previous.number})" if previous else "")
            + (" by force" if not decision.promote else "")
            + f": {decision.reason}"
        ),
        actor=actor,
        version=version,
        data={
            "previous": previous.number if previous else None,
            "forced": not decision.promote,
        },
    )
    return version, decision, True


def rollback_model(*, model: TenantModel, actor: str) -> ModelVersion:
    """Re-activate the version promoted before the active one; 409 when there is none.

    The version rolled back from loses its ``promoted_at`` (its reason says why), so a later
    rollback never lands on a version that was rolled back once.
    """
    with transaction.atomic():
        model = (
            TenantModel.objects.select_for_update(of=("self",))
            .select_related("tenant", "active_version")
            .get(pk=model.pk)
        )
        current = model.active_version
        if current is None:
            raise NothingToRollBack(f"{model} has no active version to roll back.")
        candidates = model.versions.filter(
            status=ModelVersion.Status.READY, promoted_at__isnull=False
        ).exclude(pk=current.pk)
        if current.promoted_at is not None:
            candidates = candidates.filter(promoted_at__lt=current.promoted_at)
        previous = candidates.order_by("-promoted_at", "-number").first()
        if previous is None:
            raise NothingToRollBack(
                f"{model} has no earlier promoted version that is still ready to serve."
            )
        ModelVersion.objects.filter(pk=current.pk).update(
            promoted_at=None,
            status_reason=f"Rolled back by {actor} on {timezone.now():%Y-%m-%d %H:%M} UTC; "
            f"v{previous.number} re-activated.",
        )
        model.active_version = previous
        model.save(update_fields=["active_version", "updated_at"])
        record_event(
            kind="model.rolled_back",
            message=f"{model} rolled back from v{current.number} to v{previous.number}.",
            actor=actor,
            version=previous,
            data={"from": current.number, "to": previous.number},
        )
    _announce_activation(version=previous, actor=actor)
    return previous
