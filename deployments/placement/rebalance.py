"""Whether a rebalance is worth doing: the current plan against a fresh solve of the same models.

Incremental solves never move a placed model, so a fleet that grew and shrank drifts from what a
fresh packing would open. ``rebalance_saving`` says what re-placing everything would save
(instances, USD an hour and a month) and what it costs in moves: each fresh instance is matched
to the current instance of its endpoint and type it shares most models with (greedily, largest
overlap first, ties by name; ``match_instances``), and a copy moves when its fresh instance is
not matched to one that holds it now. ``worth_doing`` compares the monthly saving with the
operator's threshold. Pure: plans in, figures out; the moves themselves follow the rollout
rules of whoever applies the fresh plan (``deployments.services.rebalance``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deployments.placement.solver import (
    InstanceSpec,
    ModelSpec,
    PlacementPlan,
    PlacementPolicy,
    solve,
)

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class RebalanceSaving:
    """What a fresh solve saves over the current plan, and the copies it moves."""

    current_instances: int
    fresh_instances: int
    instances_saved: int
    current_usd_per_hour: float
    fresh_usd_per_hour: float
    usd_per_hour_saved: float
    usd_per_month_saved: float
    models_moved: int
    copies_moved: int
    moved: tuple[str, ...]
    worth_doing: bool


def _instances(plan: PlacementPlan) -> dict[tuple[str, str], dict[str, set[str]]]:
    """(endpoint, type) → instance name → the models it holds."""
    held: dict[tuple[str, str], dict[str, set[str]]] = {}
    for endpoint in plan.endpoints:
        group = held.setdefault((endpoint.name, endpoint.instance_type), {})
        for instance in endpoint.instances:
            group[instance.name] = set(instance.models)
    return held


def match_instances(current: dict[str, set[str]], fresh: dict[str, set[str]]) -> dict[str, str]:
    """Which current instance each fresh one becomes (fresh name → current name): the pairs
    sharing most models first (ties by name), then the fresh instances left over take the
    current ones left over, in name order, while there are any. A copy moves when the instance
    its fresh instance becomes does not hold it now."""
    pairs = sorted(
        (-len(models & current[old]), fresh_name, old)
        for fresh_name, models in fresh.items()
        for old in current
        if models & current[old]
    )
    matched: dict[str, str] = {}
    taken: set[str] = set()
    for _, fresh_name, old in pairs:
        if fresh_name not in matched and old not in taken:
            matched[fresh_name] = old
            taken.add(old)
    spare = iter(sorted(set(current) - taken))
    for fresh_name in sorted(set(fresh) - set(matched)):
        old = next(spare, None)
        if old is None:
            break
        matched[fresh_name] = old
    return matched


def rebalance_saving(
    *,
    current: PlacementPlan,
    fresh: PlacementPlan,
    min_saving_usd_month: float = 0.0,
    hours_per_month: float = HOURS_PER_MONTH,
) -> RebalanceSaving:
    """Compare ``current`` with ``fresh`` (a solve of the same models with rebalance=True)."""
    now = _instances(current)
    moved: set[str] = set()
    copies_moved = 0
    for key, fresh_group in _instances(fresh).items():
        now_group = now.get(key, {})
        matched = match_instances(now_group, fresh_group)
        for fresh_name, models in sorted(fresh_group.items()):
            kept = now_group.get(matched.get(fresh_name, ""), set())
            for model in sorted(models - kept):
                moved.add(model)
                copies_moved += 1
    current_count = sum(len(e.instances) for e in current.endpoints)
    fresh_count = sum(len(e.instances) for e in fresh.endpoints)
    saved_hourly = current.usd_per_hour - fresh.usd_per_hour
    saved_monthly = saved_hourly * hours_per_month
    return RebalanceSaving(
        current_instances=current_count,
        fresh_instances=fresh_count,
        instances_saved=current_count - fresh_count,
        current_usd_per_hour=current.usd_per_hour,
        fresh_usd_per_hour=fresh.usd_per_hour,
        usd_per_hour_saved=saved_hourly,
        usd_per_month_saved=saved_monthly,
        models_moved=len(moved),
        copies_moved=copies_moved,
        moved=tuple(sorted(moved)),
        worth_doing=saved_monthly > 0 and saved_monthly >= min_saving_usd_month,
    )


def plan_rebalance(
    *,
    models: Sequence[ModelSpec],
    instance_types: Sequence[InstanceSpec],
    current: PlacementPlan,
    policy: PlacementPolicy | None = None,
    min_saving_usd_month: float = 0.0,
) -> tuple[PlacementPlan, RebalanceSaving]:
    """A fresh plan of ``models`` and what adopting it instead of ``current`` saves."""
    fresh = solve(
        models=models,
        instance_types=instance_types,
        policy=policy,
        existing=current,
        rebalance=True,
    )
    return fresh, rebalance_saving(
        current=current, fresh=fresh, min_saving_usd_month=min_saving_usd_month
    )
