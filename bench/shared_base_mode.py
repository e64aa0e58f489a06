"""The shared-base deployment mode through the platform's serving path, beside multi-model mode.

Everything runs on real ``tritonserver`` processes through the platform's own services, as the
proxy and the API call them (``deployments.backends.local.shared_base`` and ``runtime``), with
their database writes and events:

- one real intent-classifier version is trained (the kind's ``build_artifact``) and packaged;
  ``--tenants`` more tenants' versions are registered from copies of its artifact whose head is
  replaced by another valid one (random weights, own labels);
- shared-base: every version's head is placed on one instance of the kind's shared-base
  endpoint; the first request loads the encoder; then each tenant's first request (a cold
  start: head read, verified, loaded, answered), a warm request per tenant, and unloading heads
  (what an eviction costs);
- multi-model (mme): ``--mme-models`` packaged versions on one instance of the kind's MME
  endpoint: each one's first request (load + answer), a warm request, and unloading it;
- memory per tenant: the encoder's measured memory shared by the heads plus each head's bytes,
  against each MME model's measured memory.

    python bench/shared_base_mode.py [--tenants 300] [--mme-models 4]

The machine is shared with other work: compare figures within one run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from harness import REPO, print_table, setup_django, summarize_ms, write_results  # noqa: E402

ACTOR = "bench"
TICKET = ["Where is my refund? I returned the jacket two weeks ago."]
ROWS = [
    (f"{text} ({n})", label)
    for n in range(4)
    for text, label in [
        ("Where is my refund for the returned order?", "refund"),
        ("I want my money back, the item broke.", "refund"),
        ("I can't log in to my account.", "account_access"),
        ("The password reset email never arrives.", "account_access"),
        ("My parcel has not been delivered yet.", "shipping"),
        ("Tracking has not updated in days.", "shipping"),
    ]
]
DEFAULT_BASE_CACHE = REPO / "var" / "cache" / "base_models"


def derived_artifact(source: Path, target: Path, *, seed: int) -> Path:
    """A copy of a real artifact with another valid head (random weights, own label names)."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copyfile(path, target / path.name)
    rng = np.random.default_rng(seed)
    labels = [f"t{seed}-{name}" for name in ("billing", "login", "delivery", "other")]
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W=rng.normal(0, 1.5, (384, len(labels))).astype(np.float32),
        b=rng.normal(0, 0.1, len(labels)).astype(np.float32),
    )
    (target / "head.npz").unlink()
    (target / "head.npz").write_bytes(buffer.getvalue())
    (target / "labels.json").unlink()
    (target / "labels.json").write_text(json.dumps(labels))
    return target


def fresh(placement_id: int):
    from deployments.models import Placement

    return Placement.objects.select_related("version__model__tenant", "instance", "endpoint").get(
        pk=placement_id
    )


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--mme-models", type=int, default=4)
    args = parser.parse_args()
    var_dir = setup_django()
    cache = var_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    DEFAULT_BASE_CACHE.mkdir(parents=True, exist_ok=True)
    os.symlink(DEFAULT_BASE_CACHE, cache / "base_models")

    from deployments.backends.local import runtime, shared_base
    from deployments.backends.local.backend import LocalServingBackend
    from deployments.models import Endpoint, Instance, InstanceType
    from models_registry.base_model import base_encoder
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.registry import create_model, register_version
    from tenants.services import create_tenant

    serving = LocalServingBackend()
    kind = "intent-classifier"
    work = var_dir / "artifacts"
    trained = work / "trained"
    trained.mkdir(parents=True)
    get_kind(kind).build_artifact(
        texts=[t for t, _ in ROWS],
        labels=[label for _, label in ROWS],
        out_dir=trained,
        base=base_encoder(quantized=True),
    )

    def new_version(slug: str, artifact: Path, *, packaged: bool):
        tenant = create_tenant(slug=slug, name=slug, actor=ACTOR)
        model = create_model(tenant=tenant, name="intents", kind=kind, actor=ACTOR)
        version = register_version(model=model, actor=ACTOR, artifact_uri=str(artifact))
        return package_version(version=version, actor=ACTOR) if packaged else version

    stopped = []
    try:
        # --- Shared-base -----------------------------------------------------------------
        endpoint = shared_base.shared_base_endpoint(kind=kind, actor=ACTOR)
        instance = runtime.start_local_instance(endpoint=endpoint, actor=ACTOR)
        stopped.append(instance)
        placements = []
        for number in range(args.tenants):
            artifact = derived_artifact(trained, work / f"t{number}", seed=number)
            version = new_version(f"tenant-{number:04d}", artifact, packaged=False)
            placements.append(
                shared_base.place_head(version=version, instance=instance, actor=ACTOR).pk
            )
        first = fresh(placements[0])
        encoder_s = timed(lambda: shared_base.ensure_encoder(instance=instance, kind=kind))
        cold = [
            timed(lambda p=p: serving.invoke(placement=fresh(p), inputs=TICKET)) for p in placements
        ]
        warm = [
            timed(lambda p=p: serving.invoke(placement=fresh(p), inputs=TICKET)) for p in placements
        ]
        instance.refresh_from_db()
        heads = shared_base.parse_heads_answer(
            runtime.client_for(instance).invoke(
                shared_base.encoder_name(kind), shared_base.list_heads_body()
            )
        )
        head_bytes = sum(heads.values()) / len(heads)
        encoder_mb = instance.shared_base_memory_mb or 0.0
        unloads = [
            timed(lambda p=p: serving.unload(placement=fresh(p), actor=ACTOR, reason="bench"))
            for p in placements[: min(50, len(placements))]
        ]
        del first

        # --- Multi-model -----------------------------------------------------------------
        mme = Endpoint.objects.create(
            name="local-intent-classifier",
            backend=Endpoint.Backend.LOCAL,
            mode=Endpoint.Mode.MME,
            instance_type=InstanceType.objects.filter(is_local=True).first(),
            model_kind=kind,
        )
        mme_instance = runtime.start_local_instance(endpoint=mme, actor=ACTOR)
        stopped.append(mme_instance)
        mme_placements = []
        for number in range(args.mme_models):
            artifact = derived_artifact(trained, work / f"m{number}", seed=10_000 + number)
            version = new_version(f"mme-{number:02d}", artifact, packaged=True)
            mme_placements.append(
                runtime.place_on_instance(version=version, instance=mme_instance, actor=ACTOR).pk
            )
        mme_cold = [
            timed(lambda p=p: serving.invoke(placement=fresh(p), inputs=TICKET))
            for p in mme_placements
        ]
        mme_warm = [
            timed(lambda p=p: serving.invoke(placement=fresh(p), inputs=TICKET))
            for p in mme_placements
            for _ in range(10)
        ]
        mme_mb = [fresh(p).host_memory_mb or 0.0 for p in mme_placements]
        mme_unloads = [
            timed(lambda p=p: serving.unload(placement=fresh(p), actor=ACTOR, reason="bench"))
            for p in mme_placements
        ]
    finally:
        for instance in stopped:
            instance = Instance.objects.get(pk=instance.pk)
            runtime.stop_local_instance(instance=instance, actor=ACTOR, reason="bench finished")

    shared = {
        "tenants": args.tenants,
        "encoder_load_s": round(encoder_s, 3),
        "encoder_memory_mb": encoder_mb,
        "head_bytes_mean": round(head_bytes),
        "memory_per_tenant_mb": round(encoder_mb / args.tenants + head_bytes / 2**20, 3),
        "cold_request": summarize_ms(cold),
        "warm_request": summarize_ms(warm),
        "unload_head": summarize_ms(unloads),
    }
    multi_model = {
        "models": args.mme_models,
        "memory_per_model_mb": round(sum(mme_mb) / len(mme_mb), 1),
        "cold_request": summarize_ms(mme_cold),
        "warm_request": summarize_ms(mme_warm),
        "unload_model": summarize_ms(mme_unloads),
    }
    print_table(
        "Shared-base vs multi-model, through the platform's serving path (one ticket)",
        ["layout", "memory per tenant MB", "cold p50 ms", "warm p50 ms", "unload p50 ms"],
        [
            [
                f"shared-base ({args.tenants} tenants)",
                shared["memory_per_tenant_mb"],
                shared["cold_request"]["p50_ms"],
                shared["warm_request"]["p50_ms"],
                shared["unload_head"]["p50_ms"],
            ],
            [
                f"mme ({args.mme_models} models)",
                multi_model["memory_per_model_mb"],
                multi_model["cold_request"]["p50_ms"],
                multi_model["warm_request"]["p50_ms"],
                multi_model["unload_model"]["p50_ms"],
            ],
        ],
    )
    print(
        f"encoder: loaded once in {shared['encoder_load_s']} s, {encoder_mb} MB; "
        f"heads: {shared['head_bytes_mean']} bytes each"
    )
    write_results("shared_base_mode", {"shared_base": shared, "mme": multi_model})


if __name__ == "__main__":
    sys.exit(main())
