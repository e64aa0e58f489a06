"""How the memory of one machine is shared by its local instances: pure arithmetic, no ORM.

Every local instance is a Triton process on the same machine, so their budgets come out of one
pool: the memory the platform may use (the cgroup limit, or else total memory) minus what the
platform's own processes hold (web server, Celery workers, beat, trainings, and each Triton
process's own baseline without models). ``plan_budgets`` splits that pool:

- An operator's total (``override_mb``, the ``LOCAL_MEMORY_BUDGET_MB`` setting) replaces the
  pool, but never exceeds it: an override above what the machine has is capped, and the plan
  says so.
- An instance with an operator-set budget (an admin edit, or a budget given at start) keeps it
  when it fits; when the operators' budgets together do not fit, each is lowered in proportion,
  never raised, leaving every other instance at least ``FLOOR_MB``.
- The rest is split between the other instances in proportion to their type's catalog host
  memory (the weight an operator already controls in the catalog: a ``local-large`` row beside
  ``local`` gets twice the share), times the endpoint's target memory utilization when the pool
  is the machine's own (headroom for a load's peak above its resident size). With the one
  shipped ``local`` type the split is equal.

The sum of the budgets never exceeds the pool, except on a machine with less than one MB per
instance left, where each instance still gets the 1 MB the database requires (and nothing fits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

# Each automatically sized instance keeps at least this much when operators' budgets crowd it.
FLOOR_MB = 256
# A Triton process without models, when its own memory cannot be read (not started yet):
# tritonserver 2.51 with the python backend holds 40-60 MB RSS on this project's machines.
TRITON_BASELINE_MB = 128


@dataclass(frozen=True)
class MachineMemory:
    """What one machine offers its local instances, in MB."""

    total_mb: int
    # The cgroup's memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None: none.
    cgroup_limit_mb: int | None
    # The platform's own processes, Triton baselines included (see ``platform_memory_mb``).
    platform_mb: int

    @property
    def limit_mb(self) -> int:
        """The memory the platform's processes may use together: the cgroup limit if lower."""
        if self.cgroup_limit_mb is None:
            return self.total_mb
        return min(self.total_mb, self.cgroup_limit_mb)

    @property
    def available_mb(self) -> int:
        """What is left for models once the platform's own processes are counted."""
        return max(0, self.limit_mb - self.platform_mb)


@dataclass(frozen=True)
class LocalInstance:
    """One running local instance, as the split sees it."""

    key: int
    # The catalog host memory of its instance type: its weight in the split.
    weight_mb: int
    target_utilization: float = 1.0
    # What an operator set for this instance; None: sized from the machine.
    operator_mb: int | None = None


@dataclass(frozen=True)
class InstanceBudget:
    budget_mb: int
    operator_mb: int | None = None

    @property
    def lowered(self) -> bool:
        """Whether an operator asked for more than the machine could give this instance."""
        return self.operator_mb is not None and self.budget_mb < self.operator_mb


@dataclass(frozen=True)
class BudgetPlan:
    budgets: dict[int, InstanceBudget]
    # The MB shared out: the machine's available memory, or the override when it fits.
    pool_mb: int
    available_mb: int
    override_mb: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def override_capped(self) -> bool:
        """Whether the operator's total was more than the machine has."""
        return self.override_mb is not None and self.override_mb > self.available_mb

    @property
    def total_mb(self) -> int:
        return sum(budget.budget_mb for budget in self.budgets.values())


def platform_memory_mb(
    *,
    processes_mb: int,
    reserve_mb: int,
    triton_baselines_mb: list[int | None],
) -> int:
    """Memory the platform's own processes hold: the web server, workers, beat and trainings
    measured, but never less than ``reserve_mb`` (a worker just started holds less than it will,
    and before ``manage.py up`` starts them they are not running yet), plus each Triton
    process's baseline (``TRITON_BASELINE_MB`` where it could not be read)."""
    tritons = sum(TRITON_BASELINE_MB if mb is None else mb for mb in triton_baselines_mb)
    return max(processes_mb, reserve_mb) + tritons


def plan_budgets(
    *,
    machine: MachineMemory,
    instances: list[LocalInstance],
    override_mb: int | None = None,
) -> BudgetPlan:
    """Each running local instance's memory budget on one machine (see the module docstring)."""
    available = machine.available_mb
    notes: list[str] = []
    if override_mb is not None and override_mb > available:
        notes.append(
            f"LOCAL_MEMORY_BUDGET_MB asks for {override_mb:,} MB but the machine has "
            f"{available:,} MB for models; capped at {available:,} MB."
        )
    pool = available if override_mb is None else min(override_mb, available)
    if not instances:
        return BudgetPlan(
            budgets={}, pool_mb=pool, available_mb=available, override_mb=override_mb, notes=notes
        )
    operators = [instance for instance in instances if instance.operator_mb is not None]
    automatic = [instance for instance in instances if instance.operator_mb is None]
    granted = _operator_budgets(operators, room_mb=pool - FLOOR_MB * len(automatic))
    rest = max(0, pool - sum(granted.values()))
    total_weight = sum(max(1, instance.weight_mb) for instance in automatic)
    budgets: dict[int, InstanceBudget] = {}
    for instance in operators:
        budgets[instance.key] = InstanceBudget(
            budget_mb=granted[instance.key], operator_mb=instance.operator_mb
        )
        if granted[instance.key] < instance.operator_mb:
            notes.append(
                f"Instance {instance.key}: the operator's {instance.operator_mb:,} MB do not fit "
                f"the machine beside the others; lowered to {granted[instance.key]:,} MB."
            )
    # The endpoint's target utilization applies to a share of the machine, not to a total the
    # operator chose as the budget itself.
    for instance in automatic:
        share = rest * max(1, instance.weight_mb) / total_weight
        if override_mb is None:
            share *= min(1.0, max(0.0, instance.target_utilization))
        budgets[instance.key] = InstanceBudget(budget_mb=max(1, math.floor(share)))
    _trim_rounding(budgets, limit_mb=max(pool, len(instances)))
    if pool < len(instances):
        notes.append(
            f"The machine has {available:,} MB for models across {len(instances)} local "
            "instances: nothing will fit until memory is freed or instances are stopped."
        )
    return BudgetPlan(
        budgets=budgets, pool_mb=pool, available_mb=available, override_mb=override_mb, notes=notes
    )


def _trim_rounding(budgets: dict[int, InstanceBudget], *, limit_mb: int) -> None:
    """Take back, from the largest budgets, what raising shares below 1 MB to 1 MB added (only
    on a machine with a few MB per instance)."""
    excess = sum(budget.budget_mb for budget in budgets.values()) - limit_mb
    for key in sorted(budgets, key=lambda key: -budgets[key].budget_mb):
        if excess <= 0:
            return
        cut = min(excess, budgets[key].budget_mb - 1)
        budgets[key] = replace(budgets[key], budget_mb=budgets[key].budget_mb - cut)
        excess -= cut


def _operator_budgets(operators: list[LocalInstance], *, room_mb: int) -> dict[int, int]:
    """Operators' budgets as asked when they fit in ``room_mb``, else each lowered in proportion
    (rounded down, so the sum stays within the room; at least the 1 MB a budget must be)."""
    asked = sum(instance.operator_mb for instance in operators)
    room = max(0, room_mb)
    if asked <= room:
        return {instance.key: instance.operator_mb for instance in operators}
    return {
        instance.key: max(1, math.floor(instance.operator_mb * room / asked))
        for instance in operators
    }
