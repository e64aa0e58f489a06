"""Sharing one machine's memory between its local instances: never more than the machine has,
split by the catalog's host memory, operators' budgets kept where they fit and only lowered."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from deployments.placement.budgets import (
    FLOOR_MB,
    TRITON_BASELINE_MB,
    LocalInstance,
    MachineMemory,
    plan_budgets,
    platform_memory_mb,
)

GIB = 1024


def laptop(total_gib: int = 8, *, cgroup_gib: int | None = None, platform_mb: int = 0):
    return MachineMemory(
        total_mb=total_gib * GIB,
        cgroup_limit_mb=cgroup_gib * GIB if cgroup_gib is not None else None,
        platform_mb=platform_mb,
    )


def local(key: int, *, weight_gib: int = 16, utilization: float = 0.8, operator_mb=None):
    return LocalInstance(
        key=key, weight_mb=weight_gib * GIB, target_utilization=utilization, operator_mb=operator_mb
    )


def test_two_default_instances_on_an_8_gb_machine_share_what_is_left_after_the_platform():
    machine = laptop(8, platform_mb=2048 + 2 * TRITON_BASELINE_MB)

    plan = plan_budgets(machine=machine, instances=[local(1), local(2)])

    assert plan.available_mb == 8 * GIB - 2048 - 256
    assert plan.budgets[1].budget_mb == plan.budgets[2].budget_mb
    # Each gets its half at the endpoint's 80 % target: the rest is headroom for a load's peak.
    assert plan.budgets[1].budget_mb == int(plan.available_mb / 2 * 0.8)
    assert plan.total_mb <= 8 * GIB - 2048


def test_a_cgroup_limit_below_total_memory_is_the_machine():
    plan = plan_budgets(machine=laptop(24, cgroup_gib=6), instances=[local(1, utilization=1.0)])

    assert plan.available_mb == 6 * GIB
    assert plan.budgets[1].budget_mb == 6 * GIB


def test_a_cgroup_limit_above_total_memory_changes_nothing():
    assert laptop(8, cgroup_gib=64).available_mb == 8 * GIB


def test_a_third_instance_shrinks_the_others_and_its_stop_gives_the_memory_back():
    machine = laptop(24, platform_mb=3 * GIB)
    two = plan_budgets(machine=machine, instances=[local(1), local(2)])
    three = plan_budgets(machine=machine, instances=[local(1), local(2), local(3)])

    assert three.budgets[1].budget_mb < two.budgets[1].budget_mb
    assert three.budgets[1].budget_mb == int(21 * GIB / 3 * 0.8)
    assert plan_budgets(machine=machine, instances=[local(1), local(2)]) == two


def test_the_split_follows_the_catalog_host_memory_of_each_type():
    plan = plan_budgets(
        machine=laptop(24),
        instances=[local(1, weight_gib=16, utilization=1), local(2, weight_gib=32, utilization=1)],
    )

    assert plan.budgets[1].budget_mb == 8 * GIB
    assert plan.budgets[2].budget_mb == 16 * GIB


def test_an_operator_total_within_the_machine_replaces_it_without_the_utilization_target():
    plan = plan_budgets(machine=laptop(24), instances=[local(1), local(2)], override_mb=10_000)

    assert plan.pool_mb == 10_000 and not plan.override_capped
    assert [b.budget_mb for b in plan.budgets.values()] == [5_000, 5_000]
    assert plan.notes == []


def test_an_operator_total_above_the_machine_is_capped_and_says_so():
    plan = plan_budgets(machine=laptop(8), instances=[local(1), local(2)], override_mb=64 * GIB)

    assert plan.override_capped
    assert plan.pool_mb == 8 * GIB
    assert plan.total_mb <= 8 * GIB
    assert "capped at 8,192 MB" in plan.notes[0]


def test_an_operator_budget_that_fits_is_kept_and_the_others_share_the_rest():
    plan = plan_budgets(
        machine=laptop(24),
        instances=[local(1, operator_mb=4000), local(2, utilization=1), local(3, utilization=1)],
    )

    assert plan.budgets[1].budget_mb == 4000 and not plan.budgets[1].lowered
    assert plan.budgets[2].budget_mb == plan.budgets[3].budget_mb == (24 * GIB - 4000) // 2


def test_operator_budgets_above_the_machine_are_lowered_in_proportion_leaving_the_others_a_floor():
    plan = plan_budgets(
        machine=laptop(8),
        instances=[
            local(1, operator_mb=8 * GIB),
            local(2, operator_mb=4 * GIB),
            local(3, utilization=1),
        ],
    )

    room = 8 * GIB - FLOOR_MB
    assert plan.budgets[1].budget_mb == room * 2 // 3
    assert plan.budgets[2].budget_mb == room // 3
    assert plan.budgets[1].lowered and plan.budgets[2].lowered
    assert plan.budgets[3].budget_mb >= FLOOR_MB
    assert plan.total_mb <= 8 * GIB
    assert len(plan.notes) == 2


def test_a_machine_with_nothing_left_gives_one_mb_each_and_says_nothing_fits():
    plan = plan_budgets(machine=laptop(2, platform_mb=4 * GIB), instances=[local(1), local(2)])

    assert [b.budget_mb for b in plan.budgets.values()] == [1, 1]
    assert "nothing will fit" in plan.notes[-1]


def test_the_platform_counts_its_measured_processes_but_never_less_than_the_reserve():
    assert platform_memory_mb(processes_mb=500, reserve_mb=2048, triton_baselines_mb=[]) == 2048
    assert platform_memory_mb(processes_mb=3000, reserve_mb=2048, triton_baselines_mb=[]) == 3000
    assert (
        platform_memory_mb(processes_mb=0, reserve_mb=1000, triton_baselines_mb=[60, None])
        == 1000 + 60 + TRITON_BASELINE_MB
    )


instance_lists = st.lists(
    st.builds(
        LocalInstance,
        key=st.integers(),
        weight_mb=st.integers(min_value=1, max_value=2_000_000),
        target_utilization=st.floats(min_value=0.05, max_value=1.0),
        operator_mb=st.none() | st.integers(min_value=1, max_value=10_000_000),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda instance: instance.key,
)


@given(
    instances=instance_lists,
    total_mb=st.integers(min_value=1, max_value=4_000_000),
    cgroup_mb=st.none() | st.integers(min_value=1, max_value=4_000_000),
    platform_mb=st.integers(min_value=0, max_value=100_000),
    override_mb=st.none() | st.integers(min_value=1, max_value=10_000_000),
)
def test_budgets_never_exceed_the_machine_nor_an_operators_ask(
    instances, total_mb, cgroup_mb, platform_mb, override_mb
):
    machine = MachineMemory(total_mb=total_mb, cgroup_limit_mb=cgroup_mb, platform_mb=platform_mb)

    plan = plan_budgets(machine=machine, instances=instances, override_mb=override_mb)

    assert set(plan.budgets) == {instance.key for instance in instances}
    assert all(budget.budget_mb >= 1 for budget in plan.budgets.values())
    # Within the machine, except the 1 MB each a budget must be when nothing is left.
    assert plan.total_mb <= max(machine.available_mb, len(instances))
    if override_mb is not None:
        assert plan.total_mb <= max(override_mb, len(instances))
    for instance in instances:
        if instance.operator_mb is not None:
            assert plan.budgets[instance.key].budget_mb <= instance.operator_mb


def test_the_budget_arithmetic_imports_no_django():
    code = (
        "import sys, deployments.placement.budgets; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'models_registry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"
