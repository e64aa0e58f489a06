"""Serving on a real Triton: cold start, warm latency and resident memory per tenant model.

Everything goes through the platform's serving services (``start_local_instance``,
``place_on_instance``, ``invoke_placement``) on real ``tritonserver`` processes in SageMaker
multi-model mode, one local endpoint per kind, as production runs them:

- intent-classifier: a head trained with the kind's ``build_artifact`` on each demo tenant's
  generated tickets, two versions per tenant (different seeds), each packaged with
  ``package_version``; embedding: the same tenants' embedding models, also two versions each;
- cold start = ``invoke_placement`` on a placement never loaded (verify + unpack the package,
  load it, answer one text), once per version; the versions stay loaded, so the Triton process
  tree's memory growth per model is measured with all of them resident;
- warm latency = ``invoke_placement`` round-robin over the loaded versions, one text and 32 texts;
- memory = the placement's measured ``host_memory_mb`` (RSS of the model's python stub at load)
  and PSS from ``model_memory_mb``, at load and after the warm traffic;
- the naive baseline (torch + transformers in the python backend, ``bench/naive_baseline``) is
  loaded through ``TritonMultiModelClient`` on the embedding endpoint's Triton under distinct
  names, one at a time.

Each kind's Triton is stopped once it has been measured (and every one on the way out, also on
error). Figures and the method are written up in docs/benchmarks.md.

With ``--device gpu`` (on a machine with an NVIDIA GPU and a CUDA build of onnxruntime) the
endpoints are of a GPU instance type, so every version is loaded as its GPU package (KIND_GPU,
the fp16 encoder on CUDA) and each load's GPU memory is measured; the results go to
``bench/results/serving-gpu.json``.

    python bench/serving.py [--device cpu|gpu] [--rows 240] [--versions-per-tenant 2]
        [--warm-requests 300]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

# Serving never reaches for the hub; the base model ships as a package.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
from harness import REPO, percentile, print_table, setup_django, write_results  # noqa: E402

TARGETS = {
    "cold_start_p50_s": 1.5,
    "warm_p50_ms": 15.0,
    "rss_per_model_mb": 150.0,
    "models_per_16gb": 100,
}
HOST_MB = 16 * 1024
KINDS = ("intent-classifier", "embedding")
MODEL_NAMES = {"intent-classifier": "intents", "embedding": "embeddings"}
ACTOR = "bench"
BATCH = 32
# The ONNX export of the base encoder is cached here across runs (the repository's var/ is
# ignored by git); each run's database, packages and Triton work directories are temporary.
DEFAULT_BASE_CACHE = REPO / "var" / "cache" / "base_models"
# The catalog type a --device gpu run's endpoints have: one GPU, Forethought's instance.
GPU_INSTANCE_TYPE = "ml.g4dn.xlarge"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=240, help="training tickets per version")
    parser.add_argument("--versions-per-tenant", type=int, default=2)
    parser.add_argument("--warm-requests", type=int, default=300, help="one-text requests")
    parser.add_argument("--batch-requests", type=int, default=50, help="32-text requests")
    parser.add_argument("--baseline-loads", type=int, default=3)
    parser.add_argument("--baseline-warm-requests", type=int, default=100, help="per load")
    parser.add_argument("--baseline-batch-requests", type=int, default=10, help="per load")
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    parser.add_argument("--keep-var-dir", action="store_true", help="keep the run's state")
    parser.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="load CPU or GPU packages"
    )
    args = parser.parse_args()

    began = time.perf_counter()
    var_dir = setup_django()
    instances = []
    try:
        payload = run(args, var_dir, instances)
    finally:
        from deployments.backends.local.runtime import stop_local_instance

        for instance in instances:
            try:
                stop_local_instance(instance=instance, actor=ACTOR, reason="benchmark finished")
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {instance}: {exc}")
        if not args.keep_var_dir:
            shutil.rmtree(var_dir, ignore_errors=True)
    payload["runtime_s"] = round(time.perf_counter() - began, 1)
    print(f"\nbenchmark runtime: {payload['runtime_s']:.0f} s")
    if args.device == "gpu":
        write_results("serving-gpu", payload, script="serving.py")
    else:
        write_results("serving", payload)


def run(args, var_dir: Path, instances: list) -> dict:
    from deployments.backends.local.runtime import stop_local_instance
    from models_registry.base_model import base_encoder, cache_key

    started = time.perf_counter()
    cached = (Path(args.base_cache_dir) / cache_key(quantized=True) / "manifest.json").is_file()
    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    setup = {"base_encoder": base.cache_key, "base_encoder_cached": cached}
    setup["base_encoder_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    versions = build_versions(args, base, var_dir)
    setup["train_and_package_s"] = round(time.perf_counter() - started, 1)
    print(
        f"base encoder {'from cache' if cached else 'exported'} in {setup['base_encoder_s']} s; "
        f"{sum(len(v) for v in versions.values())} versions trained and packaged in "
        f"{setup['train_and_package_s']} s"
    )

    kinds = {}
    for kind in KINDS:
        kinds[kind], instance = bench_kind(kind, versions[kind], args, instances)
        if kind == "embedding":
            # The baseline answers the embedding interface: measured on the same Triton.
            baseline = bench_baseline(instance, args, var_dir)
        stop_local_instance(instance=instance, actor=ACTOR, reason="measured")
        instances.remove(instance)
    report(kinds, baseline)
    return summary(kinds, baseline, setup, args)


# --- Tenants, versions, packages -----------------------------------------------------------------


def build_versions(args, base, var_dir: Path) -> dict[str, list]:
    """Two intent-classifier and two embedding versions per demo tenant, packaged for Triton."""
    from models_registry import artifacts
    from models_registry.demo import tickets as demo_data
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.registry import create_model, register_version
    from tenants.models import Tenant
    from tenants.services import create_tenant

    scratch = Path(tempfile.mkdtemp(prefix="artifacts-", dir=var_dir))
    versions: dict[str, list] = {kind: [] for kind in KINDS}
    for slug, info in demo_data.DEMO_TENANTS.items():
        tier = Tenant.Tier.PREMIUM if info["vertical"] == "banking" else Tenant.Tier.STANDARD
        tenant = create_tenant(slug=slug, name=info["name"], tier=tier, actor=ACTOR)
        for kind in KINDS:
            model = create_model(tenant=tenant, name=MODEL_NAMES[kind], kind=kind, actor=ACTOR)
            for index in range(args.versions_per_tenant):
                out_dir = scratch / slug / kind / str(index)
                if kind == "intent-classifier":
                    # Each version is trained on a different sample of the tenant's tickets.
                    rows = demo_data.generate_tickets(slug, rows=args.rows, seed=index)
                    metrics = get_kind(kind).build_artifact(
                        texts=[row["text"] for row in rows],
                        labels=[row["label"] for row in rows],
                        out_dir=out_dir,
                        base=base,
                    )
                else:
                    metrics = get_kind(kind).build_artifact(out_dir=out_dir, base=base)
                uri = artifacts.put_directory(f"artifacts/{slug}/{model.name}/{index}", out_dir)
                version = register_version(
                    model=model, actor=ACTOR, artifact_uri=uri, metrics=metrics
                )
                versions[kind].append(package_version(version=version, actor=ACTOR))
    shutil.rmtree(scratch, ignore_errors=True)
    return versions


def held_out_texts(slug: str, count: int = 400) -> list[str]:
    """Tickets no version was trained on (another seed), for the requests."""
    from models_registry.demo import tickets as demo_data

    return [row["text"] for row in demo_data.generate_tickets(slug, rows=count, seed=1000)]


# --- One kind on its own endpoint ----------------------------------------------------------------


def bench_kind(kind: str, versions: list, args, instances: list):
    from deployments.backends.local.memory import model_memory_mb
    from deployments.backends.local.runtime import (
        invoke_placement,
        place_on_instance,
        start_local_instance,
    )
    from deployments.models import Endpoint, InstanceType

    endpoint = Endpoint.objects.create(
        name=f"bench-{kind}",
        backend=Endpoint.Backend.LOCAL,
        mode=Endpoint.Mode.MME,
        instance_type=InstanceType.objects.get(
            name=GPU_INSTANCE_TYPE if args.device == "gpu" else "local"
        ),
        model_kind=kind,
    )
    started = time.perf_counter()
    # A budget the benchmark's models fit in, so no eviction interferes with the figures.
    instance = start_local_instance(endpoint=endpoint, actor=ACTOR, memory_budget_mb=HOST_MB)
    instances.append(instance)
    startup_s = time.perf_counter() - started
    tree_empty = triton_tree(instance.pid)

    texts = {v.pk: held_out_texts(v.model.tenant.slug) for v in versions}
    placements = [place_on_instance(version=v, instance=instance, actor=ACTOR) for v in versions]

    # Cold starts: each placement's first request loads its never-loaded package.
    cold = []
    for placement in placements:
        name = placement.version.triton_model_name
        started = time.perf_counter()
        result = invoke_placement(placement=placement, inputs=[texts[placement.version_id][0]])
        elapsed = time.perf_counter() - started
        assert result.cold_start, f"{name} was already loaded"
        check_outputs(kind, result.outputs, 1)
        placement.refresh_from_db()
        if args.device == "gpu" and placement.gpu_memory_mb is None:
            raise SystemExit(f"{name} was not loaded on a GPU: this Triton sees none.")
        cold.append(
            {
                "model": name,
                "cold_start_s": round(elapsed, 3),
                "load_s": round(placement.load_time_ms / 1000, 3),
                "host_memory_mb": placement.host_memory_mb,
                "gpu_memory_mb": placement.gpu_memory_mb,
            }
        )
    tree_loaded = triton_tree(instance.pid)
    memory_loaded = [model_memory_mb(instance.pid, p.version.triton_model_name) for p in placements]

    # Warm latency, round-robin over every loaded version, after a few untimed requests each.
    for placement in placements:
        for text in texts[placement.version_id][1:4]:
            invoke_placement(placement=placement, inputs=[text])

    def one_text(i: int) -> list:
        pool = texts[placements[i % len(placements)].version_id]
        return [pool[4 + (i // len(placements)) % (len(pool) - 4)]]

    def batch(i: int) -> list:
        pool = texts[placements[i % len(placements)].version_id]
        start = (i // len(placements)) * BATCH % (len(pool) - BATCH)
        return pool[start : start + BATCH]

    warm = timed_invokes(placements, one_text, args.warm_requests, kind, expect=1)
    batch32 = timed_invokes(placements, batch, args.batch_requests, kind, expect=BATCH)
    tree_traffic = triton_tree(instance.pid)
    memory_traffic = [
        model_memory_mb(instance.pid, p.version.triton_model_name) for p in placements
    ]
    for entry, at_load, after in zip(cold, memory_loaded, memory_traffic, strict=True):
        entry["pss_all_loaded_mb"] = at_load.pss_mb
        entry["rss_after_traffic_mb"] = after.rss_mb

    loaded = len(placements)
    rss = statistics.median(c["host_memory_mb"] for c in cold)
    pss = statistics.median(reading.pss_mb for reading in memory_loaded)
    rss_traffic = statistics.median(reading.rss_mb for reading in memory_traffic)
    pss_traffic = statistics.median(reading.pss_mb for reading in memory_traffic)
    growth = (tree_loaded["rss_mb"] - tree_empty["rss_mb"]) / loaded
    growth_pss = (tree_loaded["pss_mb"] - tree_empty["pss_mb"]) / loaded
    cold_s = [c["cold_start_s"] for c in cold]
    load_s = [c["load_s"] for c in cold]
    gpu_mb = [c["gpu_memory_mb"] for c in cold if c["gpu_memory_mb"] is not None]
    figures = {
        "endpoint": endpoint.name,
        "device": args.device,
        "gpu_memory_per_model_mb": round(statistics.median(gpu_mb), 1) if gpu_mb else None,
        "triton_startup_s": round(startup_s, 2),
        "versions": loaded,
        "tenants": len({v.model.tenant_id for v in versions}),
        "cold_start_p50_s": round(statistics.median(cold_s), 3),
        "cold_start_max_s": round(max(cold_s), 3),
        "load_p50_s": round(statistics.median(load_s), 3),
        "cold_starts": cold,
        **latency_and_memory_figures(warm=warm, batch32=batch32, rss=rss, pss=pss),
        "rss_after_traffic_mb": round(rss_traffic, 1),
        "rss_after_traffic_max_mb": max(reading.rss_mb for reading in memory_traffic),
        "after_traffic": {
            "rss_per_model_mb": round(rss_traffic, 1),
            "pss_per_model_mb": round(pss_traffic, 1),
            "rss_max_mb": max(reading.rss_mb for reading in memory_traffic),
            "models_per_16gb": math.floor(HOST_MB / rss_traffic),
        },
        "triton_tree": {
            "empty": tree_empty,
            "all_loaded": tree_loaded,
            "after_traffic": tree_traffic,
            "rss_growth_per_model_mb": round(growth, 1),
            "pss_growth_per_model_mb": round(growth_pss, 1),
            "after_traffic_rss_growth_per_model_mb": round(
                (tree_traffic["rss_mb"] - tree_empty["rss_mb"]) / loaded, 1
            ),
            # 16 GB less the empty server, over what each loaded model added to the tree.
            "models_per_16gb": math.floor((HOST_MB - tree_empty["rss_mb"]) / growth),
        },
    }
    return figures, instance


def timed_invokes(placements: list, inputs_for, count: int, kind: str, *, expect: int) -> dict:
    from deployments.backends.local.runtime import invoke_placement

    samples = []
    for i in range(count):
        placement = placements[i % len(placements)]
        inputs = inputs_for(i)
        started = time.perf_counter()
        result = invoke_placement(placement=placement, inputs=inputs)
        samples.append(time.perf_counter() - started)
        assert not result.cold_start, f"{placement.version} was unloaded during the warm run"
        if i == 0:
            check_outputs(kind, result.outputs, expect)
    return summarize(samples)


def check_outputs(kind: str, outputs: list, expected_rows: int) -> None:
    """A sanity check that the answer is what the kind promises, so no figure times an error."""
    assert len(outputs) == expected_rows, f"{len(outputs)} rows for {expected_rows} texts"
    if kind == "embedding":
        assert len(outputs[0]) == 384 and abs(sum(v * v for v in outputs[0]) - 1) < 1e-3
    elif kind == "intent-classifier":
        assert outputs[0]["label"] in outputs[0]["scores"]
        assert abs(sum(outputs[0]["scores"].values()) - 1) < 1e-3


# --- The naive baseline --------------------------------------------------------------------------


def bench_baseline(instance, args, var_dir: Path) -> dict:
    """The torch + transformers baseline, loaded under distinct names one after another."""
    from bench.naive_baseline.package import build_naive_baseline_package
    from deployments.backends.local.memory import model_memory_mb
    from deployments.backends.local.packages import prepare_model_dir
    from deployments.backends.local.runtime import client_for
    from models_registry.kinds import encode_text_request, get_kind

    client = client_for(instance)
    decode = get_kind("embedding").decode_response
    texts = held_out_texts("northbank")
    loads, warm_samples, batch_samples = [], [], []

    def invoke(name: str, inputs: list) -> float:
        started = time.perf_counter()
        outputs = decode(client.invoke(name, encode_text_request(inputs)))
        elapsed = time.perf_counter() - started
        check_outputs("embedding", outputs, len(inputs))
        return elapsed

    for index in range(args.baseline_loads):
        name = f"baseline.naive-torch.v{index + 1}"
        info = build_naive_baseline_package(
            out_path=var_dir / "baseline" / name / "model.tar.gz", triton_model_name=name
        )
        model_dir = prepare_model_dir(
            package_path=info.path,
            expected_sha256=info.sha256,
            models_root=var_dir / "baseline" / "models",
        )
        # Load + first answer, timed as the platform's cold start is (package already verified
        # and unpacked here, which makes the baseline's figure slightly smaller than it would be).
        started = time.perf_counter()
        client.load_model(name, model_dir, timeout_s=300)
        load_s = time.perf_counter() - started
        at_load = model_memory_mb(instance.pid, name)
        first_s = invoke(name, [texts[0]])
        for text in texts[1:4]:
            invoke(name, [text])
        warm_samples += [
            invoke(name, [texts[4 + i % (len(texts) - 4)]])
            for i in range(args.baseline_warm_requests)
        ]
        batch_samples += [
            invoke(name, texts[i * BATCH % (len(texts) - BATCH) :][:BATCH])
            for i in range(args.baseline_batch_requests)
        ]
        after = model_memory_mb(instance.pid, name)
        client.unload_model(name, timeout_s=60)
        loads.append(
            {
                "model": name,
                "cold_start_s": round(load_s + first_s, 3),
                "load_s": round(load_s, 3),
                "rss_mb": at_load.rss_mb,
                "pss_mb": at_load.pss_mb,
                "rss_after_traffic_mb": after.rss_mb,
                "pss_after_traffic_mb": after.pss_mb,
            }
        )

    rss = statistics.median(load["rss_mb"] for load in loads)
    pss = statistics.median(load["pss_mb"] for load in loads)
    warm, batch32 = summarize(warm_samples), summarize(batch_samples)
    cold_s = [load["cold_start_s"] for load in loads]
    return {
        "description": "MiniLM in torch + transformers inside Triton's python backend, fp32",
        "triton": f"the {instance.endpoint.name} endpoint's instance",
        "loads": loads,
        "cold_start_p50_s": round(statistics.median(cold_s), 3),
        "cold_start_max_s": round(max(cold_s), 3),
        **latency_and_memory_figures(warm=warm, batch32=batch32, rss=rss, pss=pss),
        "rss_after_traffic_mb": round(
            statistics.median(x["rss_after_traffic_mb"] for x in loads), 1
        ),
        "rss_after_traffic_max_mb": max(x["rss_after_traffic_mb"] for x in loads),
    }


def latency_and_memory_figures(*, warm: dict, batch32: dict, rss: float, pss: float) -> dict:
    """The warm-latency and per-model memory figures reported alike for kinds and baseline."""
    return {
        "warm_p50_ms": warm["p50_ms"],
        "warm_p99_ms": warm["p99_ms"],
        "warm": warm,
        "batch32_p50_ms": batch32["p50_ms"],
        "batch32_p99_ms": batch32["p99_ms"],
        "batch32": batch32,
        "rss_per_model_mb": round(rss, 1),
        "pss_per_model_mb": round(pss, 1),
        "models_per_16gb": math.floor(HOST_MB / rss),
        "models_per_16gb_pss": math.floor(HOST_MB / pss),
    }


# --- Measuring -----------------------------------------------------------------------------------


def summarize(samples_s: list[float]) -> dict:
    ms = [sample * 1000 for sample in samples_s]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(max(ms), 2),
        "samples": len(ms),
    }


def triton_tree(pid: int) -> dict:
    """RSS and PSS of a tritonserver and every process under it (its python stubs)."""
    root = psutil.Process(pid)
    rss = pss = 0
    processes = 0
    mb = 1024 * 1024
    server_rss = root.memory_info().rss
    for process in [root, *root.children(recursive=True)]:
        try:
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        processes += 1
        pss += _pss_bytes(process.pid)
    return {
        "processes": processes,
        "rss_mb": round(rss / mb, 1),
        "pss_mb": round(pss / mb, 1),
        "server_rss_mb": round(server_rss / mb, 1),
    }


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# --- Output --------------------------------------------------------------------------------------


def report(kinds: dict, baseline: dict) -> None:
    columns = ["figure", *KINDS, "naive baseline", "target"]
    fields = [
        ("cold start p50 (s)", "cold_start_p50_s", f"<= {TARGETS['cold_start_p50_s']}"),
        ("cold start max (s)", "cold_start_max_s", ""),
        ("warm p50, 1 text (ms)", "warm_p50_ms", f"<= {TARGETS['warm_p50_ms']:g}"),
        ("warm p99, 1 text (ms)", "warm_p99_ms", ""),
        ("warm p50, 32 texts (ms)", "batch32_p50_ms", ""),
        ("warm p99, 32 texts (ms)", "batch32_p99_ms", ""),
        ("RSS per model (MB)", "rss_per_model_mb", f"<= {TARGETS['rss_per_model_mb']:g}"),
        ("PSS per model (MB)", "pss_per_model_mb", ""),
        ("RSS after traffic, median (MB)", "rss_after_traffic_mb", ""),
        ("RSS after traffic, max (MB)", "rss_after_traffic_max_mb", ""),
        ("models in 16 GB (RSS)", "models_per_16gb", f">= {TARGETS['models_per_16gb']}"),
        ("models in 16 GB (PSS)", "models_per_16gb_pss", ""),
        ("GPU memory per model (MB)", "gpu_memory_per_model_mb", ""),
    ]
    print_table(
        f"Serving on Triton ({kinds[KINDS[0]]['device'].upper()}, SageMaker multi-model mode), "
        "through the platform's services",
        columns,
        [
            [label, *(kinds[k].get(key, "") for k in KINDS), baseline.get(key, ""), target]
            for label, key, target in fields
        ],
    )
    for kind in KINDS:
        print_table(
            f"{kind}: cold starts (invoke_placement on a never-loaded placement)",
            ["model", "load + first answer s", "load s", "RSS at load MB", "RSS after traffic"],
            [
                [c["model"], c["cold_start_s"], c["load_s"], c["host_memory_mb"]]
                + [c["rss_after_traffic_mb"]]
                for c in kinds[kind]["cold_starts"]
            ],
        )
    print_table(
        "Triton process tree (tritonserver + stubs), all versions of a kind loaded at once",
        ["kind", "empty RSS MB", "loaded RSS MB", "growth/model MB", "PSS growth/model MB"],
        [
            [
                kind,
                kinds[kind]["triton_tree"]["empty"]["rss_mb"],
                kinds[kind]["triton_tree"]["all_loaded"]["rss_mb"],
                kinds[kind]["triton_tree"]["rss_growth_per_model_mb"],
                kinds[kind]["triton_tree"]["pss_growth_per_model_mb"],
            ]
            for kind in KINDS
        ],
    )
    print_table(
        "Naive baseline loads (torch + transformers in the python backend)",
        ["model", "load + first answer s", "load s", "RSS MB", "PSS MB", "RSS after traffic"],
        [
            [x["model"], x["cold_start_s"], x["load_s"], x["rss_mb"], x["pss_mb"]]
            + [x["rss_after_traffic_mb"]]
            for x in baseline["loads"]
        ],
    )


def summary(kinds: dict, baseline: dict, setup: dict, args) -> dict:
    intent = kinds["intent-classifier"]
    payload = {
        "cold_start_p50_s": intent["cold_start_p50_s"],
        "cold_start_max_s": intent["cold_start_max_s"],
        "warm_p50_ms": intent["warm_p50_ms"],
        "warm_p99_ms": intent["warm_p99_ms"],
        "batch32_p50_ms": intent["batch32_p50_ms"],
        "batch32_p99_ms": intent["batch32_p99_ms"],
        "rss_per_model_mb": intent["rss_per_model_mb"],
        "pss_per_model_mb": intent["pss_per_model_mb"],
        "models_per_16gb": intent["models_per_16gb"],
        "models_per_16gb_pss": intent["models_per_16gb_pss"],
        "rss_after_traffic_mb": intent["rss_after_traffic_mb"],
        "rss_after_traffic_max_mb": intent["rss_after_traffic_max_mb"],
        "device": args.device,
        "gpu_memory_per_model_mb": intent["gpu_memory_per_model_mb"],
        "triton_tree_rss_growth_per_model_mb": intent["triton_tree"]["rss_growth_per_model_mb"],
        "baseline_cold_start_p50_s": baseline["cold_start_p50_s"],
        "baseline_warm_p50_ms": baseline["warm_p50_ms"],
        "baseline_rss_per_model_mb": baseline["rss_per_model_mb"],
        "baseline_models_per_16gb": baseline["models_per_16gb"],
        "targets": TARGETS,
        "meets_targets": meets_targets(intent),
        "meets_targets_by_kind": {kind: meets_targets(kinds[kind]) for kind in KINDS},
        "vs_baseline": {
            "cold_start_speedup": round(
                baseline["cold_start_p50_s"] / intent["cold_start_p50_s"], 1
            ),
            "warm_speedup": round(baseline["warm_p50_ms"] / intent["warm_p50_ms"], 1),
            "memory_ratio": round(baseline["rss_per_model_mb"] / intent["rss_per_model_mb"], 1),
        },
        "kinds": kinds,
        "baseline": baseline,
        "setup": {
            **setup,
            "training_rows_per_version": args.rows,
            "versions_per_tenant": args.versions_per_tenant,
            "host_memory_mb_for_models_per_16gb": HOST_MB,
        },
    }
    return payload


def meets_targets(figures: dict) -> dict:
    return {
        "cold_start_p50_s": figures["cold_start_p50_s"] <= TARGETS["cold_start_p50_s"],
        "warm_p50_ms": figures["warm_p50_ms"] <= TARGETS["warm_p50_ms"],
        "rss_per_model_mb": figures["rss_per_model_mb"] <= TARGETS["rss_per_model_mb"],
        "models_per_16gb": figures["models_per_16gb"] >= TARGETS["models_per_16gb"],
    }


if __name__ == "__main__":
    main()
