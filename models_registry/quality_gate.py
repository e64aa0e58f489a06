"""The quality gate: whether a newly trained version may replace the active one. Pure, no ORM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def evaluate_gate(
    *,
    candidate_metrics: dict,
    active_metrics: dict | None,
    primary_metric: str,
    tolerance: float,
    higher_is_better: bool = True,
    guarded_metrics: Sequence[str] = (),
    baseline_metric: str = "",
) -> GateDecision:
    """Promote unless the candidate's primary metric is worse than the active's by > tolerance,
    or one of ``guarded_metrics`` (higher is better) is, or it does not beat its baseline.

    ``active_metrics`` is None when the model has no active version. A candidate without the
    primary metric is held back (nothing shows it is good enough); an active version without it
    cannot be compared against, so the candidate goes ahead. A guarded metric counts only where
    the active version reports it: then a candidate that does not is held back too (it cannot
    show it kept it), and one that does may lose at most the tolerance. With a
    ``baseline_metric`` (a simple model's score on the same validation data, reported by the
    candidate), the candidate's primary metric must be strictly better than it, first version
    included; a candidate that reports no baseline is held back.
    """
    candidate_metrics = candidate_metrics or {}
    candidate = _number(candidate_metrics.get(primary_metric))
    baseline_reasons = []
    if baseline_metric:
        beaten = _beats_baseline(
            candidate_metrics, primary_metric, baseline_metric, higher_is_better
        )
        if not beaten.promote:
            return beaten
        baseline_reasons.append(beaten.reason)
    if active_metrics is None:
        return GateDecision(
            True,
            " ".join(
                ["No active version: the first trained version is promoted.", *baseline_reasons]
            ),
        )
    if candidate is None:
        return GateDecision(
            False, f"The candidate reports no {primary_metric}, so it cannot pass the gate."
        )
    active = _number(active_metrics.get(primary_metric))
    if active is None:
        primary = GateDecision(
            True, f"The active version reports no {primary_metric}; nothing to compare against."
        )
    else:
        primary = _compare(primary_metric, candidate, active, tolerance, higher_is_better)
    if not primary.promote:
        return primary
    reasons = [*baseline_reasons, primary.reason]
    for name in guarded_metrics:
        if name == primary_metric or _number(active_metrics.get(name)) is None:
            continue
        guarded_candidate = _number(candidate_metrics.get(name))
        if guarded_candidate is None:
            return GateDecision(
                False,
                f"The active version reports {name} and the candidate does not, so it cannot "
                "show it kept it.",
            )
        decision = _compare(name, guarded_candidate, _number(active_metrics[name]), tolerance, True)
        if not decision.promote:
            return decision
        reasons.append(decision.reason)
    return GateDecision(True, " ".join(reasons))


def _beats_baseline(
    metrics: dict, primary_metric: str, baseline_metric: str, higher_is_better: bool
) -> GateDecision:
    """Whether the candidate's primary metric is strictly better than its own baseline's."""
    candidate = _number(metrics.get(primary_metric))
    baseline = _number(metrics.get(baseline_metric))
    if candidate is None or baseline is None:
        missing = primary_metric if candidate is None else baseline_metric
        return GateDecision(
            False, f"The candidate reports no {missing}, so it cannot show it beats its baseline."
        )
    better = candidate > baseline if higher_is_better else candidate < baseline
    if not better:
        return GateDecision(
            False,
            f"{primary_metric} {candidate:.4f} does not beat the baseline's {baseline_metric} "
            f"{baseline:.4f}.",
        )
    return GateDecision(
        True, f"{primary_metric} {candidate:.4f} beats the baseline's {baseline:.4f}."
    )


def _compare(
    name: str, candidate: float, active: float, tolerance: float, higher_is_better: bool
) -> GateDecision:
    """Whether ``candidate`` is at most ``tolerance`` worse than ``active`` on metric ``name``."""
    improvement = candidate - active if higher_is_better else active - candidate
    # A hair of float slack so "exactly at the tolerance" passes however it was computed.
    if improvement >= -tolerance - 1e-12:
        return GateDecision(
            True,
            f"{name} {candidate:.4f} vs the active version's {active:.4f} "
            f"(tolerance {tolerance:g}).",
        )
    return GateDecision(
        False,
        f"{name} {candidate:.4f} is worse than the active version's {active:.4f} by "
        f"{-improvement:.4f}, more than the tolerance {tolerance:g}.",
    )
