"""The quality gate: whether a newly trained version may replace the active one. Pure, no ORM."""

from __future__ import annotations

import math
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
) -> GateDecision:
    """Promote unless the candidate's primary metric is worse than the active's by > tolerance.

    ``active_metrics`` is None when the model has no active version. A candidate without the
    metric is held back (nothing shows it is good enough); an active version without it cannot
    be compared against, so the candidate goes ahead.
    """
    candidate = _number((candidate_metrics or {}).get(primary_metric))
    if active_metrics is None:
        return GateDecision(True, "No active version: the first trained version is promoted.")
    if candidate is None:
        return GateDecision(
            False, f"The candidate reports no {primary_metric}, so it cannot pass the gate."
        )
    active = _number(active_metrics.get(primary_metric))
    if active is None:
        return GateDecision(
            True, f"The active version reports no {primary_metric}; nothing to compare against."
        )
    improvement = candidate - active if higher_is_better else active - candidate
    # A hair of float slack so "exactly at the tolerance" passes however it was computed.
    if improvement >= -tolerance - 1e-12:
        return GateDecision(
            True,
            f"{primary_metric} {candidate:.4f} vs the active version's {active:.4f} "
            f"(tolerance {tolerance:g}).",
        )
    return GateDecision(
        False,
        f"{primary_metric} {candidate:.4f} is worse than the active version's {active:.4f} by "
        f"{-improvement:.4f}, more than the tolerance {tolerance:g}.",
    )
