"""The placement solver: budgets, replicas, one kind per endpoint, determinism, no moves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.placement import (
    CapacityExceeded,
    InstanceSpec,
    ModelSpec,
    PlacementPolicy,
    budget_mb,
    solve,
)

G4DN_XLARGE = InstanceSpec("ml.g4dn.xlarge", 1, 16384, 16384, 4, 0.7364)
G4DN_2XLARGE = InstanceSpec("ml.g4dn.2xlarge", 1, 16384, 32768, 8, 0.94)
M5_LARGE = InstanceSpec("ml.m5.large", 0, 0, 8192, 2, 0.115)
M5_XLARGE = InstanceSpec("ml.m5.xlarge", 0, 0, 16384, 4, 0.23)
CATALOG = [G4DN_XLARGE, G4DN_2XLARGE, M5_LARGE, M5_XLARGE]

model_specs = st.lists(
    st.builds(
        ModelSpec,
        key=st.text("abcdefgh", min_size=1, max_size=6),
        kind=st.sampled_from(["embedding", "intent-classifier"]),
        host_memory_mb=st.integers(1, 3000),
        gpu_memory_mb=st.sampled_from([0, 0, 100, 1090, 4000]),
        replicas=st.integers(1, 3),
    ),
    max_size=40,
    unique_by=lambda m: m.key,
)
policies = st.builds(
    PlacementPolicy,
    target_utilization=st.sampled_from([0.5, 0.8, 1.0]),
    max_models_per_instance=st.integers(1, 20),
    size_ratio_limit=st.sampled_from([2.0, 4.0, 1000.0]),
)
FAST = settings(max_examples=50, deadline=None)


def check_invariants(plan, models, policy):
    types = {t.name: t for t in CATALOG}
    kinds = {m.key: m.kind for m in models}
    for endpoint in plan.endpoints:
        assert {kinds[k] for i in endpoint.instances for k in i.models} <= {endpoint.kind}
        for instance in endpoint.instances:
            assert instance.used_mb <= budget_mb(types[instance.instance_type], policy) + 1e-6
            assert len(instance.models) <= policy.max_models_per_instance
            assert instance.models
    for model in models:
        where = plan.assignments[model.key]
        assert len(where) == model.replicas
        assert len(set(where)) == model.replicas
    assert set(plan.assignments) == {m.key for m in models}


@FAST
@given(models=model_specs, policy=policies)
def test_every_plan_respects_budgets_replicas_kinds_and_the_cap(models, policy):
    plan = solve(models=models, instance_types=CATALOG, policy=policy)
    check_invariants(plan, models, policy)
    assert plan.usd_per_hour <= plan.dedicated_usd_per_hour + 1e-9


@FAST
@given(models=model_specs, policy=policies)
def test_the_solver_is_deterministic(models, policy):
    first = solve(models=models, instance_types=CATALOG, policy=policy)
    again = solve(models=list(reversed(models)), instance_types=CATALOG[::-1], policy=policy)
    assert first == again


@FAST
@given(models=model_specs, policy=policies, data=st.data())
def test_adding_a_model_moves_no_existing_model(models, policy, data):
    before = solve(models=models, instance_types=CATALOG, policy=policy)
    extra = data.draw(
        st.builds(
            ModelSpec,
            key=st.just("new-model"),
            kind=st.sampled_from(["embedding", "intent-classifier"]),
            host_memory_mb=st.integers(1, 3000),
            gpu_memory_mb=st.sampled_from([0, 100, 1090]),
            replicas=st.integers(1, 3),
        )
    )
    after = solve(models=[*models, extra], instance_types=CATALOG, policy=policy, existing=before)
    for model in models:
        assert after.assignments[model.key] == before.assignments[model.key]
    check_invariants(after, [*models, extra], policy)


@FAST
@given(models=model_specs.filter(lambda ms: len(ms) >= 2), policy=policies)
def test_removing_a_model_moves_no_other_model(models, policy):
    before = solve(models=models, instance_types=CATALOG, policy=policy)
    after = solve(models=models[1:], instance_types=CATALOG, policy=policy, existing=before)
    for model in models[1:]:
        assert after.assignments[model.key] == before.assignments[model.key]
    assert models[0].key not in after.assignments
    check_invariants(after, models[1:], policy)


def test_twelve_forethought_embedding_models_share_a_g4dn_xlarge():
    models = [ModelSpec(f"emb-{i:02d}", "embedding", 900, gpu_memory_mb=1090) for i in range(24)]
    plan = solve(
        models=models, instance_types=[G4DN_XLARGE, G4DN_2XLARGE], policy=PlacementPolicy()
    )
    (endpoint,) = plan.endpoints
    assert endpoint.instance_type == "ml.g4dn.xlarge"
    assert [len(i.models) for i in endpoint.instances] == [12, 12]
    assert plan.usd_per_hour == pytest.approx(2 * 0.7364)
    assert plan.savings == pytest.approx(1 - 2 / 24)


def test_zendesk_thousands_of_small_models_respect_the_500_model_cap():
    models = [ModelSpec(f"macro-{i:04d}", "intent-classifier", 12) for i in range(3000)]
    plan = solve(models=models, instance_types=[M5_XLARGE], policy=PlacementPolicy())
    (endpoint,) = plan.endpoints
    assert len(endpoint.instances) == math.ceil(3000 / 500)
    assert all(len(i.models) == 500 for i in endpoint.instances)
    assert plan.savings >= 0.9


def test_a_model_larger_than_every_type_is_refused_by_name():
    models = [ModelSpec("small", "embedding", 100), ModelSpec("giant", "embedding", 10**6)]
    with pytest.raises(CapacityExceeded, match="giant") as caught:
        solve(models=models, instance_types=CATALOG, policy=PlacementPolicy())
    assert caught.value.status_code == 503


def test_an_outlier_gets_a_dedicated_endpoint_on_the_cheapest_fitting_type():
    models = [ModelSpec(f"m{i}", "embedding", 100) for i in range(10)]
    models.append(ModelSpec("big", "embedding", 12000))
    plan = solve(models=models, instance_types=CATALOG, policy=PlacementPolicy())
    dedicated = [e for e in plan.endpoints if e.mode == "dedicated"]
    assert [e.instances[0].models for e in dedicated] == [("big",)]
    assert dedicated[0].instance_type == "ml.m5.xlarge"


def test_new_models_fill_free_space_before_opening_instances():
    models = [ModelSpec(f"m{i}", "embedding", 1000) for i in range(5)]
    before = solve(models=models, instance_types=[M5_XLARGE], policy=PlacementPolicy())
    after = solve(
        models=[*models, ModelSpec("m5", "embedding", 1000)],
        instance_types=[M5_XLARGE],
        policy=PlacementPolicy(),
        existing=before,
    )
    assert len(after.endpoints[0].instances) == 1
    assert after.assignments["m5"] == before.assignments["m0"]
