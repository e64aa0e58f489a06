"""Cold starts under Zipf traffic with memory pressure: least-recently-used vs frequency-aware.

Drives the real ``plan_load`` of ``deployments/placement/eviction.py`` with a seeded trace of
requests whose model is drawn from a Zipf distribution over popularity ranks, on one instance
whose memory budget holds a quarter of the models. A request to a resident model is a hit; any
other is a cold start that loads the model (evicting what the policy picks) and then answers, as
multi-model serving must. Policies:

- ``lru``: ``lru_order``, what SageMaker multi-model endpoints do;
- ``frequency``: ``AccessHistory.order()``, decayed request counts that outlive eviction.

Scenarios: the default (200 models of 114.4 MB, a budget for 50 of them, 20,000 requests,
s = 1.1); s = 0.8 and s = 1.3; popularity dealt out again to other models halfway through (what
was hot goes cold, which only decay lets the frequency policy follow); a fleet of mixed sizes,
evicting by requests per MB (the default) and by requests alone; and the default with its five
most popular models pinned. Time lost counts each cold start at the measured cold start minus
the warm answer it replaces; ``loaded_mb`` adds up what the cold starts loaded, for when load
time grows with size.

Pure Python: no database or Triton is touched. About 2 s.

    python bench/zipf_eviction.py [--seed 7] [--requests 20000]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import print_table, write_results  # noqa: E402
from deployments.placement.eviction import (  # noqa: E402
    AccessHistory,
    ResidentModel,
    lru_order,
    plan_load,
)

# Measured on real Triton in multi-model mode (docs/benchmarks.md, "Serving";
# bench/results/serving.json): intent-classifier cold start p50 (load + first answer), warm p50
# for one text, and resident memory per model at load.
COLD_START_S = 0.543
WARM_S = 0.008
MODEL_MB = 114.4
# Sizes for the mixed fleet: the largest Zendesk intent classifier, a MiniLM-class embedding model
# and a Forethought autocomplete model from bench/placement.py's published cases, and the
# platform's own intent classifier as measured above.
MIXED_MODEL_MB = (15.0, 90.0, 114.4, 292.0)

POLICIES = ("lru", "frequency")


def zipf_trace(*, models: int, requests: int, zipf_s: float, seed: int) -> list[int]:
    """Popularity ranks (0 = most popular) of ``requests`` requests, Zipf with exponent s."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** zipf_s for rank in range(models)))
    total = cumulative[-1]
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(requests)]


def popularity_order(*, models: int, seed: int) -> list[str]:
    """Model names from most to least popular: the seeded shuffle ``simulate`` starts from."""
    names = [f"m{index:03d}" for index in range(models)]
    random.Random(seed).shuffle(names)
    return names


def simulate(
    *,
    policy: str,
    models: int = 200,
    requests: int = 20_000,
    zipf_s: float = 1.1,
    seed: int = 7,
    capacity_models: int | None = 50,
    budget_mb: float | None = None,
    memory_mb: float | Sequence[float] = MODEL_MB,
    pinned: set[str] | None = None,
    shift_at: int | None = None,
    history: AccessHistory | None = None,
) -> dict:
    """Replay a Zipf trace on one instance under ``policy`` ("lru", "frequency"); count cold starts.

    Models are named ``m000``…; which name holds which popularity rank is a seeded shuffle, redone
    at request ``shift_at`` when given (popularity moves to other models). ``memory_mb`` is one
    size for all or a per-model sequence; the budget is ``budget_mb``, else ``capacity_models``
    models of the mean size. ``pinned`` models are loaded before the first request and stay.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    sizes = (
        [float(memory_mb)] * models
        if isinstance(memory_mb, int | float)
        else [float(size) for size in memory_mb]
    )
    if len(sizes) != models:
        raise ValueError("memory_mb needs one size per model")
    size_of = {f"m{index:03d}": size for index, size in enumerate(sizes)}
    if budget_mb is None:
        if capacity_models is None:
            raise ValueError("give capacity_models or budget_mb")
        budget_mb = capacity_models * sum(sizes) / models
    pinned = set(pinned or ())

    by_rank = popularity_order(models=models, seed=seed)
    # Its own stream, so the shift does not depend on how many draws came before it.
    shift_rng = random.Random(seed + 2)
    ranks = zipf_trace(models=models, requests=requests, zipf_s=zipf_s, seed=seed + 1)

    if policy == "frequency" and history is None:
        history = AccessHistory()
    resident: dict[str, ResidentModel] = {
        name: ResidentModel(key=name, memory_mb=size_of[name], pinned=True) for name in pinned
    }
    cold_starts = hits = 0
    loaded_mb = 0.0
    for index, rank in enumerate(ranks):
        if index == shift_at:
            shift_rng.shuffle(by_rank)
        key = by_rank[rank]
        now = float(index + 1)
        if policy == "frequency":
            # Every request counts, hit or not, as the serving layer would record it.
            history.record(key)
        model = resident.get(key)
        if model is not None:
            hits += 1
            resident[key] = ResidentModel(
                key=key,
                memory_mb=model.memory_mb,
                pinned=model.pinned,
                last_used=now,
                hits=model.hits + 1,
            )
            continue
        cold_starts += 1
        loaded_mb += size_of[key]
        plan = plan_load(
            resident=resident.values(),
            incoming_key=key,
            incoming_mb=size_of[key],
            budget_mb=budget_mb,
            order=history.order() if policy == "frequency" else lru_order,
        )
        for evicted in plan.evict:
            del resident[evicted]
        resident[key] = ResidentModel(key=key, memory_mb=size_of[key], last_used=now, hits=1)

    lost_s = cold_starts * (COLD_START_S - WARM_S)
    return {
        "policy": policy,
        "models": models,
        "requests": requests,
        "zipf_s": zipf_s,
        "seed": seed,
        "budget_mb": round(budget_mb, 1),
        "pinned": len(pinned),
        "shift_at": shift_at,
        "cold_starts": cold_starts,
        "hits": hits,
        "hit_rate": round(hits / requests, 4),
        "cold_start_time_lost_s": round(lost_s, 1),
        # What the loads read and unpacked: the cost if load time grew with model size.
        "loaded_mb": round(loaded_mb),
        "mean_latency_ms": round((cold_starts * COLD_START_S + hits * WARM_S) / requests * 1000, 1),
    }


def compare(*, history_options: dict | None = None, **scenario) -> dict:
    """Both policies on one scenario, with the cold starts the frequency policy saves.

    ``history_options`` are keyword arguments of ``AccessHistory`` (its defaults otherwise).
    """
    runs = {
        "lru": simulate(policy="lru", **scenario),
        "frequency": simulate(
            policy="frequency", history=AccessHistory(**(history_options or {})), **scenario
        ),
    }
    lru, frequency = runs["lru"], runs["frequency"]
    return {
        "lru": lru,
        "frequency": frequency,
        "history_options": history_options or {},
        "cold_starts_saved": lru["cold_starts"] - frequency["cold_starts"],
        "cold_starts_saved_fraction": round(
            (lru["cold_starts"] - frequency["cold_starts"]) / max(lru["cold_starts"], 1), 3
        ),
        "time_saved_s": round(
            lru["cold_start_time_lost_s"] - frequency["cold_start_time_lost_s"], 1
        ),
    }


def scenarios(*, seed: int, requests: int) -> dict[str, dict]:
    """The named scenarios of the benchmark, as keyword arguments of ``compare``."""
    base = {"models": 200, "requests": requests, "zipf_s": 1.1, "seed": seed, "capacity_models": 50}
    mixed_rng = random.Random(seed + 3)
    mixed = {**base, "memory_mb": [mixed_rng.choice(MIXED_MODEL_MB) for _ in range(200)]}
    return {
        "default": base,
        "zipf_0.8": {**base, "zipf_s": 0.8},
        "zipf_1.3": {**base, "zipf_s": 1.3},
        "shift_halfway": {**base, "shift_at": requests // 2},
        "mixed_sizes": mixed,
        "mixed_sizes_by_count": {**mixed, "history_options": {"weight_by_memory": False}},
        "five_hottest_pinned": {
            **base,
            "pinned": set(popularity_order(models=200, seed=seed)[:5]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    results = {
        name: compare(**scenario)
        for name, scenario in scenarios(seed=args.seed, requests=args.requests).items()
    }
    print_table(
        "cold starts under Zipf traffic, one instance holding 50 of 200 models",
        [
            "scenario",
            "LRU cold",
            "freq cold",
            "saved",
            "LRU hit rate",
            "freq hit rate",
            "LRU lost s",
            "freq lost s",
        ],
        [
            [
                name,
                result["lru"]["cold_starts"],
                result["frequency"]["cold_starts"],
                f"{result['cold_starts_saved_fraction']:.1%}",
                result["lru"]["hit_rate"],
                result["frequency"]["hit_rate"],
                result["lru"]["cold_start_time_lost_s"],
                result["frequency"]["cold_start_time_lost_s"],
            ]
            for name, result in results.items()
        ],
    )
    default = results["default"]
    # write_results records the database engine from Django settings; no database is opened.
    os.environ.setdefault("TENANTML_VAR_DIR", tempfile.mkdtemp(prefix="tenantml-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    write_results(
        "zipf_eviction",
        {
            "zipf_cold_starts": default["frequency"]["cold_starts"],
            "zipf_cold_starts_lru": default["lru"]["cold_starts"],
            "zipf_hit_rate": default["frequency"]["hit_rate"],
            "zipf_hit_rate_lru": default["lru"]["hit_rate"],
            "cold_start_s": COLD_START_S,
            "warm_s": WARM_S,
            "history": {
                "half_life_requests": AccessHistory().half_life_requests,
                "max_keys": AccessHistory().max_keys,
                "protect_requests": AccessHistory().protect_requests,
                "weight_by_memory": AccessHistory().weight_by_memory,
            },
            "seed": args.seed,
            "scenarios": results,
        },
    )


if __name__ == "__main__":
    main()
