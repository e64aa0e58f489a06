"""Eviction ahead of need: past the high watermark the least valuable models are chosen down to
the low watermark, never pinned, loading or already-leaving ones; a load that does not fit waits
for the unloads under way when they make its room."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.placement.eviction import ResidentModel, evictions_make_room, plan_headroom


def model(key: str, mb: float = 100, *, used: float = 0, **kw) -> ResidentModel:
    return ResidentModel(key=key, memory_mb=mb, last_used=used, **kw)


def headroom(resident, budget_mb=1000, high=0.9, low=0.75, **kw):
    return plan_headroom(
        resident=resident, budget_mb=budget_mb, high_watermark=high, low_watermark=low, **kw
    )


def test_nothing_is_evicted_at_or_under_the_high_watermark():
    resident = [model(str(i), used=i) for i in range(9)]  # 900 of 1,000 MB: 90 %

    assert headroom(resident) == ()


def test_crossing_the_high_watermark_evicts_least_recent_down_to_the_low_one():
    resident = [model(str(i), used=i) for i in range(10)]  # 1,000 of 1,000 MB

    evicted = headroom(resident)

    assert evicted == ("0", "1", "2")  # 700 MB stay: at most 75 %


def test_pinned_loading_and_leaving_models_are_never_chosen_and_leaving_ones_count_as_gone():
    resident = [
        model("pinned", used=0, pinned=True),
        model("loading", used=1, loading=True),
        model("leaving", used=2, loading=True, evicting=True),
        *(model(f"m{i}", used=10 + i) for i in range(7)),
    ]  # 1,000 MB, 900 once "leaving" is gone

    assert headroom(resident) == ()  # 90 % once the unload under way ends
    assert headroom(resident, high=0.85) == ("m0", "m1")  # 700 MB stay


def test_the_most_recently_used_model_stays_even_when_headroom_is_short():
    resident = [model("older", mb=500, used=1), model("just-loaded", mb=500, used=2)]

    assert headroom(resident, high=0.5, low=0.1) == ("older",)


def by_requests(counts: dict[str, float]):
    return lambda m: (counts[m.key], m.key)


def test_a_hot_model_is_not_pushed_out_for_a_colder_one_still_loading():
    # Three hot models and a tail model loading: 4 × 115 MB of 518 leaves no room for the next.
    counts = {"hot-a": 40.0, "hot-b": 20.0, "hot-c": 12.0, "tail": 1.0}
    resident = [
        *(model(key, mb=115, used=2 - i) for i, key in enumerate(["hot-a", "hot-b", "hot-c"])),
        model("tail", mb=115, used=9, loading=True),
    ]
    kw = dict(budget_mb=518, room_for_mb=115, order=by_requests(counts))

    # Without deferring, the coldest hot model goes while the tail model loads.
    assert headroom(resident, **kw) == ("hot-c",)
    # Deferring, nothing goes now: once loaded, the tail model is the one to go.
    assert headroom(resident, defer_to_loading=True, keep_most_recent=False, **kw) == ()
    loaded = [*resident[:3], model("tail", mb=115, used=10)]
    assert headroom(loaded, defer_to_loading=True, keep_most_recent=False, **kw) == ("tail",)
    # Keeping the most recently used model (LRU's rule) would push a hot one out instead.
    assert headroom(loaded, defer_to_loading=True, **kw) == ("hot-c",)


def test_a_loading_model_worth_more_than_a_candidate_does_not_hold_the_candidate_back():
    counts = {"cold": 1.0, "hot-a": 40.0, "hot-b": 20.0, "warm": 30.0}
    resident = [
        model("cold", mb=115),
        model("hot-a", mb=115),
        model("hot-b", mb=115),
        model("warm", mb=115, loading=True),
    ]

    evicted = headroom(
        resident, budget_mb=518, room_for_mb=115, order=by_requests(counts),
        defer_to_loading=True, keep_most_recent=False,
    )  # fmt: skip

    assert evicted == ("cold",)


def test_less_room_than_the_next_model_needs_triggers_eviction_below_the_high_watermark():
    resident = [model(str(i), mb=200, used=i) for i in range(4)]  # 800 of 1,000 MB: 80 %

    assert headroom(resident) == ()
    assert headroom(resident, room_for_mb=250) == ("0",)  # 600 MB stay: 400 free


def test_watermarks_out_of_order_are_refused():
    with pytest.raises(ValueError, match="watermarks"):
        headroom([model("a")], high=0.7, low=0.8)


def test_a_load_waits_for_unloads_under_way_only_when_they_make_its_room():
    leaving = model("leaving", mb=300, loading=True, evicting=True)
    others = [model("a", mb=400), model("b", mb=200)]

    assert evictions_make_room(resident=[leaving, *others], incoming_mb=300, budget_mb=1000)
    # Fits already: nothing to wait for.
    assert not evictions_make_room(resident=others, incoming_mb=300, budget_mb=1000)
    # The unload under way is not enough: the load chooses victims of its own.
    assert not evictions_make_room(resident=[leaving, *others], incoming_mb=500, budget_mb=1000)


@given(
    sizes=st.lists(st.floats(min_value=1, max_value=400), min_size=1, max_size=30),
    pinned=st.lists(st.booleans(), min_size=30, max_size=30),
    low=st.floats(min_value=0.1, max_value=1.0),
    gap=st.floats(min_value=0.0, max_value=0.5),
)
def test_after_a_headroom_pass_what_stays_is_under_the_low_watermark_unless_pinned(
    sizes, pinned, low, gap
):
    high = min(1.0, low + gap)
    resident = [model(str(i), mb=mb, used=i, pinned=pinned[i]) for i, mb in enumerate(sizes)]
    budget = 1000.0

    evicted = set(headroom(resident, budget_mb=budget, high=high, low=low))

    staying = [m for m in resident if m.key not in evicted]
    assert not any(m.pinned for m in resident if m.key in evicted)
    unpinned = [m for m in resident if not m.pinned]
    if unpinned:
        assert max(unpinned, key=lambda m: m.last_used).key not in evicted
    used = sum(m.memory_mb for m in resident)
    if used <= high * budget:
        assert evicted == set()
    else:
        # Down to the low watermark, unless only pinned models and the one in use are left.
        kept = sum(m.memory_mb for m in resident if m.pinned) + (
            max(unpinned, key=lambda m: m.last_used).memory_mb if unpinned else 0
        )
        assert sum(m.memory_mb for m in staying) <= max(low * budget, kept) + 1e-6


@pytest.mark.parametrize(
    "env",
    [
        {"EVICTION_HIGH_WATERMARK": "0.7", "EVICTION_LOW_WATERMARK": "0.8"},
        {"EVICTION_HIGH_WATERMARK": "1.2"},
        {"EVICTION_LOW_WATERMARK": "0"},
    ],
)
def test_the_platform_refuses_to_start_with_watermarks_out_of_order(env, tmp_path):
    from tests.config.test_settings import run_manage

    result = run_manage("check", env={"TENANTML_VAR_DIR": str(tmp_path), **env})

    assert result.returncode != 0
    assert "EVICTION_LOW_WATERMARK and EVICTION_HIGH_WATERMARK" in result.stderr
