"""The next-hour forecast: a tenant's working week is learned from its hours, time zone and all,
a burst carries on, and a model with no history is not expected."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deployments.placement.forecast import (
    HOURS_PER_DAY,
    HOURS_PER_WEEK,
    hour_of,
    is_weekend,
    next_hour_probability,
)

MONDAY = 498_216  # 2026-11-02 00:00 UTC


def business_hours(*, weeks: int, utc_open: int, length: int = 8) -> set[int]:
    """Weekdays from ``utc_open`` for ``length`` hours, for ``weeks`` weeks from MONDAY."""
    return {
        MONDAY + week * HOURS_PER_WEEK + day * HOURS_PER_DAY + utc_open + h
        for week in range(weeks)
        for day in range(5)
        for h in range(length)
    }


def test_the_calendar_is_utc_with_monday_first():
    assert hour_of(MONDAY * 3600 + 59) == MONDAY
    assert [is_weekend(MONDAY + day * HOURS_PER_DAY) for day in range(7)] == [False] * 5 + [
        True
    ] * 2


def test_a_tenants_business_hours_are_expected_and_its_nights_and_weekends_are_not():
    # A tenant in UTC+9 opening at 9:00 local: 00:00 UTC, for three weeks.
    history = business_hours(weeks=3, utc_open=0)
    week4 = MONDAY + 3 * HOURS_PER_WEEK
    since = MONDAY

    opening = next_hour_probability(history, hour=week4 + 1, observed_since=since)
    night = next_hour_probability(history, hour=week4 + 14, observed_since=since)
    saturday = next_hour_probability(
        history, hour=week4 + 5 * HOURS_PER_DAY + 2, observed_since=since
    )

    assert opening > 0.9
    assert night < 0.05
    assert saturday < 0.2


def test_a_day_of_history_already_says_something_before_a_week_has_been_seen():
    tuesday = MONDAY + HOURS_PER_DAY
    history = {MONDAY + 14 + h for h in range(8)}  # Monday 14:00 to 22:00 UTC

    assert next_hour_probability(history, hour=tuesday + 15, observed_since=MONDAY) > 0.5
    assert next_hour_probability(history, hour=tuesday + 3, observed_since=MONDAY) < 0.1


def test_a_burst_carries_on_into_the_next_hour_when_the_model_keeps_going():
    # Quiet at this hour in past weeks, but its active hours come in runs.
    history = business_hours(weeks=2, utc_open=8)
    now = MONDAY + 2 * HOURS_PER_WEEK + 2  # Monday 02:00 of the third week: never busy then
    busy_now = history | {now}

    quiet = next_hour_probability(history, hour=now + 1, observed_since=MONDAY)
    bursting = next_hour_probability(busy_now, hour=now + 1, observed_since=MONDAY)

    assert quiet < 0.05
    assert bursting > 0.7


def test_a_model_whose_hours_come_alone_gets_little_from_persistence():
    lone = {MONDAY + 2 * h for h in range(0, 2 * HOURS_PER_WEEK, 7)}  # never two in a row
    now = max(lone)

    assert next_hour_probability(lone, hour=now + 1, observed_since=MONDAY) < 0.2


def test_no_history_no_expectation():
    assert next_hour_probability(set(), hour=MONDAY + 500, observed_since=MONDAY) == 0.0
    assert next_hour_probability({MONDAY}, hour=MONDAY, observed_since=MONDAY) == 0.0


@given(
    hours=st.sets(st.integers(min_value=0, max_value=4 * HOURS_PER_WEEK - 1), max_size=300),
    target=st.integers(min_value=1, max_value=4 * HOURS_PER_WEEK),
)
def test_a_forecast_is_a_probability_and_depends_only_on_the_history(hours, target):
    history = {MONDAY + h for h in hours if h < target}

    first = next_hour_probability(history, hour=MONDAY + target, observed_since=MONDAY)
    again = next_hour_probability(sorted(history), hour=MONDAY + target, observed_since=MONDAY)

    assert 0.0 <= first <= 1.0
    assert first == again
