"""The improved packer, the lower bounds and the rebalance figures."""

from __future__ import annotations

import itertools
import math
import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.placement import packing
from deployments.placement.bounds import plan_lower_bound
from deployments.placement.packing import continuous_bound, improve, martello_toth_l2
from deployments.placement.rebalance import plan_rebalance, rebalance_saving
from deployments.placement.solver import InstanceSpec, ModelSpec, PlacementPolicy, solve
from tests.deployments.placement.test_solver import (
    CATALOG,
    GPU_CATALOG,
    busy_model_specs,
    busy_policies,
    check_resources,
    solve_or_refuse,
)

FAST = settings(max_examples=40, deadline=None)
# One bin of 1,000 MB per instance, nothing but memory counts: textbook bin packing.
THOUSAND = InstanceSpec("test.thousand", 0, 0, 1000, 1, 1.0)
PLAIN = PlacementPolicy(
    target_utilization=1.0,
    max_models_per_instance=10**6,
    size_ratio_limit=1000.0,
    requests_per_hour_per_instance=None,
)


def triplets(count: int, seed: int) -> list[int]:
    """Falkenauer's construction: every bin of the optimum holds three items filling it."""
    rng = random.Random(seed)
    sizes = []
    for _ in range(count // 3):
        first = rng.randint(380, 490)
        second = rng.randint(250, 1000 - first - 250)
        sizes += [first, second, 1000 - first - second]
    return sizes


def first_fit_decreasing_only():
    """The solver with its improvement switched off: plain first fit decreasing."""
    return mock.patch.object(packing, "IMPROVE_MAX_ITEMS", 0)


def optimum_by_enumeration(sizes: list[int], capacity: int) -> int:
    """The fewest bins, by trying every assignment (tiny inputs only)."""
    for bins in range(1, len(sizes) + 1):
        for assignment in itertools.product(range(bins), repeat=len(sizes)):
            loads = [0] * bins
            for size, target in zip(sizes, assignment, strict=True):
                loads[target] += size
            if max(loads) <= capacity:
                return bins
    return len(sizes)


def test_l2_counts_items_over_half_a_bin_that_the_continuous_bound_pools():
    # Three items of 600: 1,800 MB fits two bins by volume, but no two share one.
    assert continuous_bound([600, 600, 600], 1000) == 2
    assert martello_toth_l2([600, 600, 600], 1000) == 3
    # Items of 400 beside them: each 600 leaves 400, so three 400s fit into their bins.
    assert martello_toth_l2([600, 600, 600, 400, 400, 400], 1000) == 3
    assert martello_toth_l2([600, 600, 600, 400, 400, 400, 400], 1000) == 4


@FAST
@given(sizes=st.lists(st.integers(1, 100), min_size=1, max_size=6), capacity=st.integers(100, 160))
def test_the_bounds_never_exceed_the_optimum(sizes, capacity):
    optimum = optimum_by_enumeration(sizes, capacity)
    assert continuous_bound(sizes, capacity) <= martello_toth_l2(sizes, capacity) <= optimum


def test_sixty_triplets_are_packed_in_the_optimal_twenty_instances():
    models = [
        ModelSpec(f"m{index:03d}", "embedding", float(size))
        for index, size in enumerate(triplets(60, seed=1))
    ]
    with first_fit_decreasing_only():
        plain = solve(models=models, instance_types=[THOUSAND], policy=PLAIN)
    plan = solve(models=models, instance_types=[THOUSAND], policy=PLAIN)
    assert len(plain.endpoints[0].instances) > 20
    assert len(plan.endpoints[0].instances) == 20
    assert all(len(i.models) == 3 for i in plan.endpoints[0].instances)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hundred_and_twenty_triplets_are_packed_perfectly(seed):
    """41 bins where the optimum has 40 is 2.5 % more: only the optimum is within 2 %."""
    sizes = sorted((float(s) for s in triplets(120, seed)), reverse=True)
    owners = list(range(len(sizes)))

    found = improve(sizes, owners, 1000.0, 10**6, upper=len(sizes), lower=40)

    assert found is not None and len(found) == 40
    assert sorted(i for b in found for i in b) == owners
    assert all(sum(sizes[i] for i in b) == 1000 for b in found)


def test_a_perfect_packing_keeps_copies_of_one_model_apart_and_needs_whole_bins():
    # 600 + 400 twice: the two 400s are copies of one model, so each 600 takes one of them.
    sizes, owners = [600.0, 600.0, 400.0, 400.0], [0, 1, 2, 2]
    found = packing.perfect_packing(sizes, owners, 1000.0, 3, bins=2, nodes=1000)
    assert found is not None
    assert sorted(sorted(owners[i] for i in b) for b in found) == [[0, 2], [1, 2]]
    # A 600 whose only fillers are copies of its own model: no perfect packing.
    assert packing.perfect_packing(sizes, [0, 1, 0, 0], 1000.0, 3, bins=2, nodes=1000) is None
    # Not a whole number of full bins: not searched at all.
    assert packing.perfect_packing([600.0, 300.0], [0, 1], 1000.0, 3, bins=1, nodes=1000) is None


@FAST
@given(
    splits=st.lists(
        st.lists(st.integers(1, 60), min_size=1, max_size=3).filter(lambda cuts: sum(cuts) < 100),
        min_size=1,
        max_size=8,
    ),
    order=st.randoms(use_true_random=False),
)
def test_a_perfect_packing_fills_every_bin_exactly_with_each_item_once(splits, order):
    # Bins of 100 cut into pieces: a perfect packing exists, and at most 32 pieces are few
    # enough for the search to finish, so it must find one.
    sizes = [float(size) for cuts in splits for size in [*cuts, 100 - sum(cuts)]]
    order.shuffle(sizes)
    sizes.sort(reverse=True)
    owners = list(range(len(sizes)))

    found = packing.perfect_packing(sizes, owners, 100.0, 4, bins=len(splits), nodes=200_000)

    assert found is not None
    assert sorted(i for b in found for i in b) == owners
    assert all(sum(sizes[i] for i in b) == 100 and len(b) <= 4 for b in found)


@pytest.mark.parametrize("count", [249, 1002])
def test_larger_triplet_fleets_come_within_two_percent_of_the_optimum(count):
    sizes = sorted((float(s) for s in triplets(count, seed=3)), reverse=True)
    owners = list(range(len(sizes)))
    found = improve(sizes, owners, 1000.0, 10**6, upper=len(sizes), lower=count // 3)
    assert found is not None
    assert sorted(i for b in found for i in b) == owners
    assert all(sum(sizes[i] for i in b) <= 1000 + 1e-6 for b in found)
    assert len(found) <= 1.02 * (count // 3)


@FAST
@given(
    sizes=st.lists(st.sampled_from([120.0, 250.0, 260.0, 333.0, 410.0, 499.0, 501.0]), max_size=40),
    owners_of=st.lists(st.integers(0, 30), min_size=40, max_size=40),
    cap=st.integers(2, 6),
)
def test_improved_bins_hold_every_item_once_within_capacity_cap_and_owner_rules(
    sizes, owners_of, cap
):
    sizes = sorted(sizes, reverse=True)
    owners = owners_of[: len(sizes)]
    # Copies of one model: the same owner, never in one bin.
    upper = len(sizes)
    found = improve(sizes, owners, 1000.0, cap, upper=upper + 1, lower=0)
    if found is None:
        return
    assert sorted(i for b in found for i in b) == list(range(len(sizes)))
    for held in found:
        assert sum(sizes[i] for i in held) <= 1000 * (1 + 1e-9)
        assert len(held) <= cap
        assert len({owners[i] for i in held}) == len(held)
    again = improve(sizes, owners, 1000.0, cap, upper=upper + 1, lower=0)
    assert again == found


@FAST
@given(models=busy_model_specs, policy=busy_policies)
def test_the_solver_is_never_worse_than_first_fit_decreasing_and_respects_every_budget(
    models, policy
):
    plan = solve_or_refuse(models, GPU_CATALOG, policy)
    if plan is None:
        return
    with first_fit_decreasing_only():
        plain = solve(models=models, instance_types=GPU_CATALOG, policy=policy)
    assert plan.usd_per_hour <= plain.usd_per_hour + 1e-9
    check_resources(plan, models, policy)
    bound = plan_lower_bound(models=models, instance_types=GPU_CATALOG, policy=policy)
    assert bound.vector_usd_per_hour <= bound.usd_per_hour <= plan.usd_per_hour + 1e-6


def test_the_plan_bound_is_per_endpoint_so_a_few_llms_pay_a_whole_instance():
    llms = [ModelSpec(f"llm-{i}", "llm", 20000, gpu_memory_mb=20000) for i in range(3)]
    small = [ModelSpec(f"m{i}", "embedding", 100) for i in range(50)]
    p4d = InstanceSpec("ml.p4d.24xlarge", 8, 40960, 1179648, 96, 37.688)
    bound = plan_lower_bound(models=llms + small, instance_types=[*CATALOG, p4d])
    by_kind = {e.kind: e for e in bound.endpoints}
    assert by_kind["llm"].instances == 1
    assert by_kind["embedding"].instances == 1
    plan = solve(models=llms + small, instance_types=[*CATALOG, p4d], policy=PlacementPolicy())
    assert plan.usd_per_hour == pytest.approx(bound.usd_per_hour)


def test_a_drifted_fleet_reports_the_instances_and_dollars_a_rebalance_saves():
    # Placed one at a time in arrival order, then two thirds removed: instances stay half empty.
    sizes = triplets(60, seed=2)
    models = [ModelSpec(f"m{i:03d}", "embedding", float(s)) for i, s in enumerate(sizes)]
    plan = solve(models=models[:1], instance_types=[THOUSAND], policy=PLAIN)
    for count in range(2, len(models) + 1):
        plan = solve(models=models[:count], instance_types=[THOUSAND], policy=PLAIN, existing=plan)
    remaining = models[::3]
    current = solve(models=remaining, instance_types=[THOUSAND], policy=PLAIN, existing=plan)
    fresh, saving = plan_rebalance(
        models=remaining,
        instance_types=[THOUSAND],
        current=current,
        policy=PLAIN,
        min_saving_usd_month=100.0,
    )
    assert saving.instances_saved == len(current.endpoints[0].instances) - len(
        fresh.endpoints[0].instances
    )
    assert saving.instances_saved > 0
    assert saving.usd_per_month_saved == pytest.approx(saving.instances_saved * 730.0)
    assert saving.worth_doing
    assert 0 < saving.models_moved <= len(remaining)
    assert set(saving.moved) <= {m.key for m in remaining}
    # A threshold above the saving skips it.
    too_high = rebalance_saving(
        current=current, fresh=fresh, min_saving_usd_month=saving.usd_per_month_saved + 1
    )
    assert not too_high.worth_doing


def test_a_plan_compared_with_itself_saves_nothing_and_moves_nothing():
    models = [ModelSpec(f"m{i}", "embedding", 300.0 + i) for i in range(30)]
    plan = solve(models=models, instance_types=[THOUSAND], policy=PLAIN)
    saving = rebalance_saving(current=plan, fresh=plan, min_saving_usd_month=0.0)
    assert saving.instances_saved == 0
    assert saving.models_moved == 0
    assert not saving.worth_doing
    assert math.isclose(saving.usd_per_month_saved, 0.0, abs_tol=1e-9)
