"""The placement solver: budgets per GPU, traffic, components, replicas, determinism, no moves."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import DomainError
from deployments.placement.solver import (
    CapacityExceeded,
    InstanceSpec,
    ModelSpec,
    PlacementPolicy,
    accelerators_needed,
    budget_mb,
    gpu_budget_mb,
    host_budget_mb,
    lower_bound_usd_per_hour,
    solve,
    uses_gpu,
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


# --- GPUs, traffic, inference components -----------------------------------------------------

G4DN_12XLARGE = InstanceSpec("ml.g4dn.12xlarge", 4, 16384, 196608, 48, 4.89)
P4D_24XLARGE = InstanceSpec("ml.p4d.24xlarge", 8, 40960, 1179648, 96, 37.688)
TWO_GPU = InstanceSpec("test.two-gpu", 2, 10000, 65536, 8, 1.0)
GPU_CATALOG = [G4DN_XLARGE, G4DN_12XLARGE, TWO_GPU, M5_XLARGE]
ALL_TYPES = {t.name: t for t in [*CATALOG, *GPU_CATALOG, P4D_24XLARGE]}
IC = "inference-component"

busy_model_specs = st.lists(
    st.builds(
        ModelSpec,
        key=st.text("abcdefgh", min_size=1, max_size=6),
        kind=st.sampled_from(["embedding", "llm"]),
        host_memory_mb=st.integers(1, 6000),
        gpu_memory_mb=st.sampled_from([0, 500, 3000, 6000, 12000, 20000]),
        requests_per_hour=st.sampled_from([0, 0, 100, 3000, 9000, 40000]),
        pinned=st.booleans(),
        replicas=st.integers(1, 3),
    ),
    max_size=40,
    unique_by=lambda m: m.key,
)
busy_policies = st.builds(
    PlacementPolicy,
    target_utilization=st.sampled_from([0.5, 0.8, 1.0]),
    max_models_per_instance=st.integers(1, 20),
    size_ratio_limit=st.sampled_from([2.0, 1000.0]),
    mode=st.sampled_from(["mme", IC, "dedicated"]),
    requests_per_hour_per_instance=st.sampled_from([None, 0, 13_500, 50_000]),
)


def solve_or_refuse(models, catalog, policy, **kwargs):
    """Solve, or None when some model fits no type in this mode (the solver says which)."""
    try:
        return solve(models=models, instance_types=catalog, policy=policy, **kwargs)
    except CapacityExceeded:
        return None


def check_resources(plan, models, policy, kept_in_place=()):
    specs = {m.key: m for m in models}
    per_instance = policy.requests_per_hour_per_instance
    for endpoint in plan.endpoints:
        for instance in endpoint.instances:
            kind = ALL_TYPES[instance.instance_type]
            assert instance.host_used_mb <= host_budget_mb(kind, policy) * (1 + 1e-9)
            assert len(instance.models) <= policy.max_models_per_instance
            if endpoint.mode == IC and uses_gpu(kind):
                accelerators = sum(
                    accelerators_needed(specs[k], kind, policy) for k in instance.models
                )
                assert accelerators <= kind.gpu_count
            elif uses_gpu(kind):
                assert len(instance.gpu_models) == kind.gpu_count
                held = sorted(k for gpu in instance.gpu_models for k in gpu)
                assert held == sorted(instance.models)
                for used in instance.gpu_used_mb:
                    assert used <= gpu_budget_mb(kind, policy) * (1 + 1e-9)
            elif (
                endpoint.mode == "mme"
                and per_instance
                and len(instance.models) > 1
                # A model whose traffic grew stays put: its instance may run hot until a rebalance.
                and not set(kept_in_place) & set(instance.models)
            ):
                assert instance.requests_per_hour <= per_instance * (1 + 1e-9)
    for model in models:
        where = plan.assignments[model.key]
        assert len(set(where)) == len(where)
        if policy.mode == IC and not model.pinned and model.requests_per_hour == 0:
            assert where == [] and model.key in plan.scaled_to_zero
        else:
            assert len(where) == model.replicas
            assert model.key not in plan.scaled_to_zero


@FAST
@given(models=busy_model_specs, policy=busy_policies)
def test_no_gpu_host_memory_or_request_budget_is_exceeded_in_any_mode(models, policy):
    plan = solve_or_refuse(models, GPU_CATALOG, policy)
    if plan is not None:
        check_resources(plan, models, policy)
        assert plan.usd_per_hour <= plan.dedicated_usd_per_hour + 1e-9
        again = solve(models=models[::-1], instance_types=GPU_CATALOG[::-1], policy=policy)
        assert again == plan


@FAST
@given(models=busy_model_specs, policy=busy_policies, data=st.data())
def test_a_new_or_waking_model_moves_no_other_model_in_any_mode(models, policy, data):
    before = solve_or_refuse(models, GPU_CATALOG, policy)
    if before is None or not models:
        return
    # A new tenant model, and an idle one that starts getting traffic.
    woken = dataclasses.replace(models[0], requests_per_hour=500)
    extra = data.draw(
        st.builds(
            ModelSpec,
            key=st.just("new-model"),
            kind=st.sampled_from(["embedding", "llm"]),
            host_memory_mb=st.integers(1, 3000),
            gpu_memory_mb=st.sampled_from([0, 500, 3000]),
            requests_per_hour=st.sampled_from([0, 100, 9000]),
            replicas=st.integers(1, 2),
        )
    )
    changed = [woken, *models[1:], extra]
    after = solve_or_refuse(changed, GPU_CATALOG, policy, existing=before)
    if after is None:
        return
    for model in models[1:]:
        assert after.assignments[model.key] == before.assignments[model.key]
    check_resources(after, changed, policy, kept_in_place=[woken.key])
    # A model keeps its GPU too, not just its instance.
    gpu_of = {
        (i.name, k): n
        for p in (before,)
        for e in p.endpoints
        for i in e.instances
        for n, gpu in enumerate(i.gpu_models)
        for k in gpu
    }
    for endpoint in after.endpoints:
        if endpoint.mode != "mme":
            continue
        for instance in endpoint.instances:
            for number, gpu in enumerate(instance.gpu_models):
                for key in gpu:
                    if key != woken.key and (instance.name, key) in gpu_of:
                        assert gpu_of[(instance.name, key)] == number


def test_three_models_over_half_a_gpu_never_share_a_two_gpu_instance():
    # Together they fit the two GPUs' pooled memory (18 of 20 GB), but no GPU holds two.
    models = [ModelSpec(f"m{i}", "embedding", 100, gpu_memory_mb=6000) for i in range(3)]
    policy = PlacementPolicy(target_utilization=1.0)
    plan = solve(models=models, instance_types=[TWO_GPU], policy=policy)
    (endpoint,) = plan.endpoints
    assert [len(i.models) for i in endpoint.instances] == [2, 1]
    first = endpoint.instances[0]
    assert [len(gpu) for gpu in first.gpu_models] == [1, 1]
    assert first.gpu_used_mb == (6000, 6000)


def test_a_model_larger_than_one_gpu_fits_no_mme_type_but_runs_as_a_component():
    model = ModelSpec("codegen-16b", "llm", 40000, gpu_memory_mb=40000, pinned=True)
    with pytest.raises(CapacityExceeded, match="codegen-16b"):
        solve(models=[model], instance_types=[P4D_24XLARGE], policy=PlacementPolicy())
    plan = solve(models=[model], instance_types=[P4D_24XLARGE], policy=PlacementPolicy(mode=IC))
    (instance,) = plan.endpoints[0].instances
    # 40 GB over a 32 GB budget per A100: two accelerators.
    assert [len(gpu) for gpu in instance.gpu_models] == [1, 1, 0, 0, 0, 0, 0, 0]


def test_hot_models_spread_across_instances_by_their_share_of_requests():
    # Each takes half an instance's 13,500 requests an hour, though 10 MB would let 500 share.
    hot = [ModelSpec(f"hot{i}", "intent-classifier", 10, requests_per_hour=6750) for i in range(6)]
    cold = [ModelSpec(f"cold{i:03d}", "intent-classifier", 10) for i in range(300)]
    plan = solve(models=hot + cold, instance_types=[M5_XLARGE], policy=PlacementPolicy())
    (endpoint,) = plan.endpoints
    # The weight is the larger share, not the sum: a pair of hot models fills an instance.
    assert [sum(k.startswith("hot") for k in i.models) for i in endpoint.instances] == [2, 2, 2, 0]
    assert all(i.requests_per_hour <= 13_500 for i in endpoint.instances)
    unlimited = PlacementPolicy(requests_per_hour_per_instance=None)
    plan = solve(models=hot + cold, instance_types=[M5_XLARGE], policy=unlimited)
    assert len(plan.endpoints[0].instances) == 1


def test_a_hot_models_traffic_is_shared_by_its_replicas():
    hot = ModelSpec("hot", "intent-classifier", 10, requests_per_hour=27_000, replicas=3)
    others = [ModelSpec(f"m{i}", "intent-classifier", 10, requests_per_hour=4500) for i in range(6)]
    plan = solve(models=[hot, *others], instance_types=[M5_XLARGE], policy=PlacementPolicy())
    # 9,000 an hour per replica: each replica's instance has room for one 4,500 model.
    assert len(plan.assignments["hot"]) == 3
    assert [len(i.models) for i in plan.endpoints[0].instances] == [2, 2, 2, 3]
    assert all(i.requests_per_hour <= 13_500 for i in plan.endpoints[0].instances)


def test_forethought_autocomplete_is_bound_by_host_memory_on_a_g4dn_xlarge():
    # CUDA initialisation in each python backend holds ~3 GB of host memory per model.
    models = [
        ModelSpec(f"autocomplete-{i}", "autocomplete", 3000, gpu_memory_mb=292) for i in range(8)
    ]
    plan = solve(models=models, instance_types=[G4DN_XLARGE], policy=PlacementPolicy())
    assert [len(i.models) for i in plan.endpoints[0].instances] == [4, 4]


def test_salesforce_llms_as_components_cost_a_fraction_of_one_p4d_each():
    sizes_gb = [15, 18, 20, 22, 24, 26, 28, 30] * 3
    models = [
        ModelSpec(f"llm-{i:02d}", "llm", 30000, gpu_memory_mb=gb * 1024, requests_per_hour=600)
        for i, gb in enumerate(sizes_gb)
    ]
    plan = solve(models=models, instance_types=[P4D_24XLARGE], policy=PlacementPolicy(mode=IC))
    assert len(plan.endpoints[0].instances) == 3  # one A100 per component, eight per instance
    assert plan.dedicated_usd_per_hour / plan.usd_per_hour == pytest.approx(8)


def test_idle_components_scale_to_zero_and_pinned_ones_keep_a_copy():
    models = [
        ModelSpec("busy", "llm", 30000, gpu_memory_mb=20000, requests_per_hour=100, replicas=2),
        ModelSpec("idle", "llm", 30000, gpu_memory_mb=20000),
        ModelSpec("premium", "llm", 30000, gpu_memory_mb=20000, pinned=True),
    ]
    plan = solve(models=models, instance_types=[P4D_24XLARGE], policy=PlacementPolicy(mode=IC))
    assert plan.assignments["idle"] == []
    assert plan.scaled_to_zero == ("idle",)
    assert plan.endpoints[0].scaled_to_zero == ("idle",)
    assert len(plan.assignments["premium"]) == 1
    assert len(set(plan.assignments["busy"])) == 2
    assert plan.usd_per_hour == pytest.approx(2 * 37.688)
    # The baseline keeps one instance per replica, idle tenants included.
    assert plan.dedicated_usd_per_hour == pytest.approx(4 * 37.688)


def test_an_endpoint_of_only_idle_components_costs_nothing_and_wakes_in_place():
    idle = [ModelSpec(f"t{i}", "llm", 20000, gpu_memory_mb=20000) for i in range(3)]
    asleep = solve(models=idle, instance_types=[P4D_24XLARGE], policy=PlacementPolicy(mode=IC))
    assert asleep.usd_per_hour == 0
    assert asleep.endpoints[0].instances == []
    woken = [dataclasses.replace(idle[0], requests_per_hour=50), *idle[1:]]
    awake = solve(
        models=woken,
        instance_types=[P4D_24XLARGE],
        policy=PlacementPolicy(mode=IC),
        existing=asleep,
    )
    assert awake.endpoints[0].name == asleep.endpoints[0].name
    assert len(awake.assignments["t0"]) == 1
    assert awake.scaled_to_zero == ("t1", "t2")


def test_dedicated_mode_gives_every_model_its_own_endpoint_and_saves_nothing():
    models = [ModelSpec(f"m{i}", "embedding", 100, replicas=2) for i in range(3)]
    plan = solve(models=models, instance_types=CATALOG, policy=PlacementPolicy(mode="dedicated"))
    assert [e.instances[0].models for e in plan.endpoints] == [("m0",), ("m1",), ("m2",)]
    assert all(len(e.instances) == 2 for e in plan.endpoints)
    assert plan.savings == pytest.approx(0)


def test_an_unknown_mode_is_refused():
    with pytest.raises(DomainError, match="mode"):
        solve(models=[], instance_types=CATALOG, policy=PlacementPolicy(mode="serverless"))


@pytest.mark.parametrize(("gpu_memory_mb", "per_instance"), [(1009, 12), (1092, 12), (1008, 13)])
def test_forethought_twelve_per_g4dn_xlarge_pins_each_model_between_1009_and_1092_mb(
    gpu_memory_mb, per_instance
):
    # 80 % of a 16 GB T4 is 13,107 MB: twelve fit and thirteen do not only in (1008.2, 1092.3].
    models = [ModelSpec(f"emb-{i:02d}", "embedding", 900, gpu_memory_mb) for i in range(26)]
    plan = solve(models=models, instance_types=[G4DN_XLARGE], policy=PlacementPolicy())
    assert len(plan.endpoints[0].instances[0].models) == per_instance


def test_the_lower_bound_is_met_within_five_percent_on_a_homogeneous_fleet():
    models = [ModelSpec(f"minilm-{i:05d}", "embedding", 90) for i in range(10_000)]
    plan = solve(models=models, instance_types=CATALOG, policy=PlacementPolicy())
    bound = lower_bound_usd_per_hour(models, CATALOG, PlacementPolicy())
    assert bound == pytest.approx(10_000 * 90 / (0.8 * 16384) * 0.23)
    assert bound <= plan.usd_per_hour <= 1.05 * bound


def test_a_new_model_too_large_for_the_endpoints_type_gets_its_own_endpoint():
    policy = PlacementPolicy(size_ratio_limit=1000)
    models = [ModelSpec(f"m{i}", "embedding", 100) for i in range(5)]
    before = solve(models=models, instance_types=[M5_LARGE, M5_XLARGE], policy=policy)
    assert before.endpoints[0].instance_type == "ml.m5.large"
    big = ModelSpec("big", "embedding", 7000)
    after = solve(
        models=[*models, big],
        instance_types=[M5_LARGE, M5_XLARGE],
        policy=policy,
        existing=before,
    )
    (shared,) = [e for e in after.endpoints if e.name == "embedding-mme"]
    assert shared == before.endpoints[0]
    assert after.assignments["big"] == ["embedding-dedicated-big-0000"]


@FAST
@given(
    runs=st.lists(
        st.tuples(st.sampled_from([0.3, 1.0, 2.5, 3.7, 7.0]), st.integers(1, 30)), max_size=12
    ),
    slots=st.integers(1, 4),
    cap=st.integers(1, 25),
    budget=st.sampled_from([7.0, 10.0, 13.1]),
)
def test_a_run_of_equal_models_lands_where_placing_them_one_by_one_would(runs, slots, cap, budget):
    """The packer fills a run of single-copy models of one weight in one go (fleets of many
    tenants have few distinct sizes); the instances, GPUs and order are those of the one-by-one
    first fit, and so is the tree the next placements search."""
    from deployments.placement.solver import _Bins

    in_runs, one_by_one = _Bins(budget, slots, cap), _Bins(budget, slots, cap)
    for number, (weight, length) in enumerate(runs):
        keys = [f"r{number}-{index}" for index in range(length)]
        in_runs.place_each_once(keys, weight)
        for key in keys:
            one_by_one.place(key, weight, 1)

    assert in_runs.models == one_by_one.models
    assert in_runs.slot_models == one_by_one.slot_models
    assert in_runs.free == one_by_one.free
    assert in_runs.tree == one_by_one.tree


def test_the_dedicated_baseline_prices_each_size_once_and_names_a_model_that_fits_nowhere():
    from deployments.placement.solver import DEDICATED_MODE, dedicated_usd_per_hour

    policy = PlacementPolicy(mode=DEDICATED_MODE)
    same = [ModelSpec(f"m{i}", "intent-classifier", 111.0, replicas=1 + i % 2) for i in range(9)]
    assert dedicated_usd_per_hour(same, CATALOG, policy) == pytest.approx(
        sum(m.replicas for m in same) * M5_LARGE.usd_per_hour
    )
    with pytest.raises(CapacityExceeded, match="'huge'"):
        dedicated_usd_per_hour([*same, ModelSpec("huge", "x", 10**6)], CATALOG, policy)


# Fewer examples than the other properties: each solves up to 360 copies twice (the solve
# improves packings above the lower bound, so one example takes up to a second).
@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(
        st.tuples(
            st.sampled_from(["embedding", "intent-classifier"]),
            st.sampled_from([90.0, 111.0, 140.5, 600.0, 1300.0, 2500.0, 9000.0]),
            st.sampled_from([0.0, 0.0, 800.0, 3000.0]),
            st.sampled_from([0.0, 0.0, 500.0, 20000.0]),
            st.integers(1, 40),
        ),
        max_size=6,
    ),
    replicas=st.sampled_from([1, 1, 2, 3]),
    policy=st.builds(
        PlacementPolicy,
        target_utilization=st.sampled_from([0.5, 0.8, 1.0]),
        max_models_per_instance=st.sampled_from([3, 20, 500]),
        size_ratio_limit=st.sampled_from([2.0, 4.0, 1000.0]),
    ),
    catalog=st.lists(st.sampled_from(CATALOG), min_size=1, max_size=4, unique=True),
)
def test_a_counted_plan_opens_what_solving_model_by_model_opens(sizes, replicas, policy, catalog):
    from deployments.placement.solver import ModelGroup, count_plan

    groups = [ModelGroup(kind, host, gpu, rph, count) for kind, host, gpu, rph, count in sizes]
    models = [
        ModelSpec(
            f"m{i}-{n}",
            g.kind,
            g.host_memory_mb,
            g.gpu_memory_mb,
            g.requests_per_hour,
            replicas=replicas,
        )
        for i, g in enumerate(groups)
        for n in range(g.count)
    ]
    try:
        plan = solve(models=models, instance_types=catalog, policy=policy)
    except CapacityExceeded:
        with pytest.raises(CapacityExceeded):
            count_plan(groups=groups, instance_types=catalog, policy=policy, replicas=replicas)
        return

    counted = count_plan(groups=groups, instance_types=catalog, policy=policy, replicas=replicas)

    assert counted.usd_per_hour == pytest.approx(plan.usd_per_hour)
    # (kind, mode, type) → instances and copies; counted plans list a kind's dedicated
    # endpoints on one type as one row.
    solved: dict = {}
    for e in plan.endpoints:
        key = (e.kind, e.mode, e.instance_type)
        instances, held = solved.get(key, (0, 0))
        solved[key] = (
            instances + len(e.instances),
            held + sum(len(i.models) for i in e.instances),
        )
    assert {
        (e.kind, e.mode, e.instance_type): (e.instances, e.models * replicas)
        for e in counted.endpoints
    } == solved
