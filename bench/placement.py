"""How fast the placement solver packs a fleet, and what the packing saves.

Solves 1k, 10k and 100k models (two kinds, host memory 10–300 MB, seeded) against a small
SageMaker-like catalog and prints solve time, instances, hourly cost and savings against one
cheapest-fitting dedicated instance per model. Pure Python: no database is touched.

    python bench/placement.py [--sizes 1000,10000,100000] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import print_table, write_results  # noqa: E402
from deployments.placement import InstanceSpec, ModelSpec, PlacementPolicy, solve  # noqa: E402

CATALOG = [
    InstanceSpec("ml.m5.large", 0, 0, 8192, 2, 0.115),
    InstanceSpec("ml.m5.xlarge", 0, 0, 16384, 4, 0.23),
    InstanceSpec("ml.m5.2xlarge", 0, 0, 32768, 8, 0.461),
    InstanceSpec("ml.g4dn.xlarge", 1, 16384, 16384, 4, 0.7364),
    InstanceSpec("ml.g5.xlarge", 1, 24576, 16384, 4, 1.408),
]
KINDS = ["intent-classifier", "embedding"]


def fleet(count: int, seed: int) -> list[ModelSpec]:
    rng = random.Random(seed)
    return [
        ModelSpec(
            key=f"model-{index:06d}",
            kind=KINDS[index % len(KINDS)],
            host_memory_mb=rng.randint(10, 300),
            replicas=1 if rng.random() < 0.9 else 2,
        )
        for index in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    policy = PlacementPolicy()
    rows, results = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        models = fleet(size, args.seed)
        started = time.perf_counter()
        plan = solve(models=models, instance_types=CATALOG, policy=policy)
        elapsed = time.perf_counter() - started
        instances = sum(len(e.instances) for e in plan.endpoints)
        types = sorted({e.instance_type for e in plan.endpoints})
        # Adding one model to the solved plan: the incremental path.
        extra = ModelSpec("model-extra", KINDS[0], 150)
        started = time.perf_counter()
        solve(models=[*models, extra], instance_types=CATALOG, policy=policy, existing=plan)
        incremental = time.perf_counter() - started
        row = {
            "models": size,
            "solve_s": round(elapsed, 3),
            "add_one_s": round(incremental, 3),
            "endpoints": len(plan.endpoints),
            "instances": instances,
            "instance_types": types,
            "usd_per_hour": round(plan.usd_per_hour, 3),
            "dedicated_usd_per_hour": round(plan.dedicated_usd_per_hour, 3),
            "savings": round(plan.savings, 4),
        }
        results.append(row)
        rows.append(
            [
                size,
                elapsed,
                incremental,
                instances,
                ",".join(types),
                plan.usd_per_hour,
                plan.dedicated_usd_per_hour,
                plan.savings,
            ]
        )
    print_table(
        "placement solve (first-fit decreasing, cheapest type per kind)",
        [
            "models",
            "solve s",
            "add one s",
            "instances",
            "types",
            "USD/h",
            "dedicated USD/h",
            "savings",
        ],
        rows,
    )
    # write_results records the database engine from Django settings; no database is opened.
    os.environ.setdefault("TENANTML_VAR_DIR", tempfile.mkdtemp(prefix="tenantml-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    write_results(
        "placement",
        {
            "seed": args.seed,
            "policy": vars(policy),
            "catalog": [vars(t) for t in CATALOG],
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
