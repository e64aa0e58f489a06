"""Canary and shadow rollouts and their live gate.

A canary or shadow rollout loads the new version beside the live one, as any rollout does
(``rollouts.run_rollout`` loads and probes it), but then makes it the deployment's
``candidate_version`` instead of switching: a canary answers ``candidate_share`` of the live
requests, a shadow gets a copy of each and its answers are discarded (``proxy.mirroring``). The
live gate (``evaluate_candidates``, a minute pass) reads the two versions' minute rows since the
candidate started and, once it has enough requests or minutes, promotes the candidate (it
becomes the live version; the old one is kept for rollback) or aborts it (it is unloaded; the live
version never stopped serving). Everything is in the deployment row and the minute rows, so a
worker lost mid-way loses nothing: the next pass decides again from the same figures.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import Conflict, DomainError
from config.events import record_event
from deployments.models import Deployment, Placement
from deployments.selectors.candidates import Comparison, comparison_for
from deployments.services import rollouts
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion, TenantModel

logger = logging.getLogger(__name__)

GATE_ACTOR = "live-gate"
# Thresholds a deployment may override, with their settings.
GATE_SETTINGS = {
    "min_requests": "TENANTML_CANARY_MIN_REQUESTS",
    "min_minutes": "TENANTML_CANARY_MIN_MINUTES",
    "max_error_rate": "TENANTML_CANARY_MAX_ERROR_RATE",
    "max_p99_ratio": "TENANTML_CANARY_MAX_P99_RATIO",
    "max_p99_ms": "TENANTML_CANARY_MAX_P99_MS",
    "min_agreement": "TENANTML_CANARY_MIN_AGREEMENT",
}


@dataclass(frozen=True)
class GateDecision:
    """What the live gate makes of a comparison: whether it has seen enough, and if so whether
    the candidate is promoted, with the reasons it is not."""

    ready: bool
    promote: bool
    reasons: tuple[str, ...] = ()


def gate_thresholds(deployment: Deployment) -> dict[str, float]:
    """The live gate's thresholds for a deployment: the settings, with its own overrides."""
    thresholds = {
        name: float(getattr(settings, setting)) for name, setting in GATE_SETTINGS.items()
    }
    thresholds.update(
        {k: float(v) for k, v in (deployment.gate_overrides or {}).items() if k in GATE_SETTINGS}
    )
    return thresholds


def decide(comparison: Comparison, thresholds: dict[str, float]) -> GateDecision:
    """The live gate on one comparison (pure): wait, promote or abort."""
    candidate, live = comparison.candidate, comparison.live
    enough_requests = candidate.requests >= thresholds["min_requests"]
    enough_minutes = comparison.minutes >= thresholds["min_minutes"] and candidate.requests > 0
    if not (enough_requests or enough_minutes):
        return GateDecision(ready=False, promote=False)
    reasons = []
    if candidate.error_rate > thresholds["max_error_rate"]:
        reasons.append(
            f"error rate {candidate.error_rate:.1%} is over {thresholds['max_error_rate']:.1%}"
        )
    if candidate.p99_ms is not None:
        allowed_ms = max(
            thresholds["max_p99_ms"], (live.p99_ms or 0.0) * thresholds["max_p99_ratio"]
        )
        if candidate.p99_ms > allowed_ms:
            reasons.append(f"p99 latency {candidate.p99_ms:g} ms is over {allowed_ms:g} ms")
    if candidate.agreement is not None and candidate.agreement < thresholds["min_agreement"]:
        reasons.append(
            f"agreement with v{live.version} {candidate.agreement:.1%} is under "
            f"{thresholds['min_agreement']:.1%}"
        )
    return GateDecision(ready=True, promote=not reasons, reasons=tuple(reasons))


# --- Requests --------------------------------------------------------------------------------


def start_candidate(
    *,
    model: TenantModel,
    version: ModelVersion,
    strategy: str,
    actor: str,
    share: float | None = None,
    gate: dict | None = None,
) -> Deployment:
    """Load ``version`` beside the live one as a canary (``share`` of requests) or a shadow
    (a copy of each request); the live gate decides later. Returns the deployment."""
    if strategy not in Deployment.Strategy.values:
        raise DomainError(
            f"strategy must be one of {', '.join(Deployment.Strategy.values)}.", field="strategy"
        )
    if share is not None and not 0 < share < 1:
        raise DomainError("share must be between 0 and 1 (e.g. 0.1 for 10 %).", field="share")
    unknown = sorted(set(gate or {}) - set(GATE_SETTINGS))
    if unknown:
        raise DomainError(
            f"gate takes {', '.join(GATE_SETTINGS)}; it has unknown keys.", field="gate"
        )
    if get_kind(model.kind).generation is not None:
        raise DomainError(
            f"{model.kind} models stream generated text; canary and shadow rollouts compare "
            "whole answers. Deploy the version directly.",
            field="strategy",
        )
    if version.model_id != model.pk:
        raise DomainError(f"{version} is not a version of {model}.", field="version")
    if version.status != ModelVersion.Status.READY or not version.package_uri:
        raise Conflict(
            f"{version} is {version.status}; only a packaged, ready version can be rolled out.",
            field="version",
        )
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(model=model).first()
        if deployment is None or deployment.live_version_id is None:
            raise Conflict(
                f"{model} has no live version to compare with; deploy it first.", field="version"
            )
        if deployment.live_version_id == version.pk:
            raise Conflict(f"{version} is already the live version.", field="version")
        if deployment.candidate_strategy or deployment.target_version_id is not None:
            raise Conflict(
                f"{model} has a rollout under way; promote or abort it first.", field="version"
            )
        deployment.target_version = version
        deployment.candidate_version = None
        deployment.candidate_strategy = strategy
        if share is not None:
            deployment.candidate_share = share
        deployment.gate_overrides = {k: float(v) for k, v in (gate or {}).items()}
        deployment.status = Deployment.Status.ROLLING_OUT
        deployment.status_reason = f"Queued: v{version.number} as a {strategy}."
        deployment.attempts = 0
        deployment.rollout_started_at = timezone.now()
        deployment.save()
        record_event(
            kind="canary.requested",
            actor=actor,
            message=f"{model}: load v{version.number} as a {strategy} beside "
            f"v{deployment.live_version.number}.",
            tenant=model.tenant,
            version=version,
            data={"strategy": strategy, "share": deployment.candidate_share},
        )
        transaction.on_commit(lambda: rollouts.queue_rollout(deployment.pk))
    return deployment


def set_rollout_strategy(
    *, deployment: Deployment, strategy: str, actor: str, share: float | None = None
) -> Deployment:
    """How versions the registry promotes from now on reach this deployment's traffic: at
    once (``immediate``), or as a canary or shadow the live gate decides on."""
    if strategy not in Deployment.RolloutStrategy.values:
        raise DomainError(
            f"strategy must be one of {', '.join(Deployment.RolloutStrategy.values)}.",
            field="strategy",
        )
    if share is not None and not 0 < share < 1:
        raise DomainError("share must be between 0 and 1 (e.g. 0.1 for 10 %).", field="share")
    model = deployment.model
    if strategy != Deployment.RolloutStrategy.IMMEDIATE and get_kind(model.kind).generation:
        raise DomainError(
            f"{model.kind} models stream generated text; their versions roll out immediately.",
            field="strategy",
        )
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        locked.rollout_strategy = strategy
        if share is not None:
            locked.candidate_share = share
        locked.save(update_fields=["rollout_strategy", "candidate_share", "updated_at"])
        record_event(
            kind="deployment.strategy_changed",
            actor=actor,
            message=f"{model}: promoted versions now roll out {strategy}"
            + (f" ({locked.candidate_share:.0%} of requests)." if strategy == "canary" else "."),
            tenant=model.tenant,
            data={"strategy": strategy, "share": locked.candidate_share},
        )
    return locked


def start_for_promotion(
    *, deployment: Deployment, version: ModelVersion, actor: str
) -> Deployment | None:
    """A version the registry promoted, on a deployment that rolls out as a canary or shadow:
    start one (ending one of an older version first); None where the version goes live
    directly instead (nothing live to compare with, or a direct rollout under way)."""
    if deployment.live_version_id is None or (
        deployment.target_version_id is not None and not deployment.candidate_strategy
    ):
        return None
    if deployment.candidate_strategy:
        abort_candidate(
            model=version.model, actor=actor, reason=f"v{version.number} was promoted since"
        )
    return start_candidate(
        model=version.model,
        version=version,
        strategy=deployment.rollout_strategy,
        actor=actor,
    )


def on_version_promoted(*, version: ModelVersion, actor: str) -> Deployment | None:
    """A promoted (or rolled-back-to) version rolls out to the model's existing deployment."""
    deployment = Deployment.objects.filter(model_id=version.model_id).first()
    if deployment is None or deployment.status == Deployment.Status.RETIRED:
        return None
    if deployment.rollout_strategy != Deployment.RolloutStrategy.IMMEDIATE and version.pk not in (
        deployment.live_version_id,
        deployment.previous_version_id,
    ):
        # The deployment tries promoted versions on live traffic first (a rollback to the
        # version kept for it is immediate).
        started = start_for_promotion(deployment=deployment, version=version, actor=actor)
        if started is not None:
            return started
    deployment, _ = rollouts.request_deployment(
        model=version.model, version=version, actor=actor, mode=deployment.mode
    )
    return deployment


# --- Decisions -------------------------------------------------------------------------------


def promote_candidate(*, model: TenantModel, actor: str, figures: dict | None = None) -> Deployment:
    """Make the candidate the live version (the old live one is kept for rollback)."""
    with transaction.atomic():
        deployment = _locked_with_candidate(model)
        candidate, previous = deployment.candidate_version, deployment.live_version
        if candidate is None:
            raise Conflict(
                f"v{deployment.target_version.number} of {model} is still loading; promote "
                "it once it answers.",
                field="version",
            )
        figures = figures or comparison_for(deployment).as_dict()
        deployment.previous_version = previous
        deployment.live_version = candidate
        deployment.live_since = timezone.now()
        _clear_candidate(deployment)
        record_event(
            kind="canary.promoted",
            actor=actor,
            message=f"{model}: v{candidate.number} promoted over v{previous.number} "
            f"after its {figures['strategy']} rollout.",
            tenant=model.tenant,
            version=candidate,
            endpoint=deployment.endpoint,
            data={"previous": previous.number, **figures},
        )
    rollouts.routing_changed(model_id=model.pk)
    rollouts.retire_old_versions(deployment_id=deployment.pk, actor=actor)
    if TenantModel.objects.filter(pk=model.pk).values_list("active_version_id", flat=True)[0] != (
        candidate.pk
    ):
        from models_registry.services.promotion import promote_version

        # The registry follows what serves; the live gate has just judged it on real traffic.
        promote_version(version=candidate, actor=actor, force=True)
    return Deployment.objects.get(pk=deployment.pk)


def abort_candidate(
    *, model: TenantModel, actor: str, reason: str = "", figures: dict | None = None
) -> Deployment:
    """Stop the canary or shadow rollout: the live version keeps every request, the new one is
    unloaded."""
    with transaction.atomic():
        deployment = _locked_with_candidate(model)
        version = deployment.candidate_version or deployment.target_version
        figures = figures or (
            comparison_for(deployment).as_dict() if deployment.candidate_version else {}
        )
        strategy = deployment.candidate_strategy
        deployment.target_version = None
        deployment.status = Deployment.Status.LIVE
        _clear_candidate(deployment)
        record_event(
            kind="canary.aborted",
            severity="warning",
            actor=actor,
            message=f"{model}: the {strategy} of v{version.number} was aborted"
            + (f" ({reason})" if reason else "")
            + f"; v{deployment.live_version.number} keeps serving.",
            tenant=model.tenant,
            version=version,
            endpoint=deployment.endpoint,
            data={"reason": reason, "live": deployment.live_version.number, **figures},
        )
    rollouts.routing_changed(model_id=model.pk)
    if TenantModel.objects.filter(pk=model.pk, active_version_id=version.pk).exists():
        from models_registry.exceptions import NothingToRollBack
        from models_registry.services.promotion import rollback_model

        # The registry promoted the version this rollout tried; it follows what serves again.
        with contextlib.suppress(NothingToRollBack):
            rollback_model(model=model, actor=actor)
    if version.pk not in (deployment.live_version_id, deployment.previous_version_id):
        for placement in (
            Placement.objects.filter(version=version)
            .exclude(desired_state=Placement.DesiredState.UNLOADED)
            .select_related("version__model", "instance", "endpoint")
        ):
            rollouts.set_unloaded(placement=placement, actor=actor, reason="its canary was aborted")
    return Deployment.objects.get(pk=deployment.pk)


def evaluate_candidates(*, actor: str = GATE_ACTOR) -> list[dict]:
    """The live gate's pass: decide every canary and shadow that has seen enough traffic;
    returns what it decided."""
    decided = []
    for deployment in Deployment.objects.filter(candidate_version__isnull=False).select_related(
        "model__tenant", "live_version", "candidate_version"
    ):
        comparison = comparison_for(deployment)
        thresholds = gate_thresholds(deployment)
        decision = decide(comparison, thresholds)
        if not decision.ready:
            continue
        figures = {**comparison.as_dict(), "thresholds": thresholds}
        try:
            if decision.promote:
                promote_candidate(model=deployment.model, actor=actor, figures=figures)
            else:
                abort_candidate(
                    model=deployment.model,
                    actor=actor,
                    reason="; ".join(decision.reasons),
                    figures=figures,
                )
        except Conflict:
            continue  # decided by hand, or replaced, since this pass read it
        decided.append(
            {
                "model": str(deployment.model),
                "version": deployment.candidate_version.number,
                "promoted": decision.promote,
                "reasons": list(decision.reasons),
            }
        )
    return decided


def _locked_with_candidate(model: TenantModel) -> Deployment:
    deployment = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("live_version", "candidate_version", "target_version", "endpoint")
        .filter(model=model)
        .first()
    )
    if deployment is None or not deployment.candidate_strategy:
        raise Conflict(f"{model} has no canary or shadow rollout under way.")
    return deployment


def _clear_candidate(deployment: Deployment) -> None:
    deployment.candidate_version = None
    deployment.candidate_strategy = ""
    deployment.candidate_started_at = None
    deployment.gate_overrides = {}
    deployment.save()
