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
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import REPO, RESULTS_DIR, machine, percentile, print_table, setup_django
from proxy import (
    ACTOR,
    DEFAULT_BASE_CACHE,
    build_fleet,
    free_port,
    interleaved,
    start_proxy,
    targets_for,
)


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
    from deployments.backends.local.runtime import stop_local_instance
    from deployments.models import Instance, VersionUsageMinute
    from models_registry.base_model import base_encoder
    from tenants.services import issue_token

    began = time.perf_counter()
    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    models = build_fleet(max(args.models, 2), base, var_dir)
    instance = Instance.objects.get(endpoint__name="local-intent-classifier", status="healthy")
    token = issue_token(tenant=None, name="bench", actor=ACTOR).secret
    port = free_port()
    proxy = start_proxy(var_dir, port, {"USAGE_FLUSH_INTERVAL_S": "1"})
    shadowed, plain = models[: len(models) // 2], models[len(models) // 2 :]
    try:
        native = targets_for(models, instance, f"http://127.0.0.1:{port}", token)["native"]
        by_model = dict(zip([m.pk for m in models], native, strict=True))
        groups = {
            "shadowed": [by_model[m.pk] for m in shadowed],
            "plain": [by_model[m.pk] for m in plain],
        }
        before = asyncio.run(interleaved(groups, ["shadowed", "plain"], args.requests))
        versions = start_shadows(shadowed)
        time.sleep(2.0)  # the web process hears of the new routes
        during = asyncio.run(interleaved(groups, ["shadowed", "plain"], args.requests))
        time.sleep(3.0)  # the last copies are answered and flushed
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor=ACTOR, reason="measured")

    def p(samples, pct):
        return round(percentile(samples, pct) * 1000, 3)

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
        "c1_no_rollout": {
            name: {"p50_ms": p(values, 50), "p99_ms": p(values, 99)}
            for name, values in before.items()
        },
        "c1_shadow_running": {
            name: {"p50_ms": p(values, 50), "p99_ms": p(values, 99)}
            for name, values in during.items()
        },
        "shadowed_p50_change_ms": round(p(during["shadowed"], 50) - p(before["shadowed"], 50), 3),
        "shadowed_vs_plain_p50_ms": round(p(during["shadowed"], 50) - p(during["plain"], 50), 3),
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
