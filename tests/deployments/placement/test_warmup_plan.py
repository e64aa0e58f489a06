"""What a warm-up pass does on one instance under each policy: the hourly ones warm what is
loaded and load what fits; the predictive one loads the likely models, the likeliest first,
in place of less likely ones only, and leaves the unlikely to go cold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.placement.warmup_plan import (
    HOURLY_ALL,
    HOURLY_SKIP_RECENT,
    PREDICTIVE,
    WarmupCandidate,
    plan_warmups,
)


def model(key, *, loaded=False, p=0.0, mb=100.0, **kw) -> WarmupCandidate:
    return WarmupCandidate(key=key, memory_mb=mb, loaded=loaded, probability=p, **kw)


def test_hourly_warms_every_loaded_model_and_loads_cold_ones_only_into_free_room():
    candidates = [
        model("a", loaded=True),
        model("b", loaded=True, recently_used=True),
        model("c"),
        model("d"),
        model("e", wanted=False),
    ]

    every = plan_warmups(policy=HOURLY_ALL, candidates=candidates, budget_mb=300, resident_mb=200)
    skipping = plan_warmups(
        policy=HOURLY_SKIP_RECENT, candidates=candidates, budget_mb=300, resident_mb=200
    )

    assert every.warm == ("a", "b") and every.load == ("c",) and every.no_room == ("d",)
    assert every.evict == () and every.requests == 3
    assert skipping.warm == ("a",) and skipping.recent == ("b",) and skipping.requests == 2
    assert every.skipped == skipping.skipped == ("e",)


def test_predictive_loads_the_likeliest_first_and_leaves_the_unlikely_cold():
    candidates = [model("rare", p=0.1), model("likely", p=0.8), model("sure", p=0.95)]

    decision = plan_warmups(policy=PREDICTIVE, candidates=candidates, budget_mb=250, resident_mb=50)

    assert decision.load == ("sure", "likely")
    assert decision.skipped == ("rare",) and decision.no_room == ()
    assert decision.warm == () and decision.requests == 2


def test_predictive_makes_room_only_from_less_likely_models_never_pinned_or_in_use_ones():
    candidates = [
        model("idle", loaded=True, p=0.05),
        model("busy", loaded=True, p=0.9),
        model("premium", loaded=True, p=0.0, pinned=True),
        model("in-use", loaded=True, p=0.0, recently_used=True),
        model("coming", p=0.7),
        model("also-coming", p=0.6),
    ]

    decision = plan_warmups(
        policy=PREDICTIVE, candidates=candidates, budget_mb=400, resident_mb=400
    )

    # "idle" makes room for "coming"; nothing less likely than "also-coming" is left.
    assert decision.evict == ("idle",)
    assert decision.load == ("coming",)
    assert decision.no_room == ("also-coming",)


def test_a_cold_pinned_model_is_loaded_first_whatever_its_forecast():
    decision = plan_warmups(
        policy=PREDICTIVE,
        candidates=[model("premium", pinned=True, p=0.0), model("likely", p=0.9)],
        budget_mb=100,
        resident_mb=0,
    )

    assert decision.load == ("premium",) and decision.no_room == ("likely",)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="warm-up policy"):
        plan_warmups(policy="sometimes", candidates=[], budget_mb=1, resident_mb=0)


@given(
    models=st.lists(
        st.tuples(
            st.booleans(),
            st.floats(min_value=0, max_value=1),
            st.floats(min_value=1, max_value=300),
            st.booleans(),
        ),
        max_size=25,
    ),
    budget=st.floats(min_value=100, max_value=3000),
)
def test_predictive_never_exceeds_the_budget_nor_evicts_a_likelier_or_pinned_model(models, budget):
    candidates = [
        model(f"m{i}", loaded=loaded, p=p, mb=mb, pinned=pinned)
        for i, (loaded, p, mb, pinned) in enumerate(models)
    ]
    by_key = {m.key: m for m in candidates}
    resident = sum(m.memory_mb for m in candidates if m.loaded)

    decision = plan_warmups(
        policy=PREDICTIVE, candidates=candidates, budget_mb=budget, resident_mb=resident
    )

    after = (
        resident
        - sum(by_key[k].memory_mb for k in decision.evict)
        + sum(by_key[k].memory_mb for k in decision.load)
    )
    assert after <= max(budget, resident) + 1e-6
    assert not any(by_key[k].pinned for k in decision.evict)
    if decision.evict:
        # Each unload made room for a load at least this likely: the likeliest one's.
        likeliest = max(1.0 if by_key[k].pinned else by_key[k].probability for k in decision.load)
        assert all(by_key[victim].probability < likeliest for victim in decision.evict)
    assert all(not by_key[k].loaded for k in decision.load)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WARMUP_POLICY": "sometimes"}, "WARMUP_POLICY"),
        ({"WARMUP_MIN_PROBABILITY": "0"}, "WARMUP_MIN_PROBABILITY"),
        ({"WARMUP_MIN_PROBABILITY": "1.5"}, "WARMUP_MIN_PROBABILITY"),
    ],
)
def test_the_platform_refuses_to_start_with_a_warm_up_setting_out_of_range(env, named, tmp_path):
    from tests.config.test_settings import run_manage

    result = run_manage("check", env={"TENANTML_VAR_DIR": str(tmp_path), **env})

    assert result.returncode != 0
    assert named in result.stderr
