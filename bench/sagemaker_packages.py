"""Packages for SageMaker's Triton image: what the runtime layer costs in size, build time and
cold start, against the plain package on the local Triton, in one run.

- versions: intent classifiers trained with the kind's ``build_artifact`` on demo tickets, each
  packaged twice: ``package_version`` (the plain Triton package the local backend loads) and
  ``image_package`` (the same plus the runtime layer, for the image's Python);
- the layer: built from scratch into an empty cache, then asked for again (the cached path);
- cold start = load + first answer of one text, on a real Triton in SageMaker multi-model mode:
  the plain package on a local Triton with the platform's virtualenv (unpack, ``POST /models``,
  invoke), and the image package on the SageMaker stand-in, whose Triton runs a Python with only
  numpy (S3 fetch, unpack, load, invoke through ``sagemaker-runtime`` with ``TargetModel``);
- warm = one-text requests round-robin over the loaded versions, on each.

    python bench/sagemaker_packages.py [--versions 4] [--warm-requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness import REPO, percentile, print_table, setup_django, write_results  # noqa: E402

ACTOR = "bench"
BUCKET = "tenantml-bench"
ROLE = "arn:aws:iam::123456789012:role/bench"
ENDPOINT = "tml-bench-mme"
DEFAULT_BASE_CACHE = REPO / "var" / "cache" / "base_models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--rows", type=int, default=120, help="training tickets per version")
    parser.add_argument("--warm-requests", type=int, default=200)
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    args = parser.parse_args()
    began = time.perf_counter()
    var_dir = setup_django()
    standin = None
    local = None
    try:
        versions = build_versions(args, var_dir)
        packages = measure_packages(versions, var_dir)
        local = start_local_triton(var_dir)
        local_figures = bench_local(local, versions, var_dir, args)
        standin = start_standin(var_dir)
        standin_figures = bench_standin(versions, args)
    finally:
        if local is not None:
            from deployments.backends.local.process import stop_triton

            stop_triton(local)
        if standin is not None:
            standin.send_signal(signal.SIGTERM)
            standin.wait(timeout=120)
        shutil.rmtree(var_dir, ignore_errors=True)
    payload = {
        "versions": len(versions),
        **packages,
        "cold_start_p50_s": {
            "local_plain_package": local_figures["cold_p50_s"],
            "standin_image_package": standin_figures["cold_p50_s"],
        },
        "warm_p50_ms": {
            "local_plain_package": local_figures["warm_p50_ms"],
            "standin_image_package": standin_figures["warm_p50_ms"],
        },
        "cold_start_ratio_image_to_plain": round(
            standin_figures["cold_p50_s"] / local_figures["cold_p50_s"], 2
        ),
        "runtime_s": round(time.perf_counter() - began, 1),
    }
    print_table(
        "Packages (MB, seconds)",
        ["figure", "value"],
        [[key, value] for key, value in packages.items()],
    )
    print_table(
        "Cold start (load + first answer) and warm one-text request, p50",
        ["package", "where", "cold s", "warm ms"],
        [
            [
                "plain",
                "local Triton, platform virtualenv",
                local_figures["cold_p50_s"],
                local_figures["warm_p50_ms"],
            ],
            [
                "image (runtime layer)",
                "stand-in Triton, numpy-only Python",
                standin_figures["cold_p50_s"],
                standin_figures["warm_p50_ms"],
            ],
        ],
    )
    print(f"\nbenchmark runtime: {payload['runtime_s']:.0f} s")
    write_results("sagemaker_packages", payload)


def build_versions(args, var_dir: Path) -> list:
    from models_registry import artifacts
    from models_registry.base_model import base_encoder
    from models_registry.demo import tickets as demo_data
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.registry import create_model, register_version
    from tenants.services import create_tenant

    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    tenant = create_tenant(slug="bench", name="Bench", actor=ACTOR)
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor=ACTOR)
    scratch = Path(tempfile.mkdtemp(prefix="artifacts-", dir=var_dir))
    versions = []
    for index in range(args.versions):
        rows = demo_data.generate_tickets("banking", rows=args.rows, seed=index)
        out_dir = scratch / str(index)
        metrics = get_kind("intent-classifier").build_artifact(
            texts=[row["text"] for row in rows],
            labels=[row["label"] for row in rows],
            out_dir=out_dir,
            base=base,
        )
        uri = artifacts.put_directory(f"artifacts/bench/{index}", out_dir)
        version = register_version(model=model, actor=ACTOR, artifact_uri=uri, metrics=metrics)
        versions.append(package_version(version=version, actor=ACTOR))
    return versions


def measure_packages(versions: list, var_dir: Path) -> dict:
    from django.conf import settings

    from models_registry.kinds import get_kind
    from models_registry.models import ModelVersion
    from models_registry.runtime_layers import build_runtime_layer, running_python
    from models_registry.services.packaging import image_package

    requirements = get_kind("intent-classifier").runtime_requirements
    cache = var_dir / "runtime-layers"
    started = time.perf_counter()
    layer = build_runtime_layer(
        requirements=requirements,
        python_version=running_python(),
        platform_version="bench",
        cache_dir=cache,
    )
    layer_build_s = time.perf_counter() - started
    started = time.perf_counter()
    build_runtime_layer(
        requirements=requirements,
        python_version=running_python(),
        platform_version="bench",
        cache_dir=cache,
    )
    layer_cached_s = time.perf_counter() - started
    settings.VAR_DIR = var_dir
    build_s = []
    for version in versions:
        started = time.perf_counter()
        image_package(
            version=version, image_uri="bench", python_version=running_python(), actor=ACTOR
        )
        build_s.append(time.perf_counter() - started)
    first = ModelVersion.objects.get(pk=versions[0].pk)
    return {
        "plain_package_mb": round(first.size_bytes / 1e6, 1),
        "image_package_mb": round(first.image_package_size_bytes / 1e6, 1),
        "layer_unpacked_mb": round(layer.size_bytes / 1e6, 1),
        "layer_files": len(layer.files),
        "layer_build_s": round(layer_build_s, 2),
        "layer_cached_s": round(layer_cached_s, 3),
        "image_package_build_p50_s": round(percentile(build_s, 50), 2),
    }


def text_request(text: str) -> bytes:
    from models_registry.kinds import get_kind

    return json.dumps(get_kind("intent-classifier").encode_request([text])).encode()


def post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read()


def start_local_triton(var_dir: Path):
    from deployments.backends.local.process import start_triton

    return start_triton(workdir=var_dir / "local-triton")


def bench_local(triton, versions: list, var_dir: Path, args) -> dict:
    from models_registry import artifacts
    from models_registry.exceptions import InvalidArtifact

    base = f"http://{triton.host}:{triton.port}"
    cold = []
    for version in versions:
        started = time.perf_counter()
        target = var_dir / "local-models" / str(version.number)
        target.mkdir(parents=True)
        archive = var_dir / f"plain-{version.number}.tar.gz"
        archive.write_bytes(artifacts.read_bytes(version.package_uri))
        artifacts.extract_tarball(archive, target, error=InvalidArtifact, label="Package")
        name = f"v{version.number}"
        post(f"{base}/models", json.dumps({"model_name": name, "url": str(target)}).encode())
        post(f"{base}/models/{name}/invoke", text_request("Where is my refund?"))
        cold.append(time.perf_counter() - started)
    warm = []
    for index in range(args.warm_requests):
        version = versions[index % len(versions)]
        started = time.perf_counter()
        post(f"{base}/models/v{version.number}/invoke", text_request("Where is my refund?"))
        warm.append(time.perf_counter() - started)
    return {
        "cold_p50_s": round(percentile(cold, 50), 3),
        "warm_p50_ms": round(percentile(warm, 50) * 1000, 2),
    }


def start_standin(var_dir: Path) -> subprocess.Popen:
    ready = var_dir / "standin.url"
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "manage.py"),
            "sagemaker_standin",
            "--port",
            "0",
            "--workdir",
            str(var_dir / "standin"),
            "--ready-file",
            str(ready),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        # Its request log would drown the tables; it stays beside the run's state.
        stderr=open(var_dir / "standin.log", "wb"),  # noqa: SIM115 - lives as long as the process
    )
    deadline = time.monotonic() + 120
    while not ready.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the SageMaker stand-in did not start")
        time.sleep(0.1)
    url = ready.read_text().strip()
    from deployments.sagemaker_standin.server import environment_for

    os.environ.update(environment_for(url, "us-east-1"))
    return process


def bench_standin(versions: list, args) -> dict:
    import boto3

    from models_registry import artifacts
    from models_registry.models import ModelVersion

    s3 = boto3.client("s3", region_name="us-east-1")
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for version in versions:
        uri = ModelVersion.objects.get(pk=version.pk).image_package_uri
        s3.put_object(
            Bucket=BUCKET, Key=f"mme/v{version.number}.tar.gz", Body=artifacts.read_bytes(uri)
        )
    sagemaker.create_model(
        ModelName=f"{ENDPOINT}-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "sagemaker-tritonserver",
            "Mode": "MultiModel",
            "ModelDataUrl": f"s3://{BUCKET}/mme/",
        },
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{ENDPOINT}-config-1",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{ENDPOINT}-model",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{ENDPOINT}-config-1")
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )

    def invoke(version) -> None:
        runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            TargetModel=f"v{version.number}.tar.gz",
            ContentType="application/json",
            Body=text_request("Where is my refund?"),
        )["Body"].read()

    cold = []
    for version in versions:
        started = time.perf_counter()
        invoke(version)
        cold.append(time.perf_counter() - started)
    warm = []
    for index in range(args.warm_requests):
        started = time.perf_counter()
        invoke(versions[index % len(versions)])
        warm.append(time.perf_counter() - started)
    sagemaker.delete_endpoint(EndpointName=ENDPOINT)
    return {
        "cold_p50_s": round(percentile(cold, 50), 3),
        "warm_p50_ms": round(percentile(warm, 50) * 1000, 2),
    }


if __name__ == "__main__":
    main()
