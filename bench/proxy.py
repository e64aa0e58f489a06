"""The inference proxy's cost: the same requests straight to Triton and through the proxy.

A throwaway platform (SQLite, temporary state) trains and deploys N tenant intent classifiers
onto one local Triton process, then starts the platform's web server (``uvicorn
config.asgi:application``, one process, as production runs it) and measures, with one asyncio
client on keep-alive connections:

- the same KServe v2 JSON request, one text, sent straight to Triton's SageMaker-mode route
  (``/models/<name>/invoke``) and to the proxy's Open Inference Protocol route
  (``/v2/models/<tenant>.<model>/infer``, bearer token, validation, routing, counting), at
  concurrency 1 (interleaved, so both see the same machine), 8 and 32: added latency p50/p99
  and throughput ratio;
- the native route (``/api/v1/tenants/<slug>/models/<name>/invoke``) at concurrency 1, for
  reference (it adds JSON decoding of the kind's answer);
- Zipf-distributed traffic over more tenant models than fit in the memory budget: cold starts
  and hit rate of the platform's frequency-aware eviction against plain LRU, replayed through
  the real eviction policy (``bench/zipf_eviction.py``) and, with ``--zipf-live``, through the
  real proxy and Triton.

With ``--upstream-clients`` it measures only the proxy's HTTP client to Triton
(``deployments/backends/local/upstream.py``) against aiohttp's client in its place
(``bench/upstream_aiohttp.py``): the same v2 requests through the proxy served each way, the
two alternating for ``--client-rounds`` rounds at concurrency 8 and 32, with the web process's
CPU time per request; the figures are added to ``bench/results/proxy.json`` under
``upstream_clients``, the file's other keys kept.

Client, proxy and Triton share this machine's cores, so the proxy's CPU is charged to the
throughput ratio as it would be on a shared host.

    python bench/proxy.py [--models 6] [--requests 400] [--seconds 5]
    python bench/proxy.py --upstream-clients [--models 2] [--seconds 5] [--client-rounds 2]
    python bench/proxy.py --capture [--models 4] [--requests 400] [--store-delay-ms 250]

With ``--capture`` it measures request capture's cost on the request: the native route at
concurrency 1 (half the models interleaved with the other half) and 8, capture off, then on at
100 % for half the models, the proxy served with an artifact store that takes
``--store-delay-ms`` before every write (``bench/capture_slow_store.py``); the records written
and dropped are read back. The figures are added to ``bench/results/proxy.json`` under
``capture``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness import REPO, percentile, print_table, setup_django, write_results  # noqa: E402

ACTOR = "bench"
TEXT = "Where is my refund? I sent the parcel back two weeks ago."
DEFAULT_BASE_CACHE = REPO / "var" / "cache" / "base_models"
TARGETS = {"added_p50_ms_c1": 2.0, "throughput_ratio_c32": 0.8}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_fleet(count: int, base, var_dir: Path, *, start: int = 0) -> list:
    """``count`` tenants with a trained, packaged, promoted and deployed intent classifier."""
    from deployments.services import rollouts
    from models_registry import artifacts
    from models_registry.demo import tickets as demo_data
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.promotion import promote_version
    from models_registry.services.registry import create_model, register_version
    from tenants.services import create_tenant

    verticals = list(demo_data.DEMO_TENANTS)
    scratch = Path(tempfile.mkdtemp(prefix="artifacts-", dir=var_dir))
    models = []
    for index in range(start, start + count):
        slug = f"tenant-{index:02d}"
        tenant = create_tenant(slug=slug, name=slug.title(), actor=ACTOR)
        model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor=ACTOR)
        rows = demo_data.generate_tickets(verticals[index % len(verticals)], rows=120, seed=index)
        out_dir = scratch / slug
        metrics = get_kind("intent-classifier").build_artifact(
            texts=[row["text"] for row in rows],
            labels=[row["label"] for row in rows],
            out_dir=out_dir,
            base=base,
        )
        uri = artifacts.put_directory(f"artifacts/{slug}/intents/0", out_dir)
        version = register_version(model=model, actor=ACTOR, artifact_uri=uri, metrics=metrics)
        version = package_version(version=version, actor=ACTOR)
        promote_version(version=version, actor=ACTOR)
        model.refresh_from_db()
        deployment, _ = rollouts.request_deployment(model=model, actor=ACTOR)
        rollouts.run_rollout(deployment_id=deployment.pk)
        models.append(model)
    return models


UPSTREAM_CLIENTS = {
    # name: (the ASGI application uvicorn serves, the directory it is imported from)
    "platform": ("config.asgi:application", None),
    "aiohttp": ("upstream_aiohttp:application", REPO / "bench"),
    "slow-store": ("capture_slow_store:application", REPO / "bench"),
}


def start_proxy(
    var_dir: Path, port: int, extra_env: dict | None = None, *, client: str = "platform"
) -> subprocess.Popen:
    app, app_dir = UPSTREAM_CLIENTS[client]
    env = {
        **os.environ,
        "TENANTML_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        "PROXY_RATE_LIMIT_RPS": "0",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            *(["--app-dir", str(app_dir)] if app_dir else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the platform's web server did not start")


def kserve_body(texts: list[str]) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]}
    ).encode()


class Target:
    """One way of asking one tenant model: a URL, headers and a body."""

    def __init__(self, url: str, body: bytes, headers: dict) -> None:
        self.url, self.body, self.headers = url, body, headers


def targets_for(models, instance, proxy: str, token: str) -> dict[str, list[Target]]:
    body = kserve_body([TEXT])
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    direct, via_proxy, native = [], [], []
    for model in models:
        version = model.active_version
        direct.append(
            Target(
                f"http://{instance.host}:{instance.port}/models/{version.triton_model_name}/invoke",
                body,
                {"Content-Type": "application/json"},
            )
        )
        via_proxy.append(Target(f"{proxy}/v2/models/{model.tenant.slug}.intents/infer", body, auth))
        native.append(
            Target(
                f"{proxy}/api/v1/tenants/{model.tenant.slug}/models/intents/invoke",
                json.dumps({"inputs": [TEXT]}).encode(),
                auth,
            )
        )
    return {"direct": direct, "proxy": via_proxy, "native": native}


async def one(session, target: Target) -> float:
    started = time.perf_counter()
    async with session.post(target.url, data=target.body, headers=target.headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.url} answered {response.status}")
    return time.perf_counter() - started


async def interleaved(targets: dict[str, list[Target]], names: list[str], requests: int) -> dict:
    """Concurrency 1: the ways alternate request by request, so drift hits them alike."""
    import aiohttp

    samples: dict[str, list[float]] = {name: [] for name in names}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        for name in names:  # warm every connection and model first
            for target in targets[name]:
                await one(session, target)
        for index in range(requests):
            for name in names:
                target = targets[name][index % len(targets[name])]
                samples[name].append(await one(session, target))
    return samples


class SplitFleet:
    """A fleet behind a running proxy, split in two halves: the one a change is made to, and
    the plain one it is measured against in the same seconds."""

    def __init__(self, models: list, changed: list, plain: list, groups: dict) -> None:
        self.models, self.changed, self.plain, self.groups = models, changed, plain, groups

    def interleaved(self, requests: int) -> dict[str, list[float]]:
        """Concurrency 1 on the native route, the halves alternating request by request."""
        return asyncio.run(interleaved(self.groups, list(self.groups), requests))


@contextlib.contextmanager
def split_fleet(args, var_dir: Path, changed_name: str, env: dict, *, client: str = "platform"):
    """``args.models`` intent classifiers on one local Triton and the platform's web server in
    its own process; yields a SplitFleet whose first half is named ``changed_name``. The
    server and every Triton are stopped afterwards."""
    from deployments.backends.local.runtime import stop_local_instance
    from deployments.models import Instance
    from models_registry.base_model import base_encoder
    from tenants.services import issue_token

    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    models = build_fleet(max(args.models, 2), base, var_dir)
    instance = Instance.objects.get(endpoint__name="local-intent-classifier", status="healthy")
    token = issue_token(tenant=None, name="bench", actor=ACTOR).secret
    port = free_port()
    proxy = start_proxy(var_dir, port, env, client=client)
    changed, plain = models[: len(models) // 2], models[len(models) // 2 :]
    try:
        native = targets_for(models, instance, f"http://127.0.0.1:{port}", token)["native"]
        by_model = dict(zip([m.pk for m in models], native, strict=True))
        groups = {
            changed_name: [by_model[m.pk] for m in changed],
            "plain": [by_model[m.pk] for m in plain],
        }
        yield SplitFleet(models, changed, plain, groups)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor=ACTOR, reason="measured")


def ms(samples: list[float], pct: float) -> float:
    """A percentile of latencies in seconds, in milliseconds."""
    return round(percentile(samples, pct) * 1000, 3)


def c1_figures(samples: dict[str, list[float]]) -> dict:
    """Each half's p50 and p99 at concurrency 1."""
    return {name: {"p50_ms": ms(v, 50), "p99_ms": ms(v, 99)} for name, v in samples.items()}


async def saturate(targets: list[Target], concurrency: int, seconds: float) -> dict:
    """``concurrency`` workers sending back to back for ``seconds``: requests a second."""
    import aiohttp

    done = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(offset: int, session) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < deadline:
            latencies.append(await one(session, targets[index % len(targets)]))
            done += 1
            index += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets:
            await one(session, target)
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": round(done / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


async def saturate_measuring_cpu(
    targets: list[Target], concurrency: int, seconds: float, pid: int
) -> dict:
    """``saturate``, plus the CPU time process ``pid`` (the web server) spent per request."""
    import psutil

    process = psutil.Process(pid)
    before = process.cpu_times()
    figures = await saturate(targets, concurrency, seconds)
    after = process.cpu_times()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    requests = figures["rps"] * seconds
    figures["proxy_cpu_ms_per_request"] = round(cpu_s / max(requests, 1) * 1000, 3)
    return figures


def compare_upstream_clients(models, var_dir: Path, token: str, args) -> dict:
    """The proxy with its own client to Triton and with aiohttp's, alternating round by round
    (so drift hits both alike); each figure is the mean over the rounds."""
    from deployments.models import Instance

    instance = Instance.objects.get(endpoint__name="local-intent-classifier", status="healthy")
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.client_rounds):
        for client in UPSTREAM_CLIENTS:
            port = free_port()
            proxy = start_proxy(var_dir, port, client=client)
            try:
                targets = targets_for(models, instance, f"http://127.0.0.1:{port}", token)
                for concurrency in (8, 32):
                    runs.setdefault((client, concurrency), []).append(
                        asyncio.run(
                            saturate_measuring_cpu(
                                targets["proxy"], concurrency, args.seconds, proxy.pid
                            )
                        )
                    )
            finally:
                proxy.terminate()
                proxy.wait(timeout=30)
        for concurrency in (8, 32):
            runs.setdefault(("direct", concurrency), []).append(
                asyncio.run(saturate(targets["direct"], concurrency, args.seconds))
            )
    figures = {
        f"{client}_c{concurrency}": {
            key: round(sum(run[key] for run in samples) / len(samples), 3) for key in samples[0]
        }
        for (client, concurrency), samples in runs.items()
    }
    for concurrency in (8, 32):
        ours, theirs = figures[f"platform_c{concurrency}"], figures[f"aiohttp_c{concurrency}"]
        direct = figures[f"direct_c{concurrency}"]
        figures[f"throughput_ratio_platform_to_aiohttp_c{concurrency}"] = round(
            ours["rps"] / theirs["rps"], 3
        )
        figures[f"proxy_ratio_to_direct_c{concurrency}"] = {
            "platform": round(ours["rps"] / direct["rps"], 3),
            "aiohttp": round(theirs["rps"] / direct["rps"], 3),
        }
    return figures


def record_upstream_clients(figures: dict, args) -> None:
    """Add the client comparison to bench/results/proxy.json, keeping the full run's keys."""
    from datetime import UTC, datetime

    from harness import RESULTS_DIR, machine

    path = RESULTS_DIR / "proxy.json"
    document = json.loads(path.read_text()) if path.exists() else {"benchmark": "proxy"}
    document["upstream_clients"] = {
        "command": "python bench/proxy.py " + " ".join(sys.argv[1:]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "models": args.models,
        "seconds": args.seconds,
        "rounds": args.client_rounds,
        **figures,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)} (upstream_clients)")


def upstream_clients_main(args) -> None:
    var_dir = setup_django()
    from deployments.backends.local.runtime import stop_local_instance
    from deployments.models import Instance
    from models_registry.base_model import base_encoder
    from tenants.services import issue_token

    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    models = build_fleet(args.models, base, var_dir)
    token = issue_token(tenant=None, name="bench", actor=ACTOR).secret
    try:
        figures = compare_upstream_clients(models, var_dir, token, args)
    finally:
        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor=ACTOR, reason="measured")
    rows = []
    for concurrency in (8, 32):
        for client in ("direct", *UPSTREAM_CLIENTS):
            f = figures[f"{client}_c{concurrency}"]
            way = "straight to Triton" if client == "direct" else f"proxy, {client} client"
            rows.append(
                [
                    concurrency,
                    way,
                    f["p50_ms"],
                    f["p99_ms"],
                    f["rps"],
                    f.get("proxy_cpu_ms_per_request", "—"),
                ]
            )
    print_table(
        f"The proxy's client to Triton against aiohttp's, {args.models} tenant models, one text "
        f"per request, {args.client_rounds} rounds of {args.seconds:g} s",
        ["concurrency", "way", "p50 ms", "p99 ms", "requests/s", "proxy CPU ms/request"],
        rows,
    )
    record_upstream_clients(figures, args)


ZIPF_S = 1.1


def zipf_live(models, instance, var_dir: Path, token: str, args) -> dict:
    """The same Zipf trace through the real proxy and Triton under each eviction policy."""
    import urllib.request

    from zipf_eviction import zipf_trace

    from deployments.backends.local import runtime
    from deployments.models import Instance, Placement

    placements = list(
        Placement.objects.filter(instance=instance).select_related("version__model__tenant")
    )
    measured = [p.host_memory_mb or p.version.host_memory_mb or 115 for p in placements]
    budget = int(sum(measured) / len(measured) * (args.zipf_room + 0.5))
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=budget)
    ranks = zipf_trace(models=len(models), requests=args.zipf_requests, zipf_s=ZIPF_S, seed=7)
    order = list(models)
    random.Random(7).shuffle(order)
    results = {}
    for policy in ("lru", "frequency"):
        for placement in Placement.objects.filter(instance=instance, actual_state="loaded"):
            runtime.unload_placement(placement=placement, actor=ACTOR, reason="next policy")
        port = free_port()
        proxy = start_proxy(var_dir, port, {"EVICTION_POLICY": policy})
        cold, latencies = 0, []
        try:
            for rank in ranks:
                model = order[rank]
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/tenants/{model.tenant.slug}/models/"
                    "intents/invoke",
                    data=json.dumps({"inputs": [TEXT]}).encode(),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": JSON_TYPE},
                )
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=120) as response:
                    answer = json.loads(response.read())
                latencies.append(time.perf_counter() - started)
                cold += bool(answer["cold_start"])
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
        results[policy] = {
            "cold_starts": cold,
            "hit_rate": round(1 - cold / len(ranks), 4),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "budget_mb": budget,
        }
    return results


JSON_TYPE = "application/json"


def capture_main(args) -> None:
    """The proxy's latency with request capture off, then on at 100 % for half the models
    behind an artifact store that takes ``--store-delay-ms`` per write (the other half, in the
    same process and the same seconds, without capture): added to proxy.json under
    ``capture``."""
    from datetime import UTC, datetime

    from harness import RESULTS_DIR, machine

    var_dir = setup_django()
    from deployments.models import Deployment
    from models_registry import artifacts

    began = time.perf_counter()
    env = {
        "BENCH_STORE_DELAY_MS": str(args.store_delay_ms),
        "CAPTURE_SETTINGS_TTL_S": "1",
        "CAPTURE_FLUSH_INTERVAL_S": "1",
    }
    with split_fleet(args, var_dir, "captured", env, client="slow-store") as fleet:
        captured = fleet.changed
        off = fleet.interleaved(args.requests)
        off_c8 = asyncio.run(saturate(fleet.groups["captured"], 8, args.seconds))
        Deployment.objects.filter(model__in=captured).update(
            capture_enabled=True, capture_sample_percent=100.0
        )
        time.sleep(2.5)  # the serving process reads the settings within CAPTURE_SETTINGS_TTL_S
        on = fleet.interleaved(args.requests)
        on_c8 = asyncio.run(saturate(fleet.groups["captured"], 8, args.seconds))
        time.sleep(3 + 4 * args.store_delay_ms / 1000)  # the writer's last parts land
    models = fleet.models

    rows = Deployment.objects.filter(model__in=captured)
    written = sum(row.capture_records_written for row in rows)
    dropped = sum(row.capture_records_dropped for row in rows)
    parts = sum(len(artifacts.list_keys(f"capture/{m.tenant.slug}/{m.name}")) for m in captured)
    figures = {
        "command": "python bench/proxy.py " + " ".join(sys.argv[1:]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "models": len(models),
        "store_delay_ms": args.store_delay_ms,
        "c1_capture_off": c1_figures(off),
        "c1_capture_on": c1_figures(on),
        "c8_captured_models": {"capture_off": off_c8, "capture_on": on_c8},
        "captured_p50_change_ms_c1": round(ms(on["captured"], 50) - ms(off["captured"], 50), 3),
        "captured_vs_plain_p50_ms_c1": round(ms(on["captured"], 50) - ms(on["plain"], 50), 3),
        "records_written": written,
        "records_dropped": dropped,
        "part_files": parts,
        "run_seconds": round(time.perf_counter() - began, 1),
    }
    print_table(
        f"Native route, concurrency 1, {len(models)} models; capture on for {len(captured)} "
        f"behind a store taking {args.store_delay_ms} ms a write",
        ["phase", "models", "p50 ms", "p99 ms"],
        [
            [phase, name, stats["p50_ms"], stats["p99_ms"]]
            for phase, key in (("capture off", "c1_capture_off"), ("capture on", "c1_capture_on"))
            for name, stats in figures[key].items()
        ],
    )
    print(
        f"concurrency 8, captured models: off {off_c8}, on {on_c8}; records written {written}, "
        f"dropped {dropped}, in {parts} part files"
    )
    path = RESULTS_DIR / "proxy.json"
    document = json.loads(path.read_text()) if path.exists() else {"benchmark": "proxy"}
    document["capture"] = figures
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)} (capture)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6, help="tenant models deployed")
    parser.add_argument("--requests", type=int, default=400, help="per way at concurrency 1")
    parser.add_argument("--seconds", type=float, default=5.0, help="per way and concurrency")
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    parser.add_argument(
        "--zipf-models", type=int, default=12, help="tenant models in the live Zipf run (0: skip)"
    )
    parser.add_argument("--zipf-room", type=int, default=4, help="models the budget holds")
    parser.add_argument("--zipf-requests", type=int, default=300)
    parser.add_argument(
        "--upstream-clients",
        action="store_true",
        help="only compare the proxy's client to Triton with aiohttp's (added to proxy.json)",
    )
    parser.add_argument("--client-rounds", type=int, default=2, help="with --upstream-clients")
    parser.add_argument(
        "--capture",
        action="store_true",
        help="only measure request capture at 100 %% behind a slow store (added to proxy.json)",
    )
    parser.add_argument("--store-delay-ms", type=int, default=250, help="with --capture")
    args = parser.parse_args()
    if args.upstream_clients:
        upstream_clients_main(args)
        return
    if args.capture:
        capture_main(args)
        return

    var_dir = setup_django()
    from deployments.backends.local.runtime import stop_local_instance
    from deployments.models import Instance
    from models_registry.base_model import base_encoder
    from tenants.services import issue_token

    began = time.perf_counter()
    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    models = build_fleet(args.models, base, var_dir)
    instance = Instance.objects.get(endpoint__name="local-intent-classifier", status="healthy")
    token = issue_token(tenant=None, name="bench", actor=ACTOR).secret
    port = free_port()
    proxy = start_proxy(var_dir, port)
    try:
        targets = targets_for(models, instance, f"http://127.0.0.1:{port}", token)
        c1 = asyncio.run(interleaved(targets, ["direct", "proxy", "native"], args.requests))
        loads = {}
        for concurrency in (8, 32):
            for name in ("direct", "proxy"):
                loads[(name, concurrency)] = asyncio.run(
                    saturate(targets[name], concurrency, args.seconds)
                )
        proxy.terminate()
        proxy.wait(timeout=30)
        live_zipf = None
        if args.zipf_models:
            more = build_fleet(args.zipf_models - len(models), base, var_dir, start=len(models))
            live_zipf = zipf_live(models + more, instance, var_dir, token, args)
    finally:
        if proxy.poll() is None:
            proxy.terminate()
            proxy.wait(timeout=30)
        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor=ACTOR, reason="measured")

    def ms(samples, pct):
        return percentile(samples, pct) * 1000

    results = {
        "added_p50_ms_c1": round(ms(c1["proxy"], 50) - ms(c1["direct"], 50), 3),
        "added_p99_ms_c1": round(ms(c1["proxy"], 99) - ms(c1["direct"], 99), 3),
        "native_added_p50_ms_c1": round(ms(c1["native"], 50) - ms(c1["direct"], 50), 3),
        "throughput_ratio_c8": round(loads[("proxy", 8)]["rps"] / loads[("direct", 8)]["rps"], 3),
        "throughput_ratio_c32": round(
            loads[("proxy", 32)]["rps"] / loads[("direct", 32)]["rps"], 3
        ),
        "c1": {
            name: {"p50_ms": round(ms(values, 50), 3), "p99_ms": round(ms(values, 99), 3)}
            for name, values in c1.items()
        },
        "saturated": {f"{name}_c{c}": figures for (name, c), figures in loads.items()},
    }
    rows = [
        ["1", name, results["c1"][name]["p50_ms"], results["c1"][name]["p99_ms"], "—"]
        for name in ("direct", "proxy", "native")
    ]
    for (name, concurrency), figures in loads.items():
        rows.append([concurrency, name, figures["p50_ms"], figures["p99_ms"], figures["rps"]])
    print_table(
        f"Proxy vs straight to Triton, {args.models} tenant models, one text per request",
        ["concurrency", "way", "p50 ms", "p99 ms", "requests/s"],
        rows,
    )

    from zipf_eviction import compare, scenarios

    replay = compare(**scenarios(seed=7, requests=20_000)["default"])
    zipf = {
        "zipf_cold_starts": replay["frequency"]["cold_starts"],
        "zipf_cold_starts_lru": replay["lru"]["cold_starts"],
        "zipf_hit_rate": replay["frequency"]["hit_rate"],
        "zipf_hit_rate_lru": replay["lru"]["hit_rate"],
        "zipf_scenario": "200 models of 114 MB, room for 50, 20,000 requests, s=1.1 (replayed)",
    }
    results.update(zipf)
    if live_zipf is not None:
        results["zipf_live"] = live_zipf
        print_table(
            f"Zipf traffic through the proxy and Triton: {args.zipf_models} tenant models, room "
            f"for {args.zipf_room}, {args.zipf_requests} requests, s={ZIPF_S}",
            ["policy", "cold starts", "hit rate", "p50 ms", "p99 ms"],
            [
                [policy, f["cold_starts"], f["hit_rate"], f["p50_ms"], f["p99_ms"]]
                for policy, f in live_zipf.items()
            ],
        )
    print_table(
        "Zipf traffic over more models than fit (eviction policy replayed)",
        ["policy", "cold starts", "hit rate"],
        [
            ["frequency-aware", zipf["zipf_cold_starts"], zipf["zipf_hit_rate"]],
            ["plain LRU", zipf["zipf_cold_starts_lru"], zipf.get("zipf_hit_rate_lru")],
        ],
    )
    results["targets"] = TARGETS
    results["meets_targets"] = {
        "added_p50_ms_c1": results["added_p50_ms_c1"] <= TARGETS["added_p50_ms_c1"],
        "throughput_ratio_c32": results["throughput_ratio_c32"] >= TARGETS["throughput_ratio_c32"],
        "zipf_fewer_cold_starts": zipf["zipf_cold_starts"] < zipf["zipf_cold_starts_lru"],
    }
    if live_zipf is not None:
        results["meets_targets"]["zipf_live_fewer_cold_starts"] = (
            live_zipf["frequency"]["cold_starts"] < live_zipf["lru"]["cold_starts"]
        )
    results["run_seconds"] = round(time.perf_counter() - began, 1)
    results["settings"] = vars(args) | {"base_cache_dir": str(args.base_cache_dir)}
    write_results("proxy", results)


if __name__ == "__main__":
    main()
