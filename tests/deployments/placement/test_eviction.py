"""The eviction policy: least-recently-used first, pinned never, the budget always respected; the
frequency-aware order keeps often-requested models through bursts of rarely-requested ones."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.zipf_eviction import simulate
from deployments.placement.eviction import (
    AccessHistory,
    CapacityExceeded,
    ResidentModel,
    plan_load,
    plan_trim,
)


def model(key: str, mb: float = 100, *, used: float = 0, pinned: bool = False, **kw):
    return ResidentModel(key=key, memory_mb=mb, last_used=used, pinned=pinned, **kw)


def test_nothing_is_evicted_while_the_new_model_fits():
    plan = plan_load(
        resident=[model("a"), model("b")], incoming_key="c", incoming_mb=100, budget_mb=300
    )

    assert plan.evict == ()
    assert plan.resident_mb_after == 300


def test_the_least_recently_used_model_is_evicted_first():
    resident = [model("recent", used=30), model("oldest", used=10), model("middle", used=20)]

    plan = plan_load(resident=resident, incoming_key="new", incoming_mb=100, budget_mb=300)

    assert plan.evict == ("oldest",)


def test_eviction_never_removes_pinned_model():
    resident = [model("pinned-old", used=1, pinned=True), model("a", used=5), model("b", used=9)]

    plan = plan_load(resident=resident, incoming_key="new", incoming_mb=200, budget_mb=300)

    assert plan.evict == ("a", "b")


def test_a_model_still_loading_is_not_evicted():
    resident = [model("loading", used=0, loading=True), model("a", used=5)]

    plan = plan_load(resident=resident, incoming_key="new", incoming_mb=100, budget_mb=200)

    assert plan.evict == ("a",)


def test_capacity_exceeded_when_pinned_models_hold_the_budget():
    resident = [model("p1", 150, pinned=True), model("p2", 100, pinned=True)]

    with pytest.raises(CapacityExceeded, match="being loaded or unloaded hold 250 MB"):
        plan_load(resident=resident, incoming_key="new", incoming_mb=100, budget_mb=300)


def test_capacity_exceeded_when_the_model_is_larger_than_the_whole_budget():
    with pytest.raises(CapacityExceeded, match="whole budget is 300 MB"):
        plan_load(resident=[], incoming_key="huge", incoming_mb=301, budget_mb=300)


def test_reloading_a_resident_model_does_not_count_it_twice():
    plan = plan_load(resident=[model("a", 200)], incoming_key="a", incoming_mb=200, budget_mb=250)

    assert plan.evict == ()


def test_trim_evicts_least_recent_until_within_budget_and_keeps_the_new_model():
    resident = [model("new", 180, used=0), model("a", 100, used=1), model("b", 100, used=2)]

    assert plan_trim(resident=resident, budget_mb=300, keep="new") == ("a",)


residents = st.lists(
    st.builds(
        ResidentModel,
        key=st.uuids().map(str),
        memory_mb=st.floats(min_value=1, max_value=500),
        pinned=st.booleans(),
        last_used=st.floats(min_value=0, max_value=1e6),
    ),
    max_size=40,
)


@given(resident=residents, incoming_mb=st.floats(min_value=1, max_value=500))
def test_a_plan_always_fits_the_budget_and_spares_pinned_models(resident, incoming_mb):
    budget = 2000.0
    try:
        plan = plan_load(
            resident=resident, incoming_key="incoming", incoming_mb=incoming_mb, budget_mb=budget
        )
    except CapacityExceeded:
        pinned = sum(m.memory_mb for m in resident if m.pinned)
        assert pinned + incoming_mb > budget
        return
    evicted = set(plan.evict)
    kept = sum(m.memory_mb for m in resident if m.key not in evicted)
    assert kept + incoming_mb <= budget + 1e-6
    assert not any(m.pinned for m in resident if m.key in evicted)
    # Only what was needed: putting back the last evicted model would break the budget.
    if plan.evict:
        last = next(m for m in resident if m.key == plan.evict[-1])
        assert kept + incoming_mb + last.memory_mb > budget
        # And every evicted model was used no more recently than any unpinned survivor.
        survivors = [m for m in resident if m.key not in evicted and not m.pinned]
        newest_evicted = max(m.last_used for m in resident if m.key in evicted)
        assert all(s.last_used >= newest_evicted for s in survivors)


# --- Frequency-aware eviction (AccessHistory) --------------------------------------------------


def history_of(*keys: str, **options) -> AccessHistory:
    history = AccessHistory(protect_requests=options.pop("protect_requests", 0), **options)
    for key in keys:
        history.record(key)
    return history


def test_frequency_order_evicts_the_one_hit_model_and_keeps_the_often_requested_one():
    # "hot" served five requests, then one request to "once" made it the most recent.
    history = history_of("hot", "hot", "hot", "hot", "hot", "once", "new")
    resident = [model("hot", used=5, hits=5), model("once", used=6, hits=1)]

    lru = plan_load(resident=resident, incoming_key="new", incoming_mb=100, budget_mb=200)
    frequency = plan_load(
        resident=resident,
        incoming_key="new",
        incoming_mb=100,
        budget_mb=200,
        order=history.order(),
    )

    assert lru.evict == ("hot",)
    assert frequency.evict == ("once",)


def test_an_evicted_model_that_returns_keeps_its_frequency():
    history = history_of(*["hot"] * 10, "tail-1", "tail-1", "tail-2", "tail-2")
    # The tail models evicted "hot"; its request now reloaded it, and "new" needs room.
    history.record("hot")
    history.record("new")
    resident = [model("hot", used=15, hits=1), model("tail-1", used=12), model("tail-2", used=14)]
    # Counting only while resident (as ResidentModel.hits does) would start "hot" again at one.
    without_past = history_of("tail-1", "tail-1", "tail-2", "tail-2", "hot", "new")

    plan = plan_load(
        resident=resident, incoming_key="new", incoming_mb=100, budget_mb=300, order=history.order()
    )
    forgetful = plan_load(
        resident=resident,
        incoming_key="new",
        incoming_mb=100,
        budget_mb=300,
        order=without_past.order(),
    )

    assert history.frequency("hot") > 10
    assert plan.evict == ("tail-1",)
    assert forgetful.evict == ("hot",)


def test_the_history_forgets_the_least_recently_requested_key_beyond_its_bound():
    history = history_of("a", "b", "a", "c", max_keys=2)

    assert len(history) == 2
    assert "b" not in history
    assert history.frequency("b") == 0.0
    assert history.frequency("a") > 1.9


def test_decay_lets_a_formerly_hot_model_go():
    history = history_of(*["formerly-hot"] * 50, half_life_requests=10)
    for _ in range(100):
        history.record("now-hot")
    history.record("new")
    resident = [model("formerly-hot", used=50, hits=50), model("now-hot", used=150, hits=100)]

    plan = plan_load(
        resident=resident, incoming_key="new", incoming_mb=100, budget_mb=200, order=history.order()
    )

    assert plan.evict == ("formerly-hot",)
    assert history.frequency("formerly-hot") < 50 * 0.5**9


def test_without_decay_a_formerly_hot_model_would_stay():
    history = history_of(*["formerly-hot"] * 50, half_life_requests=1e12)
    for _ in range(40):
        history.record("now-hot")
    resident = [model("formerly-hot", used=50), model("now-hot", used=90)]

    plan = plan_load(
        resident=resident, incoming_key="new", incoming_mb=100, budget_mb=200, order=history.order()
    )

    assert plan.evict == ("now-hot",)


def test_the_model_just_requested_is_evicted_last():
    # Two requests of protection: the incoming one and the one before, whose model just loaded.
    history = history_of("hot", "hot", "hot", "just-loaded", "new", protect_requests=2)
    resident = [model("hot", used=3), model("just-loaded", used=4)]

    plan = plan_load(
        resident=resident, incoming_key="new", incoming_mb=100, budget_mb=200, order=history.order()
    )

    assert plan.evict == ("hot",)


def test_without_protection_request_counts_alone_order_the_models():
    history = history_of("hot", "hot", "hot", "just-loaded", "new", protect_requests=2)
    resident = [model("hot", used=3), model("just-loaded", used=4)]

    plan = plan_load(
        resident=resident,
        incoming_key="new",
        incoming_mb=100,
        budget_mb=200,
        order=history.order(protect=False),
    )

    assert plan.evict == ("just-loaded",)


def test_a_large_model_is_evicted_before_a_small_one_with_the_same_requests():
    history = history_of("small", "large", "small", "large")
    resident = [model("small", 100, used=3), model("large", 300, used=4)]

    weighted = plan_load(
        resident=resident, incoming_key="new", incoming_mb=100, budget_mb=450, order=history.order()
    )
    by_count = plan_load(
        resident=resident,
        incoming_key="new",
        incoming_mb=100,
        budget_mb=450,
        order=history_of("small", "large", "small", "large", weight_by_memory=False).order(),
    )

    assert weighted.evict == ("large",)
    assert by_count.evict == ("small",)


def test_models_never_requested_go_first_least_recent_then_by_key():
    history = history_of("requested")
    resident = [model("requested", used=1), model("b", used=2), model("a", used=2)]

    plan = plan_load(
        resident=resident, incoming_key="new", incoming_mb=100, budget_mb=200, order=history.order()
    )

    assert plan.evict == ("a", "b")


def test_trim_with_the_frequency_order_keeps_the_often_requested_model():
    history = history_of("hot", "hot", "hot", "cold", "new")
    resident = [model("new", 180, used=5), model("hot", 100, used=3), model("cold", 100, used=4)]

    evicted = plan_trim(resident=resident, budget_mb=300, keep="new", order=history.order())

    assert evicted == ("cold",)


keys = st.sampled_from([f"m{index}" for index in range(12)])
frequency_residents = st.lists(
    st.builds(
        ResidentModel,
        key=keys,
        memory_mb=st.floats(min_value=1, max_value=500),
        pinned=st.booleans(),
        last_used=st.floats(min_value=0, max_value=1e6),
        loading=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda m: m.key,
)


@given(
    resident=frequency_residents,
    requests=st.lists(st.sampled_from([f"m{index}" for index in range(14)]), max_size=60),
    incoming_mb=st.floats(min_value=1, max_value=500),
    half_life=st.floats(min_value=1, max_value=1e6),
    protect=st.integers(min_value=0, max_value=5),
    weight_by_memory=st.booleans(),
)
def test_the_frequency_order_never_evicts_pinned_or_loading_models_nor_exceeds_the_budget(
    resident, requests, incoming_mb, half_life, protect, weight_by_memory
):
    budget = 2000.0
    history = AccessHistory(
        half_life_requests=half_life,
        protect_requests=protect,
        weight_by_memory=weight_by_memory,
        max_keys=8,
    )
    for key in requests:
        history.record(key)
    try:
        plan = plan_load(
            resident=resident,
            incoming_key="incoming",
            incoming_mb=incoming_mb,
            budget_mb=budget,
            order=history.order(),
        )
    except CapacityExceeded:
        held = sum(m.memory_mb for m in resident if m.pinned or m.loading)
        assert held + incoming_mb > budget
        return
    evicted = set(plan.evict)
    kept = sum(m.memory_mb for m in resident if m.key not in evicted)
    assert kept + incoming_mb <= budget + 1e-6
    assert not any(m.pinned or m.loading for m in resident if m.key in evicted)
    if plan.evict:
        last = next(m for m in resident if m.key == plan.evict[-1])
        assert kept + incoming_mb + last.memory_mb > budget
    # The same history gives the same plan.
    again = plan_load(
        resident=list(reversed(resident)),
        incoming_key="incoming",
        incoming_mb=incoming_mb,
        budget_mb=budget,
        order=history.order(),
    )
    assert again.evict == plan.evict


def test_on_zipf_traffic_the_frequency_order_has_fewer_cold_starts_than_lru():
    scenario = {"models": 60, "capacity_models": 15, "requests": 3000, "zipf_s": 1.1, "seed": 3}

    lru = simulate(policy="lru", **scenario)
    frequency = simulate(policy="frequency", **scenario)

    assert frequency["cold_starts"] < lru["cold_starts"]
    assert frequency["hits"] + frequency["cold_starts"] == 3000


def test_requests_recorded_from_many_threads_are_all_counted():
    history = AccessHistory(half_life_requests=1e12)

    def record_many(key: str) -> None:
        for _ in range(2000):
            history.record(key)

    threads = [threading.Thread(target=record_many, args=(f"m{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert history.requests == 8000
    assert sum(history.frequency(f"m{index}") for index in range(4)) == pytest.approx(8000)
