"""Memory budgets of local instances: this machine's memory shared by its running instances.

When a local instance starts or stops, ``share_machine_memory`` reads the machine
(``deployments.backends.local.machine``), splits what it has between every running local instance
(``deployments.placement.budgets.plan_budgets``), stores each changed ``memory_budget_mb`` with an
``instance.memory_budget`` Event, and trims an instance whose new budget is below what it holds
(its least valuable unpinned models are evicted, as after any lowered budget).

Operator budgets. The Event records the budget the platform set and the operator's budget it kept
(``data["budget_mb"]``, ``data["operator_mb"]``). An instance whose ``memory_budget_mb`` differs
from the last budget the platform set was edited by an operator (in the admin): from then on it
is operator-set, kept as asked where it fits, and only ever lowered to what the machine has —
and given back in full when room returns. A budget passed to ``start_local_instance`` is
operator-set from the start. Instances started before budgets were shared (no Event) are sized
from the machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from config.errors import DomainError
from config.events import record_event
from deployments.backends.local.machine import MachineReading, read_machine
from deployments.models import Endpoint, Event, Instance
from deployments.placement.budgets import (
    BudgetPlan,
    InstanceBudget,
    LocalInstance,
    MachineMemory,
    plan_budgets,
    platform_memory_mb,
)

logger = logging.getLogger(__name__)

BUDGET_EVENT = "instance.memory_budget"
# The key of an instance not created yet, in a plan made for it (primary keys start at 1).
NEW_INSTANCE = 0


def running_local_instances():
    """Every local instance that holds (or is about to hold) a Triton process on this machine."""
    return Instance.objects.filter(endpoint__backend=Endpoint.Backend.LOCAL).exclude(
        status=Instance.Status.STOPPED
    )


def machine_memory(reading: MachineReading, *, triton_baselines_mb: list[int | None]):
    """The pure plan's view of a reading, with the platform's reserve applied."""
    return MachineMemory(
        total_mb=reading.total_mb,
        cgroup_limit_mb=reading.cgroup_limit_mb,
        platform_mb=platform_memory_mb(
            processes_mb=sum(reading.processes_mb.values()),
            reserve_mb=settings.TENANTML_LOCAL_MEMORY_RESERVE_MB,
            triton_baselines_mb=triton_baselines_mb,
        ),
    )


def override_mb() -> int | None:
    """The operator's total for the machine's local instances (``LOCAL_MEMORY_BUDGET_MB``)."""
    return settings.TENANTML_LOCAL_MEMORY_BUDGET_MB or None


def last_budgets(instance_ids: list[int]) -> dict[int, dict]:
    """The data of each instance's last ``instance.memory_budget`` Event."""
    latest: dict[int, dict] = {}
    rows = (
        Event.objects.filter(kind=BUDGET_EVENT, instance_id__in=instance_ids)
        .order_by("instance_id", "-id")
        .values_list("instance_id", "data")
    )
    for instance_id, data in rows:
        latest.setdefault(instance_id, data)
    return latest


def operator_budget_mb(instance: Instance, last: dict | None) -> int | None:
    """What an operator set for this instance, or None where the machine sizes it."""
    if last is None:
        return None
    if instance.memory_budget_mb != last.get("budget_mb"):
        return instance.memory_budget_mb  # edited since the platform last set it
    return last.get("operator_mb")


@dataclass(frozen=True)
class StartingBudget:
    """The budget an instance about to start gets, with what it was worked out from."""

    budget: InstanceBudget
    plan: BudgetPlan
    reading: MachineReading
    machine: MachineMemory

    @property
    def budget_mb(self) -> int:
        return self.budget.budget_mb


def budget_for_new_instance(*, endpoint: Endpoint, operator_mb: int | None) -> StartingBudget:
    """The budget an instance about to start on ``endpoint`` gets beside the running ones."""
    running = list(running_local_instances().select_related("endpoint__instance_type"))
    reading = read_machine(triton_pids=[i.pid for i in running if i.pid])
    lasts = last_budgets([i.pk for i in running])
    claims = [_claim(i, operator_budget_mb(i, lasts.get(i.pk))) for i in running]
    claims.append(
        LocalInstance(
            key=NEW_INSTANCE,
            weight_mb=endpoint.instance_type.host_memory_mb,
            target_utilization=float(endpoint.target_memory_utilization),
            operator_mb=operator_mb,
        )
    )
    machine = machine_memory(reading, triton_baselines_mb=[*_baselines(running, reading), None])
    plan = plan_budgets(machine=machine, instances=claims, override_mb=override_mb())
    return StartingBudget(
        budget=plan.budgets[NEW_INSTANCE], plan=plan, reading=reading, machine=machine
    )


def record_starting_budget(*, instance: Instance, starting: StartingBudget, actor: str) -> None:
    """Record the budget a new instance starts with (call inside the transaction creating it)."""
    _record_change(
        instance,
        None,
        starting.budget,
        starting.plan,
        starting.reading,
        starting.machine,
        actor,
        "starting",
    )


def share_machine_memory(
    *, actor: str, reason: str, trim: Callable[..., object] | None = None
) -> BudgetPlan:
    """Share this machine's memory between its running local instances again (after one
    started or stopped): budgets stored with an Event each that changed, and each instance whose
    budget shrank passed to ``trim`` (the serving runtime's ``trim_to_budget``, which evicts
    what no longer fits). Returns the plan."""
    running_ids = list(running_local_instances().order_by("pk").values_list("pk", "pid"))
    reading = read_machine(triton_pids=[pid for _, pid in running_ids if pid])
    shrunk: list[Instance] = []
    with transaction.atomic():
        rows = list(
            running_local_instances()
            .select_for_update(of=("self",))
            .select_related("endpoint__instance_type")
            .order_by("pk")
        )
        lasts = last_budgets([row.pk for row in rows])
        claims = [_claim(row, operator_budget_mb(row, lasts.get(row.pk))) for row in rows]
        machine = machine_memory(reading, triton_baselines_mb=_baselines(rows, reading))
        plan = plan_budgets(machine=machine, instances=claims, override_mb=override_mb())
        for row in rows:
            budget = plan.budgets[row.pk]
            last = lasts.get(row.pk)
            unchanged = (
                last is not None
                and budget.budget_mb == row.memory_budget_mb
                and budget.operator_mb == last.get("operator_mb")
            )
            if unchanged:
                continue
            previous = row.memory_budget_mb
            Instance.objects.filter(pk=row.pk).update(memory_budget_mb=budget.budget_mb)
            row.memory_budget_mb = budget.budget_mb
            _record_change(row, previous, budget, plan, reading, machine, actor, reason)
            if budget.budget_mb < previous:
                shrunk.append(row)
        if plan.notes:
            record_event(
                kind="instance.memory_budget_capped",
                severity="warning",
                actor=actor,
                message=" ".join(plan.notes),
                data={"available_mb": plan.available_mb, "override_mb": plan.override_mb},
            )
    for instance in shrunk if trim is not None else ():
        _trim(instance, trim=trim, actor=actor)
    return plan


def _claim(instance: Instance, operator_mb: int | None) -> LocalInstance:
    endpoint = instance.endpoint
    return LocalInstance(
        key=instance.pk,
        weight_mb=endpoint.instance_type.host_memory_mb,
        target_utilization=float(endpoint.target_memory_utilization),
        operator_mb=operator_mb,
    )


def _baselines(instances: list[Instance], reading: MachineReading) -> list[int | None]:
    return [reading.triton_baselines_mb.get(i.pid) if i.pid else None for i in instances]


def _record_change(
    row: Instance,
    previous: int | None,
    budget: InstanceBudget,
    plan: BudgetPlan,
    reading: MachineReading,
    machine: MachineMemory,
    actor: str,
    reason: str,
) -> None:
    limit = (
        f"cgroup limit {reading.cgroup_limit_mb:,} MB"
        if reading.cgroup_limit_mb is not None
        else "no cgroup limit"
    )
    source = (
        f"LOCAL_MEMORY_BUDGET_MB {plan.override_mb:,} MB"
        + (" (capped)" if plan.override_capped else "")
        if plan.override_mb is not None
        else "the machine"
    )
    operator = ""
    if budget.operator_mb is not None:
        operator = (
            f" The operator's {budget.operator_mb:,} MB do not fit; lowered."
            if budget.lowered
            else f" The operator's {budget.operator_mb:,} MB kept."
        )
    head = (
        f"{row} starts with a {budget.budget_mb:,} MB memory budget"
        if previous is None
        else f"{row} memory budget {previous:,} → {budget.budget_mb:,} MB ({reason})"
    )
    count = len(plan.budgets)
    record_event(
        kind=BUDGET_EVENT,
        severity="warning" if budget.lowered else "info",
        actor=actor,
        message=(
            f"{head}: {plan.pool_mb:,} MB for models from {source} — {machine.total_mb:,} MB "
            f"total, {limit}, {machine.platform_mb:,} MB for the platform's own processes — "
            f"shared by {count} local instance{'s' if count != 1 else ''}.{operator}"
        ),
        endpoint=row.endpoint,
        instance=row,
        data={
            "budget_mb": budget.budget_mb,
            "previous_mb": previous,
            "operator_mb": budget.operator_mb,
            "pool_mb": plan.pool_mb,
            "available_mb": plan.available_mb,
            "override_mb": plan.override_mb,
            "total_mb": machine.total_mb,
            "cgroup_limit_mb": reading.cgroup_limit_mb,
            "cgroup_limit_file": reading.cgroup_limit_file,
            "platform_mb": machine.platform_mb,
            "processes_mb": reading.processes_mb,
            "instances": len(plan.budgets),
        },
    )


def _trim(instance: Instance, *, trim: Callable[..., object], actor: str) -> None:
    """Evict what no longer fits a lowered budget; an instance that cannot be reached now is
    trimmed by the reconciler's next pass, which evicts over-budget instances too."""
    if instance.status not in Instance.ROUTABLE_STATES or not instance.port:
        return
    try:
        trim(instance=instance, actor=actor)
    except DomainError as exc:
        logger.warning("Trim of %s to its new budget failed: %s", instance, exc.message)
