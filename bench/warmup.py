"""Warm-up policies replayed on a synthetic fleet: cold starts users see, warm-up requests sent,
and the memory kept warm.

A fleet of tenant models (``--tenants``, one model each, 115 MB like an intent classifier) on
one instance whose budget holds ``--room`` of them, over ``--weeks`` simulated weeks after one
week of history. Each tenant has a time zone (UTC-8 to UTC+10), business hours (a start between
8:00 and 10:00 local, 7 to 10 hours long) on weekdays, a request rate in those hours drawn
from a long-tailed distribution (a few busy tenants, many rare ones), a trickle at night and at
weekends, and now and then a burst outside business hours; one in ten runs round the clock.

Every request goes through the platform's own serving policy: it is counted in the instance's
``AccessHistory`` and, when its model is not resident, is a cold start whose load evicts what
``plan_load`` chooses with the frequency-aware order (the default ``EVICTION_POLICY``). Every
hour, at minute 50, a warm-up pass runs ``plan_warmups`` with the policy under test, its
predictive probabilities from ``next_hour_probability`` over the models' hours so far; its loads
and unloads change what is resident (warm-ups are platform traffic: they are not counted in the
access history, as on the platform).

Figures per policy, over the measured weeks: user requests, cold starts (a request that found
its model unloaded), warm-up requests sent, the memory kept warm for nothing
(``warm_memory_gb_hours``: GB-hours of models resident through an hour in which they served no
request, sampled every 10 minutes) and all the memory kept resident (GB-hours). Pure
Python, seeded; no database, no Triton.

    python bench/warmup.py [--tenants 300] [--room 100] [--weeks 2] [--seed 11]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import print_table, write_results  # noqa: E402
from deployments.placement.eviction import AccessHistory, ResidentModel, plan_load  # noqa: E402
from deployments.placement.forecast import (  # noqa: E402
    HOURS_PER_DAY,
    HOURS_PER_WEEK,
    is_weekend,
    next_hour_probability,
)
from deployments.placement.warmup_plan import (  # noqa: E402
    HOURLY_ALL,
    HOURLY_SKIP_RECENT,
    PREDICTIVE,
    WarmupCandidate,
    plan_warmups,
)

MODEL_MB = 115.0
SKIP_RECENT_S = 1800  # WARMUP_SKIP_RECENT_S's default
PASS_MINUTE = 50
SAMPLE_MINUTES = 10
# 2026-11-02 00:00 UTC, a Monday: the simulated weeks start on a Monday.
START_HOUR = 498_216
MIN_PROBABILITIES = (0.3, 0.5, 0.7)


@dataclass
class Tenant:
    key: str
    utc_offset: int
    open_hour: int
    open_hours: int
    rate: float  # requests an hour in business hours
    night: float  # fraction of the rate at night
    weekend: float  # fraction of the rate at weekends
    always_on: bool
    bursts: set[int] = field(default_factory=set)  # hours of a burst

    def rate_at(self, hour: int) -> float:
        if hour in self.bursts:
            return self.rate
        if self.always_on:
            return self.rate * 0.6
        local = hour + self.utc_offset
        in_hours = self.open_hour <= local % HOURS_PER_DAY < self.open_hour + self.open_hours
        weekend = is_weekend(local)
        if weekend:
            return self.rate * self.weekend * (1.0 if in_hours else self.night)
        return self.rate if in_hours else self.rate * self.night


def make_fleet(count: int, hours: int, rng: random.Random) -> list[Tenant]:
    tenants = []
    for index in range(count):
        tenant = Tenant(
            key=f"t{index:04d}",
            utc_offset=rng.randint(-8, 10),
            open_hour=rng.randint(8, 10),
            open_hours=rng.randint(7, 10),
            # Long tail: median 2 requests an hour in business hours, a few in the hundreds.
            rate=min(400.0, math.exp(rng.gauss(math.log(2.0), 1.3))),
            night=rng.uniform(0.0, 0.03),
            weekend=rng.uniform(0.02, 0.2),
            always_on=rng.random() < 0.1,
        )
        for day in range(hours // HOURS_PER_DAY):
            if rng.random() < 0.04:  # a burst outside the usual pattern, 1 to 3 hours
                start = START_HOUR + day * HOURS_PER_DAY + rng.randrange(HOURS_PER_DAY)
                tenant.bursts.update(range(start, start + rng.randint(1, 3)))
        tenants.append(tenant)
    return tenants


def requests_of(tenants: list[Tenant], hours: int, rng: random.Random) -> list[tuple[float, str]]:
    """Every request of the replay: (Unix time, model key), in time order."""
    events = []
    for tenant in tenants:
        for hour in range(START_HOUR, START_HOUR + hours):
            count = _poisson(tenant.rate_at(hour), rng)
            events.extend((hour * 3600 + rng.random() * 3600, tenant.key) for _ in range(count))
    events.sort()
    return events


def _poisson(mean: float, rng: random.Random) -> int:
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


@dataclass
class Outcome:
    requests: int = 0
    cold_starts: int = 0
    warmup_requests: int = 0
    warmup_loads: int = 0
    warmup_unloads: int = 0
    mb_hours: float = 0.0
    # Resident memory sampled every ``SAMPLE_MINUTES``: (hour, keys resident) of each sample.
    samples: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    idle_mb_hours: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "cold_starts": self.cold_starts,
            "cold_start_share": round(self.cold_starts / self.requests, 4)
            if self.requests
            else None,
            "warmup_requests": self.warmup_requests,
            "warmup_loads": self.warmup_loads,
            "warmup_unloads": self.warmup_unloads,
            "warm_memory_gb_hours": round(self.idle_mb_hours / 1024, 1),
            "resident_memory_gb_hours": round(self.mb_hours / 1024, 1),
            "replay_seconds": round(self.seconds, 2),
        }


def replay(
    *,
    policy: str,
    keys: list[str],
    events: list[tuple[float, str]],
    budget_mb: float,
    history_hours: int,
    min_probability: float = 0.5,
) -> Outcome:
    """Replay ``events`` against one instance under ``policy``; figures from ``history_hours``
    on (the hours before are the forecast's history and fill the instance)."""
    started = time.perf_counter()
    outcome = Outcome()
    access = AccessHistory()
    resident: dict[str, float] = {}  # key -> last used (Unix time)
    active_hours: dict[str, set[int]] = {key: set() for key in keys}
    measure_from = (START_HOUR + history_hours) * 3600
    end_hour = int(events[-1][0] // 3600) if events else START_HOUR
    passes = [hour * 3600 + PASS_MINUTE * 60 for hour in range(START_HOUR, end_hour + 1)]
    heapq.heapify(passes)
    clock = START_HOUR * 3600.0

    next_sample = float(measure_from)

    def advance(to: float) -> None:
        nonlocal clock, next_sample
        if to > measure_from:
            outcome.mb_hours += len(resident) * MODEL_MB * (to - max(clock, measure_from)) / 3600
        while next_sample <= to:
            outcome.samples.append((int(next_sample // 3600), tuple(resident)))
            next_sample += SAMPLE_MINUTES * 60
        clock = to

    for at, key in events:
        while passes and passes[0] <= at:
            when = heapq.heappop(passes)
            advance(when)
            _warmup_pass(
                policy, keys, resident, active_hours, when, budget_mb, min_probability,
                outcome if when >= measure_from else Outcome(),
            )  # fmt: skip
        advance(at)
        measured = at >= measure_from
        access.record(key)
        active_hours[key].add(int(at // 3600))
        if measured:
            outcome.requests += 1
        if key not in resident:
            if measured:
                outcome.cold_starts += 1
            plan = plan_load(
                resident=[
                    ResidentModel(key=k, memory_mb=MODEL_MB, last_used=used)
                    for k, used in resident.items()
                ],
                incoming_key=key,
                incoming_mb=MODEL_MB,
                budget_mb=budget_mb,
                order=access.order(),
            )
            for victim in plan.evict:
                del resident[victim]
        resident[key] = at
    # Memory kept warm for nothing: resident through an hour in which its model served no one.
    for hour, keys_resident in outcome.samples:
        idle = sum(1 for k in keys_resident if hour not in active_hours[k])
        outcome.idle_mb_hours += idle * MODEL_MB * SAMPLE_MINUTES / 60
    outcome.samples.clear()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _warmup_pass(
    policy: str,
    keys: list[str],
    resident: dict[str, float],
    active_hours: dict[str, set[int]],
    when: float,
    budget_mb: float,
    min_probability: float,
    outcome: Outcome,
) -> None:
    hour = int(when // 3600)
    candidates = []
    for key in keys:
        probability = 0.0
        if policy == PREDICTIVE:
            probability = next_hour_probability(
                active_hours[key], hour=hour + 1, observed_since=START_HOUR
            )
        used = resident.get(key)
        candidates.append(
            WarmupCandidate(
                key=key,
                memory_mb=MODEL_MB,
                loaded=key in resident,
                recently_used=used is not None and when - used < SKIP_RECENT_S,
                probability=probability,
            )
        )
    decision = plan_warmups(
        policy=policy,
        candidates=candidates,
        budget_mb=budget_mb,
        resident_mb=len(resident) * MODEL_MB,
        min_probability=min_probability,
    )
    for key in decision.evict:
        del resident[key]
    for key in decision.load:
        # Loaded for the warm-up: resident, but not used by a tenant (its last use is unknown).
        resident[key] = 0.0
    outcome.warmup_requests += decision.requests
    outcome.warmup_loads += len(decision.load)
    outcome.warmup_unloads += len(decision.evict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--room", type=int, default=100, help="models the budget holds")
    parser.add_argument("--weeks", type=int, default=2, help="weeks measured, after one of history")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    history_hours = HOURS_PER_WEEK
    hours = history_hours + args.weeks * HOURS_PER_WEEK
    tenants = make_fleet(args.tenants, hours, rng)
    events = requests_of(tenants, hours, rng)
    keys = [t.key for t in tenants]
    budget_mb = args.room * MODEL_MB
    common = dict(keys=keys, events=events, budget_mb=budget_mb, history_hours=history_hours)

    policies = {
        "hourly_all": replay(policy=HOURLY_ALL, **common),
        "hourly_skip_recent": replay(policy=HOURLY_SKIP_RECENT, **common),
    }
    thresholds = {
        p: replay(policy=PREDICTIVE, min_probability=p, **common) for p in MIN_PROBABILITIES
    }
    policies["predictive"] = thresholds[0.5]
    rows = [
        [
            name,
            o.requests,
            o.cold_starts,
            f"{o.cold_starts / o.requests:.2%}",
            o.warmup_requests,
            round(o.idle_mb_hours / 1024, 1),
            round(o.mb_hours / 1024, 1),
        ]
        for name, o in [*policies.items()]
        + [(f"predictive, p ≥ {p}", o) for p, o in thresholds.items() if p != 0.5]
    ]
    print_table(
        f"Warm-ups: {args.tenants} tenant models, room for {args.room}, {args.weeks} weeks "
        "measured after one of history",
        [
            "policy",
            "requests",
            "cold starts",
            "share",
            "warm-up requests",
            "idle warm GB-h",
            "resident GB-h",
        ],
        rows,
    )
    hourly_cold = min(
        policies["hourly_all"].cold_starts, policies["hourly_skip_recent"].cold_starts
    )
    hourly_requests = min(
        policies["hourly_all"].warmup_requests, policies["hourly_skip_recent"].warmup_requests
    )
    predictive = policies["predictive"]
    target_met = (
        predictive.cold_starts < hourly_cold and predictive.warmup_requests <= hourly_requests / 2
    )
    print(
        f"\npredictive: {predictive.cold_starts} cold starts against {hourly_cold} for the better "
        f"hourly policy, {predictive.warmup_requests} warm-up requests against "
        f"{hourly_requests}: target {'met' if target_met else 'NOT met'}"
    )
    write_results(
        "warmup",
        {
            "policies": {name: o.as_dict() for name, o in policies.items()},
            "predictive_by_min_probability": {str(p): o.as_dict() for p, o in thresholds.items()},
            "target_met": target_met,
            "fleet": {
                "tenants": args.tenants,
                "room": args.room,
                "model_mb": MODEL_MB,
                "weeks_measured": args.weeks,
                "weeks_of_history": 1,
                "seed": args.seed,
                "events": len(events),
                "warmup_pass_minute": PASS_MINUTE,
                "skip_recent_s": SKIP_RECENT_S,
            },
        },
    )


if __name__ == "__main__":
    main()
