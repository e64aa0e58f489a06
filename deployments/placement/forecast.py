"""Will a model be asked for in the next hour? A pure forecast from its hourly usage, no ORM.

Traffic to a tenant's model follows the tenant's working week: busy in its business hours,
quiet at night and at weekends, with bursts and a long tail of models asked for rarely. The
forecast reads a model's history as the set of hours (whole UTC hours, numbered from the epoch)
in which it served at least one request, and gives the probability that the coming hour is one
of them, from three signals:

- **the same hour of the week** in past weeks (a tenant's Monday 9:00 is like its last Mondays'
  9:00, whatever its time zone: the hours are UTC, so a time zone is only a shift of the
  profile), each week weighing half as much as the one after it every ``half_life_weeks``;
- **the same hour of the day** on past days of the same kind (weekday or weekend, in UTC),
  which says something after a day or two, long before a week has been seen; it is the prior
  the weekly figure starts from (``prior_weight`` weeks' worth);
- **persistence**: a model busy in the current hour tends to stay busy in the next (a burst,
  a working session); the chance is read off the model's own history (how often an active hour
  was followed by another), so a model whose hours come alone does not get it.

The forecast is the larger of the seasonal figure and, when the current hour is active,
persistence. Nothing here needs more than the last few weeks of hours; ``lookback_weeks``
bounds what is read. Everything is deterministic for a given history and hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HOURS_PER_DAY = 24
HOURS_PER_WEEK = 7 * HOURS_PER_DAY
# Hour 0 of the epoch (1970-01-01) was a Thursday: the offset that makes day 0 a Monday.
_MONDAY_OFFSET_DAYS = 3


def hour_of(timestamp: float) -> int:
    """The whole UTC hour a Unix time falls in, numbered from the epoch."""
    return int(timestamp // 3600)


def is_weekend(hour: int) -> bool:
    """Whether a UTC hour falls on a Saturday or a Sunday (UTC)."""
    return ((hour // HOURS_PER_DAY) + _MONDAY_OFFSET_DAYS) % 7 >= 5


@dataclass(frozen=True)
class ForecastSettings:
    half_life_weeks: float = 2.0
    half_life_days: float = 3.0
    lookback_weeks: int = 4
    # How many weeks of evidence the same-hour-of-day prior is worth against the weekly figure.
    prior_weight: float = 1.0
    # A day of the other kind (weekday against weekend) counts this much in the daily prior.
    other_day_kind_weight: float = 0.2
    # The chance an active hour is followed by another before the model's history says more.
    persistence_prior: float = 0.5
    persistence_prior_weight: float = 2.0


DEFAULT_SETTINGS = ForecastSettings()


def next_hour_probability(
    active_hours: Iterable[int] | set[int],
    *,
    hour: int,
    observed_since: int,
    current_hour_active: bool | None = None,
    settings: ForecastSettings = DEFAULT_SETTINGS,
) -> float:
    """The probability that the model serves a request in UTC hour ``hour``.

    ``active_hours`` are the hours before ``hour`` in which it served one (hours before
    ``observed_since``, when nothing was recorded, count as unknown, not as quiet).
    ``current_hour_active`` says whether the hour before ``hour`` has been active so far (it may
    still be under way); by default it is read from ``active_hours``. A model with no history
    at all gets 0.
    """
    active = active_hours if isinstance(active_hours, set | frozenset) else set(active_hours)
    if hour <= observed_since:
        return 0.0
    earliest = max(observed_since, hour - settings.lookback_weeks * HOURS_PER_WEEK)
    daily = _daily_figure(active, hour=hour, earliest=earliest, settings=settings)
    weekly_hits = weekly_weight = 0.0
    for week in range(1, settings.lookback_weeks + 1):
        past = hour - week * HOURS_PER_WEEK
        if past < earliest:
            break
        weight = 0.5 ** ((week - 1) / settings.half_life_weeks)
        weekly_weight += weight
        weekly_hits += weight * (past in active)
    seasonal = (weekly_hits + settings.prior_weight * daily) / (
        weekly_weight + settings.prior_weight
    )
    if current_hour_active is None:
        current_hour_active = (hour - 1) in active
    if not current_hour_active:
        return seasonal
    return max(seasonal, _persistence(active, hour=hour, earliest=earliest, settings=settings))


def _daily_figure(
    active: set[int], *, hour: int, earliest: int, settings: ForecastSettings
) -> float:
    """How often the same hour of the day was active on past days, the days of the same kind
    (weekday or weekend) counting fully; 0 without a past day."""
    weekend = is_weekend(hour)
    hits = total = 0.0
    day = 1
    while hour - day * HOURS_PER_DAY >= earliest:
        past = hour - day * HOURS_PER_DAY
        weight = 0.5 ** ((day - 1) / settings.half_life_days)
        if is_weekend(past) != weekend:
            weight *= settings.other_day_kind_weight
        total += weight
        hits += weight * (past in active)
        day += 1
    return hits / total if total else 0.0


def _persistence(
    active: set[int], *, hour: int, earliest: int, settings: ForecastSettings
) -> float:
    """P(next hour active | this hour active), from the model's own active hours."""
    followed = sum(1 for h in active if earliest <= h < hour - 1 and (h + 1) in active)
    runs = sum(1 for h in active if earliest <= h < hour - 1)
    return (followed + settings.persistence_prior * settings.persistence_prior_weight) / (
        runs + settings.persistence_prior_weight
    )
