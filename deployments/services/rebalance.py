"""Rebalancing the local fleet: the copies a fresh packing moves are moved, then the instances
it no longer needs are stopped (``deployments.selectors.rebalance`` says which).

Each move follows the rollout rules (``ServingBackend.move_copy``): the copy is loaded on its
new instance and answers its kind's warm-up request, the routes switch to it, and only then is
the old copy unloaded; a move that fails leaves the old copy serving. An instance is stopped
only once nothing wanted is left on it (``drain_instance`` moves any straggler first). The plan
is read afresh at the start of every run, so a run that a crash stopped half way is finished by
the next one, and a copy that changed since the plan was read (unwanted, or its target gone) is
left where it is.

It runs when asked (the API, the admin, the dashboard) or, hourly, when the saving reaches
``REBALANCE_MIN_SAVING_USD_MONTH`` (never with the setting unset). Each run writes a
``rebalance.completed`` Event with its figures and records itself in the ``rebalance``
``BackgroundPass`` row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.errors import DomainError
from config.events import record_event
from config.queue import send_task_on_commit
from deployments.backends import backend_for
from deployments.models import Instance, Placement
from deployments.passes import REBALANCE, recorded_pass
from deployments.selectors.rebalance import RebalanceReport, rebalance_report

ACTOR = "rebalance"


@dataclass
class RebalanceOutcome:
    """What a run planned and did."""

    planned: dict = field(default_factory=dict)
    applied: bool = False
    moved: int = 0
    left: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "applied": self.applied,
            "moved": self.moved,
            "left_in_place": self.left,
            "failed": self.failed,
            "instances_stopped": self.stopped,
            "plan": self.planned,
        }


def request_rebalance(*, actor: str, endpoint_id: int | None = None) -> RebalanceReport:
    """The plan as it stands, with its run sent to a worker (``rebalance_fleet``)."""
    report = rebalance_report(endpoint_id=endpoint_id)
    record_event(
        kind="rebalance.requested",
        actor=actor,
        message=(
            f"Rebalance requested: {report.copies_moved} copies to move, "
            f"{report.instances_saved} instances to stop, about "
            f"${report.usd_per_month_saved:,.2f} a month."
        ),
        data={"endpoint_id": endpoint_id},
    )
    send_task_on_commit("deployments.tasks.rebalance_fleet", actor, endpoint_id)
    return report


def rebalance_fleet(
    *, actor: str = ACTOR, endpoint_id: int | None = None, only_if_worth_it: bool = False
) -> RebalanceOutcome:
    """Apply the rebalance of every local multi-model endpoint (or one); with
    ``only_if_worth_it``, only when its saving reaches the operator's threshold."""
    outcome = RebalanceOutcome()
    with recorded_pass(REBALANCE) as record:
        report = rebalance_report(endpoint_id=endpoint_id)
        outcome.planned = report.as_dict()
        try:
            if not only_if_worth_it or report.worth_doing:
                _apply(report, outcome=outcome, actor=actor)
        finally:
            record.items = outcome.moved
            record.errors = len(outcome.failed)
            record.summary = {k: v for k, v in outcome.as_dict().items() if k != "plan"}
    return outcome


def _apply(report: RebalanceReport, *, outcome: RebalanceOutcome, actor: str) -> None:
    outcome.applied = True
    saved = 0.0
    for plan in report.endpoints:
        for move in plan.moves:
            placement = (
                Placement.objects.select_related("version__model__tenant", "endpoint", "instance")
                .filter(pk=move.placement_id, instance_id=move.source_id)
                .exclude(desired_state=Placement.DesiredState.UNLOADED)
                .first()
            )
            target = Instance.objects.filter(
                pk=move.target_id, status__in=Instance.ROUTABLE_STATES
            ).first()
            if placement is None or target is None:
                outcome.left += 1  # changed since the plan was read
                continue
            try:
                backend_for(placement.endpoint).move_copy(
                    placement=placement,
                    instance=target,
                    actor=actor,
                    reason=f"rebalanced onto {target}",
                )
            except DomainError as exc:
                outcome.failed.append(f"{move.model} v{move.version}: {exc.message}")
                continue
            outcome.moved += 1
        for instance_id, name in plan.retire:
            instance = Instance.objects.select_related("endpoint").filter(pk=instance_id).first()
            if instance is None or instance.status == Instance.Status.STOPPED:
                continue
            try:
                backend_for(instance.endpoint).drain_instance(instance=instance, actor=actor)
            except DomainError as exc:
                outcome.failed.append(f"{name}: {exc.message}")
                continue
            outcome.stopped.append(name)
            saved += plan.usd_per_month_saved / len(plan.retire)
    record_event(
        kind="rebalance.completed",
        severity="warning" if outcome.failed else "info",
        actor=actor,
        message=(
            f"Rebalance: {outcome.moved} copies moved, {len(outcome.stopped)} instances stopped "
            f"(about ${saved:,.2f} a month saved), {outcome.left} left in place as changed "
            f"since the plan, {len(outcome.failed)} failed."
        ),
        data=outcome.as_dict(),
    )
