"""What a shadow rollout costs the callers of the live version.

A throwaway platform (SQLite, temporary state) deploys N tenant intent classifiers onto one
local Triton process and starts the platform's web server in its own process (as
``bench/proxy.py`` does). It measures the native route at concurrency 1, half the models
("shadowed") interleaved request by request with the other half ("plain"), first with no
rollout, then with a shadow rollout of a second version of each shadowed model (the same
artifact, so every answer is also compared). The figure that matters is the shadowed models'
p50 before and during the shadow, and against the plain models in the same seconds: the caller
does not wait for the copy, but the copy is real work on the same machine's cores. The copies
sent and dropped and the agreement measured are read back from the usage minutes.

    python bench/canary.py [--models 4] [--requests 300]

Writes ``bench/results/canary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import REPO, RESULTS_DIR, machine, print_table, setup_django
from proxy import ACTOR, DEFAULT_BASE_CACHE, c1_figures, ms, split_fleet


def start_shadows(models) -> list:
    """A second version of each model (its first version's artifact), loaded as a shadow."""
    from deployments.services import candidates, rollouts
    from models_registry.services.packaging import package_version
    from models_registry.services.registry import register_version

    versions = []
    for model in models:
        live = model.active_version
        version = register_version(
            model=model, actor=ACTOR, artifact_uri=live.artifact_uri, metrics=live.metrics
        )
        version = package_version(version=version, actor=ACTOR)
        deployment = candidates.start_candidate(
            model=model,
            version=version,
            strategy="shadow",
            actor=ACTOR,
            gate={"min_requests": 10**9, "min_minutes": 10**6},  # measured, never decided
        )
        rollouts.run_rollout(deployment_id=deployment.pk)
        versions.append(version)
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4, help="tenant models (half shadowed)")
    parser.add_argument("--requests", type=int, default=300, help="per group and phase")
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    args = parser.parse_args()

    var_dir = setup_django()
    from deployments.models import VersionUsageMinute

    began = time.perf_counter()
    with split_fleet(args, var_dir, "shadowed", {"USAGE_FLUSH_INTERVAL_S": "1"}) as fleet:
        before = fleet.interleaved(args.requests)
        versions = start_shadows(fleet.changed)
        time.sleep(2.0)  # the web process hears of the new routes
        during = fleet.interleaved(args.requests)
        time.sleep(3.0)  # the last copies are answered and flushed
    models, shadowed = fleet.models, fleet.changed

    rows = VersionUsageMinute.objects.filter(version__in=versions)
    mirrored = sum(row.mirrored for row in rows)
    dropped = sum(row.mirror_dropped for row in rows)
    compared = sum(row.compared for row in rows)
    agreement = sum(row.agreement_sum for row in rows) / compared if compared else None
    figures = {
        "benchmark": "canary",
        "command": "python bench/canary.py " + " ".join(sys.argv[1:]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "models": len(models),
        "requests_per_group_and_phase": args.requests,
        "c1_no_rollout": c1_figures(before),
        "c1_shadow_running": c1_figures(during),
        "shadowed_p50_change_ms": round(ms(during["shadowed"], 50) - ms(before["shadowed"], 50), 3),
        "shadowed_vs_plain_p50_ms": round(ms(during["shadowed"], 50) - ms(during["plain"], 50), 3),
        "copies_sent": mirrored,
        "copies_dropped": dropped,
        "outputs_compared": compared,
        "agreement": round(agreement, 4) if agreement is not None else None,
        "run_seconds": round(time.perf_counter() - began, 1),
    }
    print_table(
        f"Native route, concurrency 1, {len(models)} models; a shadow of {len(shadowed)}",
        ["phase", "models", "p50 ms", "p99 ms"],
        [
            [phase, name, stats["p50_ms"], stats["p99_ms"]]
            for phase, key in (("no rollout", "c1_no_rollout"), ("shadow", "c1_shadow_running"))
            for name, stats in figures[key].items()
        ],
    )
    print(
        f"shadowed p50 change {figures['shadowed_p50_change_ms']} ms; copies sent {mirrored}, "
        f"dropped {dropped}; agreement {figures['agreement']} over {compared} outputs"
    )
    path = RESULTS_DIR / "canary.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
