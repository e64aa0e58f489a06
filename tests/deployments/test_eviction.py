"""The eviction policy: least-recently-used first, pinned never, the budget always respected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.eviction import CapacityExceeded, ResidentModel, plan_load, plan_trim


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

    with pytest.raises(CapacityExceeded, match="pinned and loading models hold 250 MB"):
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
