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

- the shared-base layout (``models_registry.shared_base``: one loaded encoder, tenants' heads
  sent to its in-process cache) on a Triton of its own, through the runtime's bodies
  (``deployments.backends.shared_heads``) and the local Triton client: head cold start (load +
  first answer), memory per head from the process tree's growth over ``--shared-heads`` heads,
  warm latency of one ticket for one tenant and round-robin over 1,000 tenants, 32 tickets from
  32 tenants, the single-model layout's warm latency on the same Triton and client, interleaved,
  and what other mappings' parts cost (a tiny python model's memory and load, a BLS call).

Each kind's Triton is stopped once it has been measured (and every one on the way out, also on
error). Figures and the method are written up in docs/benchmarks.md.

With ``--device gpu`` (on a machine with an NVIDIA GPU and a CUDA build of onnxruntime) the
endpoints are of a GPU instance type, so every version is loaded as its GPU package (KIND_GPU,
the fp16 encoder on CUDA) and each load's GPU memory is measured; the results go to
``bench/results/serving-gpu.json``.

    python bench/serving.py [--device cpu|gpu] [--rows 240] [--versions-per-tenant 2]
        [--warm-requests 300] [--shared-heads 5000] [--shared-cold-starts 200]
        [--only-shared-base]

``--only-shared-base`` trains only the intent versions, measures the shared-base case and
updates its keys in ``bench/results/serving.json``, leaving the other figures as they were.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# Serving never reaches for the hub; the base model ships as a package.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
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
    parser.add_argument(
        "--shared-heads", type=int, default=5000, help="heads loaded to measure memory per head"
    )
    parser.add_argument(
        "--shared-cold-starts", type=int, default=200, help="head cold starts timed"
    )
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    parser.add_argument("--keep-var-dir", action="store_true", help="keep the run's state")
    parser.add_argument(
        "--only-shared-base",
        action="store_true",
        help="measure only the shared-base layout (and the single-model layout beside it) and "
        "update those figures in bench/results/serving.json, keeping the others",
    )
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
    if args.only_shared_base:
        update_shared_results(payload)
    elif args.device == "gpu":
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
    kinds_built = ("intent-classifier",) if args.only_shared_base else KINDS
    versions = build_versions(args, base, var_dir, kinds=kinds_built)
    setup["train_and_package_s"] = round(time.perf_counter() - started, 1)
    print(
        f"base encoder {'from cache' if cached else 'exported'} in {setup['base_encoder_s']} s; "
        f"{sum(len(v) for v in versions.values())} versions trained and packaged in "
        f"{setup['train_and_package_s']} s"
    )

    if args.only_shared_base:
        shared = bench_shared_base(
            versions["intent-classifier"], args, var_dir, Path(args.base_cache_dir)
        )
        report_shared(shared)
        return shared_summary(shared) | {"shared_base": shared | {"setup": setup}}
    kinds = {}
    for kind in KINDS:
        kinds[kind], instance = bench_kind(kind, versions[kind], args, instances)
        if kind == "embedding":
            # The baseline answers the embedding interface: measured on the same Triton.
            baseline = bench_baseline(instance, args, var_dir)
        stop_local_instance(instance=instance, actor=ACTOR, reason="measured")
        instances.remove(instance)
    report(kinds, baseline)
    shared = None
    if args.device == "cpu":
        shared = bench_shared_base(
            versions["intent-classifier"], args, var_dir, Path(args.base_cache_dir)
        )
        report_shared(shared)
    return summary(kinds, baseline, setup, args, shared)


# --- Tenants, versions, packages -----------------------------------------------------------------


def build_versions(args, base, var_dir: Path, *, kinds=KINDS) -> dict[str, list]:
    """Two intent-classifier and two embedding versions per demo tenant (of ``kinds``),
    packaged for Triton."""
    from models_registry import artifacts
    from models_registry.demo import tickets as demo_data
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.registry import create_model, register_version
    from tenants.models import Tenant
    from tenants.services import create_tenant

    scratch = Path(tempfile.mkdtemp(prefix="artifacts-", dir=var_dir))
    versions: dict[str, list] = {kind: [] for kind in kinds}
    for slug, info in demo_data.DEMO_TENANTS.items():
        tier = Tenant.Tier.PREMIUM if info["vertical"] == "banking" else Tenant.Tier.STANDARD
        tenant = create_tenant(slug=slug, name=info["name"], tier=tier, actor=ACTOR)
        for kind in kinds:
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


# --- The shared-base layout ----------------------------------------------------------------------

SHARED_TARGETS = {
    "models_per_16gb": 5000,
    "head_cold_start_p50_ms": 50.0,
    # Warm p50 of one ticket no worse than the single-model layout's, measured in the same run.
    "warm_p50_vs_single_model": 1.0,
}
EMBEDDING_DIM = 384

ECHO_CONFIG = """backend: "python"
max_batch_size: 32
input [ { name: "X" data_type: TYPE_FP32 dims: [ 384 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 384 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())]
            )
            for r in requests
        ]
"""
BLS_CONFIG = """backend: "python"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "RESULT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
# Times, inside one python model, a BLS call to the tiny model named by TEXT against the
# in-process alternative (a head's matrix product on the same embedding), 200 of each.
BLS_MODEL = """import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1, 384)).astype(np.float32)
        w = rng.normal(size=(384, 8)).astype(np.float32)
        for request in requests:
            target = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            target = target.reshape(-1)[0].decode()
            bls, local = [], []
            for _ in range(200):
                started = time.perf_counter()
                answer = pb_utils.InferenceRequest(
                    model_name=target,
                    requested_output_names=["Y"],
                    inputs=[pb_utils.Tensor("X", x)],
                ).exec()
                if answer.has_error():
                    raise RuntimeError(answer.error().message())
                bls.append(time.perf_counter() - started)
                started = time.perf_counter()
                logits = x @ w
                local.append(time.perf_counter() - started + 0 * float(logits[0, 0]))
            result = {
                "bls_call_p50_us": sorted(bls)[100] * 1e6,
                "bls_call_p99_us": sorted(bls)[198] * 1e6,
                "in_process_head_p50_us": sorted(local)[100] * 1e6,
            }
            data = np.array([[json.dumps(result).encode()]], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", data)]))
        return responses
"""


def bench_shared_base(versions: list, args, var_dir: Path, base_cache_dir: Path) -> dict:
    """The shared-base layout on its own Triton: one loaded encoder, tenants' heads sent to it.

    Driven through the runtime's own bodies (``deployments.backends.shared_heads``) on the local
    Triton client; the single-model layout's warm latency is measured on the same Triton, with
    the same client, interleaved with the shared one's, so the two are compared in one sitting.
    """
    from deployments.backends.local.client import TritonMultiModelClient
    from deployments.backends.local.memory import model_memory_mb
    from deployments.backends.local.packages import prepare_model_dir
    from deployments.backends.local.process import prepare_triton_home, start_triton, stop_triton
    from models_registry.shared_base import shared_base_model_dir, shared_base_model_name

    process = start_triton(
        workdir=var_dir / "shared-base-instance", backend_directory=prepare_triton_home(var_dir)
    )
    client = TritonMultiModelClient.for_process(process, timeout_s=120)
    try:
        tree_empty = triton_tree(process.pid)
        name = shared_base_model_name(kind="intent-classifier", cache_dir=base_cache_dir)
        url = shared_base_model_dir(
            kind="intent-classifier",
            models_root=var_dir / "shared-models",
            cache_dir=base_cache_dir,
            # Room for every head of the run: the memory figure must not be capped by eviction.
            head_cache_bytes=4 * 1024**3,
        )
        started = time.perf_counter()
        client.load_model(name, url, timeout_s=120)
        encoder_load_s = time.perf_counter() - started
        real = real_heads(versions, var_dir)
        texts = {head["head_id"]: held_out_texts(head["slug"]) for head in real}
        # Untimed: the encoder's first runs allocate what every later run reuses.
        for head in real:
            load_head(client, name, head)
            ask(client, name, texts[head["head_id"]][:BATCH], [head["head_id"]] * BATCH)
        encoder_reading = model_memory_mb(process.pid, name)
        tree_encoder = triton_tree(process.pid)

        labels = statistics.median_low(len(head["labels"]) for head in real)
        pool = [text for head in real for text in texts[head["head_id"]]]
        for head in real:  # loaded untimed above: a cold start needs them gone first
            client.invoke(name, shared_heads().unload_head_body(head_id=head["head_id"]))
        cold = shared_cold_starts(
            client,
            name,
            real
            + [
                synthetic_head(f"cold{i}.intents.v1", labels, seed=10_000 + i)
                for i in range(max(0, args.shared_cold_starts - len(real)))
            ],
            pool,
        )

        resident = len(list_heads(client, name))
        started = time.perf_counter()
        bulk = [
            synthetic_head(f"bulk{i}.intents.v1", labels, seed=i) for i in range(args.shared_heads)
        ]
        tree_before = triton_tree(process.pid)
        for head in bulk:
            load_head(client, name, head)
        bulk_load_s = time.perf_counter() - started
        tree_after = triton_tree(process.pid)
        heads_now = list_heads(client, name)
        assert len(heads_now) == resident + len(bulk), "a head was evicted during the run"
        # Cold starts again, now beside every bulk head: the load answer lists them all.
        cold_full = shared_cold_starts(
            client,
            name,
            [
                synthetic_head(f"late{i}.intents.v1", labels, seed=20_000 + i)
                for i in range(max(1, args.shared_cold_starts // 4))
            ],
            pool,
        )
        per_head_bytes = (tree_after["rss_mb"] - tree_before["rss_mb"]) * 1024**2 / len(bulk)
        accounted = statistics.median(heads_now[head["head_id"]] for head in bulk)

        # Warm latency, one ticket: one tenant's head, the single-model layout (same Triton and
        # client) and round-robin over 1,000 tenants' heads, interleaved so that the machine's
        # load weighs on the three alike.
        single = versions[0]
        single_url = prepare_model_dir(
            package_path=local_package(single, var_dir),
            expected_sha256=single.sha256,
            models_root=var_dir / "single-models",
        )
        client.load_model(single.triton_model_name, single_url, timeout_s=120)
        one = real[0]
        one_texts = texts[one["head_id"]]
        for text in one_texts[:3]:
            invoke_single(client, single.triton_model_name, [text])
        tenants = [head["head_id"] for head in real] + [
            head["head_id"] for head in bulk[: 1000 - len(real)]
        ]
        shared_one, single_one, interleaved = [], [], []
        for i in range(max(args.warm_requests, 2 * len(tenants))):
            text = [one_texts[4 + i % (len(one_texts) - 4)]]
            other = [pool[i % len(pool)]]
            interleaved.append(timed(ask, client, name, other, [tenants[i % len(tenants)]]))
            if i < args.warm_requests:
                shared_one.append(timed(ask, client, name, text, [one["head_id"]]))
                single_one.append(timed(invoke_single, client, single.triton_model_name, text))
        # A batch of 32 tickets from 32 different tenants, against 32 tickets of one model.
        mixed, single_batch = [], []
        for i in range(args.batch_requests):
            chosen = [tenants[(i * BATCH + j) % len(tenants)] for j in range(BATCH)]
            batch_texts = [pool[(i * BATCH + j) % len(pool)] for j in range(BATCH)]
            mixed.append(timed(ask, client, name, batch_texts, chosen))
            single_batch.append(timed(invoke_single, client, single.triton_model_name, batch_texts))
        encoder_after = model_memory_mb(process.pid, name)
        alternatives = bench_alternatives(client, process.pid, var_dir)
    finally:
        client.close()
        stop_triton(process)

    warm_one, warm_single = summarize(shared_one), summarize(single_one)
    warm_1000, batch_mixed = summarize(interleaved), summarize(mixed)
    # The encoder's stub after its first batches, holding the run's six trained heads only.
    encoder_mb = encoder_reading.rss_mb
    per_head_mb = per_head_bytes / 1024**2
    models_per_16gb = math.floor((HOST_MB - encoder_mb) / per_head_mb)
    cold_ms = [c["cold_start_ms"] for c in cold]
    figures = {
        "model": name,
        "encoder_load_s": round(encoder_load_s, 3),
        "encoder_rss_mb": encoder_mb,
        "stub_rss_at_end_mb": encoder_after.rss_mb,
        "encoder_tree_growth_mb": round(tree_encoder["rss_mb"] - tree_empty["rss_mb"], 1),
        "labels_per_head": labels,
        "heads_measured": len(bulk),
        "bulk_load_s": round(bulk_load_s, 1),
        "bytes_per_head": round(per_head_bytes),
        "head_array_bytes": round(accounted),
        "models_per_16gb": models_per_16gb,
        "heads_resident_at_end": len(heads_now),
        "head_cold_start_p50_ms": round(statistics.median(cold_ms), 2),
        "head_cold_start_p99_ms": round(percentile(cold_ms, 99), 2),
        "head_load_p50_ms": round(statistics.median(c["load_ms"] for c in cold), 2),
        "cold_starts": len(cold),
        "head_cold_start_p50_ms_all_resident": round(
            statistics.median(c["cold_start_ms"] for c in cold_full), 2
        ),
        "head_load_p50_ms_all_resident": round(
            statistics.median(c["load_ms"] for c in cold_full), 2
        ),
        "cold_starts_all_resident": len(cold_full),
        "warm_p50_ms": warm_one["p50_ms"],
        "warm_p99_ms": warm_one["p99_ms"],
        "warm": warm_one,
        "warm_1000_tenants": warm_1000,
        "batch32_mixed": batch_mixed,
        "single_model_same_run": {
            "model": single.triton_model_name,
            "warm": warm_single,
            "batch32": summarize(single_batch),
        },
        "alternatives": alternatives,
        "triton_tree": {"empty": tree_empty, "encoder": tree_encoder, "heads": tree_after},
    }
    figures["meets_targets"] = {
        "models_per_16gb": models_per_16gb >= SHARED_TARGETS["models_per_16gb"],
        "head_cold_start_p50_ms": figures["head_cold_start_p50_ms"]
        <= SHARED_TARGETS["head_cold_start_p50_ms"],
        "warm_p50_vs_single_model": warm_one["p50_ms"] <= warm_single["p50_ms"],
    }
    return figures


def real_heads(versions: list, var_dir: Path) -> list[dict]:
    """The trained heads of the run's intent versions, as the platform would send them."""
    from models_registry import artifacts
    from models_registry.kinds import get_kind
    from models_registry.triton_runtime.tenantml_head import head_digest

    head_file, labels_file = get_kind("intent-classifier").shared_base.head_files
    heads = []
    for version in versions:
        local = Path(
            artifacts.local_copy(version.artifact_uri, var_dir / "heads" / str(version.pk))
        )
        head_npz, labels_json = (local / head_file).read_bytes(), (local / labels_file).read_bytes()
        heads.append(
            {
                "head_id": version.triton_model_name,
                "slug": version.model.tenant.slug,
                "head_npz": head_npz,
                "labels_json": labels_json,
                "sha256": head_digest(head_npz, labels_json),
                "labels": json.loads(labels_json),
            }
        )
    return heads


def synthetic_head(head_id: str, labels: int, *, seed: int) -> dict:
    """A head of ``labels`` labels with random weights, in the artifact's file format."""
    from models_registry.triton_runtime.tenantml_head import head_digest

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W=rng.normal(size=(EMBEDDING_DIM, labels)).astype(np.float32),
        b=rng.normal(size=labels).astype(np.float32),
    )
    names = [f"{head_id}-intent-{index}" for index in range(labels)]
    labels_json = json.dumps(names).encode()
    return {
        "head_id": head_id,
        "head_npz": buffer.getvalue(),
        "labels_json": labels_json,
        "sha256": head_digest(buffer.getvalue(), labels_json),
        "labels": names,
    }


def shared_cold_starts(client, name: str, heads: list, pool: list) -> list[dict]:
    """Load each never-loaded head and answer its first ticket, timed."""
    cold = []
    for index, head in enumerate(heads):
        text = [pool[index % len(pool)]]
        started = time.perf_counter()
        load_head(client, name, head)
        loaded = time.perf_counter()
        answer = ask(client, name, text, [head["head_id"]])
        done = time.perf_counter()
        assert set(answer[0]["scores"]) == set(head["labels"]), "answered by another head"
        assert abs(sum(answer[0]["scores"].values()) - 1) < 1e-3
        cold.append(
            {
                "head_id": head["head_id"],
                "cold_start_ms": round((done - started) * 1000, 2),
                "load_ms": round((loaded - started) * 1000, 2),
            }
        )
    return cold


def bench_alternatives(client, pid: int, var_dir: Path) -> dict:
    """What the other mappings onto Triton would cost: a tiny python model's memory and load
    time (each per-tenant head model would be one) and the per-call overhead of a BLS call."""
    root = var_dir / "alternatives"
    copies, load_s = 4, []
    before = triton_tree(pid)
    for index in range(copies):
        url = write_tiny_model(root / f"echo{index}", "echo", ECHO_CONFIG, ECHO_MODEL)
        started = time.perf_counter()
        client.load_model(f"echo{index}", url, timeout_s=120)
        load_s.append(time.perf_counter() - started)
    after = triton_tree(pid)
    url = write_tiny_model(root / "bls", "bls", BLS_CONFIG, BLS_MODEL)
    client.load_model("bls", url, timeout_s=120)
    body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["echo0"]}]}
    client.invoke("bls", body)  # untimed first round
    rounds = [json.loads(output_of(client.invoke("bls", body), "RESULT")[0]) for _ in range(5)]
    direct = []
    x = {"inputs": [{"name": "X", "shape": [1, 384], "datatype": "FP32", "data": [0.0] * 384}]}
    for _ in range(100):
        direct.append(timed(client.invoke, "echo0", x))
    for index in range(copies):
        client.unload_model(f"echo{index}", timeout_s=60)
    client.unload_model("bls", timeout_s=60)
    return {
        "tiny_python_model_rss_growth_mb": round((after["rss_mb"] - before["rss_mb"]) / copies, 1),
        "tiny_python_model_load_p50_ms": round(statistics.median(load_s) * 1000, 1),
        "bls_call_p50_us": round(statistics.median(r["bls_call_p50_us"] for r in rounds), 1),
        "bls_call_p99_us": round(statistics.median(r["bls_call_p99_us"] for r in rounds), 1),
        "in_process_head_p50_us": round(
            statistics.median(r["in_process_head_p50_us"] for r in rounds), 2
        ),
        "http_call_to_tiny_model": summarize(direct),
    }


def write_tiny_model(url: Path, name: str, config: str, model_py: str) -> Path:
    (url / name / "1").mkdir(parents=True, exist_ok=True)
    (url / name / "config.pbtxt").write_text(config)
    (url / name / "1" / "model.py").write_text(model_py)
    return url


def shared_heads():
    from deployments.backends import shared_heads as module

    return module


def load_head(client, name: str, head: dict) -> dict:
    module = shared_heads()
    body = module.load_head_body(
        head_id=head["head_id"],
        head_npz=head["head_npz"],
        labels_json=head["labels_json"],
        sha256=head["sha256"],
    )
    return module.parse_control_answer(client.invoke(name, body))


def list_heads(client, name: str) -> dict[str, int]:
    module = shared_heads()
    return module.parse_heads_answer(client.invoke(name, module.list_heads_body()))


def ask(client, name: str, texts: list[str], head_ids: list[str]) -> list[dict]:
    module = shared_heads()
    answer = client.invoke(name, module.infer_body(texts=texts, head_ids=head_ids))
    return module.parse_infer_answer(answer, head_ids=head_ids)


def invoke_single(client, name: str, texts: list[str]) -> list[dict]:
    from models_registry.kinds import encode_text_request, get_kind

    decode = get_kind("intent-classifier").decode_response
    return decode(client.invoke(name, encode_text_request(texts)))


def local_package(version, var_dir: Path) -> Path:
    from models_registry import artifacts

    target = var_dir / "single-packages" / f"{version.pk}.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(artifacts.read_bytes(version.package_uri))
    return target


def output_of(answer: dict, name: str) -> list:
    return next(output["data"] for output in answer["outputs"] if output["name"] == name)


def timed(call, *args) -> float:
    """Seconds ``call(*args)`` took."""
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


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


def report_shared(shared: dict) -> None:
    single = shared["single_model_same_run"]
    alternatives = shared["alternatives"]
    print_table(
        "Shared-base layout (one encoder, tenants' heads in its cache) vs one model per version, "
        "same Triton and client",
        ["figure", "shared base", "one model per version", "target"],
        [
            ["warm p50, 1 ticket, 1 tenant (ms)", shared["warm_p50_ms"], single["warm"]["p50_ms"]]
            + ["<= one model per version"],
            ["warm p99, 1 ticket, 1 tenant (ms)", shared["warm_p99_ms"], single["warm"]["p99_ms"]]
            + [""],
            ["warm p50, 1 ticket, 1,000 tenants (ms)", shared["warm_1000_tenants"]["p50_ms"]]
            + ["", ""],
            ["warm p50, 32 tickets (ms)", shared["batch32_mixed"]["p50_ms"]]
            + [single["batch32"]["p50_ms"], "(shared: 32 tenants)"],
            ["head cold start p50 (ms)", shared["head_cold_start_p50_ms"], "", "<= 50"],
            ["head load p50 (ms)", shared["head_load_p50_ms"], "", ""],
            [
                f"head cold start p50, {shared['heads_measured']:,} more resident (ms)",
                shared["head_cold_start_p50_ms_all_resident"],
                "",
                "",
            ],
            ["encoder stub RSS, 6 heads (MB)", shared["encoder_rss_mb"], "", ""],
            ["stub RSS with every head (MB)", shared["stub_rss_at_end_mb"], "", ""],
            ["bytes per resident head", shared["bytes_per_head"], "", ""],
            ["tenant models in 16 GB", shared["models_per_16gb"], "", ">= 5000"],
        ],
    )
    print_table(
        "Other mappings onto Triton: what their parts cost here",
        ["figure", "value"],
        [
            ["tiny python model: RSS each (MB)", alternatives["tiny_python_model_rss_growth_mb"]],
            ["tiny python model: load p50 (ms)", alternatives["tiny_python_model_load_p50_ms"]],
            ["BLS call to a tiny model p50 (us)", alternatives["bls_call_p50_us"]],
            ["BLS call to a tiny model p99 (us)", alternatives["bls_call_p99_us"]],
            ["head in process, 1 row p50 (us)", alternatives["in_process_head_p50_us"]],
            [
                "HTTP call to a tiny model p50 (ms)",
                alternatives["http_call_to_tiny_model"]["p50_ms"],
            ],
        ],
    )


def summary(kinds: dict, baseline: dict, setup: dict, args, shared: dict | None) -> dict:
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
        "shared_base": shared,
        "setup": {
            **setup,
            "training_rows_per_version": args.rows,
            "versions_per_tenant": args.versions_per_tenant,
            "host_memory_mb_for_models_per_16gb": HOST_MB,
        },
    }
    if shared is not None:
        payload |= shared_summary(shared)
    return payload


def shared_summary(shared: dict) -> dict:
    """The shared-base layout's headline keys of bench/results/serving.json."""
    return {
        "shared_base_models_per_16gb": shared["models_per_16gb"],
        "shared_base_head_cold_start_p50_ms": shared["head_cold_start_p50_ms"],
        "shared_base_warm_p50_ms": shared["warm_p50_ms"],
        "shared_base_warm_p50_ms_1000_tenants": shared["warm_1000_tenants"]["p50_ms"],
        "shared_base_batch32_mixed_p50_ms": shared["batch32_mixed"]["p50_ms"],
        "shared_base_single_model_warm_p50_ms": shared["single_model_same_run"]["warm"]["p50_ms"],
        "shared_base_targets": SHARED_TARGETS,
        "shared_base_meets_targets": shared["meets_targets"],
    }


def update_shared_results(payload: dict) -> None:
    """Put a shared-base-only run's figures into bench/results/serving.json beside the others
    (which keep their own date); the run's command and date go with its detail."""
    from harness import RESULTS_DIR, machine

    path = RESULTS_DIR / "serving.json"
    document = json.loads(path.read_text()) if path.is_file() else {"benchmark": "serving"}
    detail = payload.pop("shared_base")
    detail["command"] = "python bench/serving.py " + " ".join(sys.argv[1:])
    detail["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    detail["machine"] = machine()
    detail["runtime_s"] = payload.pop("runtime_s")
    document.update(payload)
    document["shared_base"] = detail
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nupdated {path.relative_to(REPO)} (shared-base figures)")


def meets_targets(figures: dict) -> dict:
    return {
        "cold_start_p50_s": figures["cold_start_p50_s"] <= TARGETS["cold_start_p50_s"],
        "warm_p50_ms": figures["warm_p50_ms"] <= TARGETS["warm_p50_ms"],
        "rss_per_model_mb": figures["rss_per_model_mb"] <= TARGETS["rss_per_model_mb"],
        "models_per_16gb": figures["models_per_16gb"] >= TARGETS["models_per_16gb"],
    }


if __name__ == "__main__":
    main()
