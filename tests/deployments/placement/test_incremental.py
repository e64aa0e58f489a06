"""Adding models to a placed plan in place: nothing moves, every budget holds, cost adds up."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import DomainError
from deployments.placement.incremental import add_models
from deployments.placement.solver import ModelSpec, PlacementPolicy, solve
from tests.deployments.placement.test_solver import (
    ALL_TYPES,
    GPU_CATALOG,
    M5_XLARGE,
    busy_model_specs,
    check_resources,
    solve_or_refuse,
)

FAST = settings(max_examples=40, deadline=None)
policies = st.builds(
    PlacementPolicy,
    target_utilization=st.sampled_from([0.5, 0.8, 1.0]),
    max_models_per_instance=st.integers(1, 20),
    size_ratio_limit=st.sampled_from([2.0, 1000.0]),
    mode=st.sampled_from(["mme", "dedicated"]),
    requests_per_hour_per_instance=st.sampled_from([None, 13_500, 50_000]),
)
new_models = st.lists(
    st.builds(
        ModelSpec,
        key=st.text("xyz", min_size=1, max_size=4).map(lambda k: f"new-{k}"),
        kind=st.sampled_from(["embedding", "llm", "autocomplete"]),
        host_memory_mb=st.integers(1, 3000),
        gpu_memory_mb=st.sampled_from([0, 500, 3000]),
        requests_per_hour=st.sampled_from([0, 100, 9000, 40000]),
        replicas=st.integers(1, 3),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda m: m.key,
)


@FAST
@given(models=busy_model_specs, added=new_models, policy=policies)
def test_added_models_move_nothing_and_keep_every_budget(models, added, policy):
    before = solve_or_refuse(models, GPU_CATALOG, policy)
    if before is None:
        return
    try:
        after = add_models(plan=before, models=added, instance_types=GPU_CATALOG, policy=policy)
    except DomainError:  # a new model no type holds: refused by name, as solve does
        return
    for model in models:
        assert after.assignments[model.key] == before.assignments[model.key]
    check_resources(after, [*models, *added], policy)
    cost = math.fsum(
        ALL_TYPES[e.instance_type].usd_per_hour * len(e.instances) for e in after.endpoints
    )
    assert after.usd_per_hour == pytest.approx(cost)


def test_a_new_model_fills_free_room_on_the_kinds_endpoint_first():
    models = [ModelSpec(f"m{i}", "embedding", 1000) for i in range(5)]
    before = solve(models=models, instance_types=[M5_XLARGE], policy=PlacementPolicy())
    after = add_models(
        plan=before,
        models=[ModelSpec("new", "embedding", 1000, replicas=2)],
        instance_types=[M5_XLARGE],
    )
    # One copy joins the instance with room, the other opens the endpoint's next instance.
    assert after.assignments["new"] == ["embedding-mme-0000", "embedding-mme-0001"]
    assert after.usd_per_hour == pytest.approx(2 * M5_XLARGE.usd_per_hour)
    assert after.dedicated_usd_per_hour == pytest.approx(7 * M5_XLARGE.usd_per_hour)


def test_a_model_already_placed_is_refused_by_field():
    models = [ModelSpec("m0", "embedding", 100)]
    plan = solve(models=models, instance_types=[M5_XLARGE], policy=PlacementPolicy())
    with pytest.raises(DomainError) as caught:
        add_models(plan=plan, models=models, instance_types=[M5_XLARGE])
    assert caught.value.field == "models"


def test_a_new_model_opens_an_instance_when_host_memory_or_a_gpu_is_full():
    models = [ModelSpec(f"m{i}", "embedding", 6000) for i in range(2)]
    before = solve(models=models, instance_types=[M5_XLARGE], policy=PlacementPolicy())
    after = add_models(
        plan=before, models=[ModelSpec("new", "embedding", 2000)], instance_types=[M5_XLARGE]
    )
    # 12,000 of 13,107 MB held: 2,000 more would pass the 80 % target.
    assert after.assignments["new"] == ["embedding-mme-0001"]
    g4dn = ALL_TYPES["ml.g4dn.xlarge"]
    gpu_models = [ModelSpec(f"g{i}", "embedding", 100, gpu_memory_mb=6000) for i in range(2)]
    before = solve(models=gpu_models, instance_types=[g4dn], policy=PlacementPolicy())
    after = add_models(
        plan=before,
        models=[ModelSpec("new", "embedding", 100, gpu_memory_mb=2000)],
        instance_types=[g4dn],
    )
    assert after.assignments["new"] == ["embedding-mme-0001"]
    assert after.endpoints[0].instances[1].gpu_used_mb == (2000,)
