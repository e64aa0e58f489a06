"""Soak: sustained traffic over more tenant models than fit, with induced faults, for 30 minutes.

A throwaway platform (SQLite, file-system broker, temporary state) deploys N tenant intent
classifiers onto one local Triton process whose memory budget holds only some of them, then
runs the platform's web server (``uvicorn config.asgi:application``) and a Celery worker as
production does. Client threads send Zipf-distributed requests through the proxy's native route
for the whole run; the reconciler and the warm-ups are sent to the worker on their production
schedules (every minute, every hour); every ``--fault-every`` seconds the Triton process is
killed with SIGKILL. Every second the run samples the memory the instance's models really hold
(the resident memory of Triton's model processes) against the budget, and every 10 s the web
server's and the worker's resident memory.

It reports: requests and answers by status, 503s inside fault windows (from a kill until the
reconciler has restored the instance) and any error outside them, the highest memory in use
over the budget, and the web and worker memory at the start and the end (after warm-up).

    python bench/soak.py [--minutes 30] [--models 10] [--room 4] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from harness import REPO, percentile, print_table, setup_django, write_results
from proxy import DEFAULT_BASE_CACHE, build_fleet, free_port, start_proxy

TEXT = "Where is my refund? I sent the parcel back two weeks ago."
RECONCILE_EVERY_S = 60
WARM_UP_EVERY_S = 3600
SAMPLE_EVERY_S = 10
MEMORY_SAMPLE_EVERY_S = 1


def start_worker(var_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TENANTML_VAR_DIR": str(var_dir), "LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "1",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the worker's pool), in MB; a Triton
    server the process started (the reconciler restarts instances) and its model processes
    are the instance's memory, not the process's, and are left out."""
    try:
        root = psutil.Process(pid)
        processes, stack = [root], list(root.children())
        while stack:
            child = stack.pop()
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if child.name().startswith("tritonserver"):
                    continue
                processes.append(child)
                stack.extend(child.children())
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


def models_memory_mb(triton_pid: int | None) -> tuple[float, int]:
    """What the instance's models really hold: the resident memory of Triton's model processes
    (one python-backend stub per loaded model, as the budget counts them), and how many."""
    if not triton_pid:
        return 0.0, 0
    try:
        children = psutil.Process(triton_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0
    total, count = 0, 0
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if "triton_python_backend_stub" in " ".join(child.cmdline()):
                total += child.memory_info().rss
                count += 1
    return total / 2**20, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--room", type=int, default=4, help="models the memory budget holds")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--fault-every", type=float, default=600.0, help="seconds between kills")
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    args = parser.parse_args()

    var_dir = setup_django()
    from zipf_eviction import zipf_trace

    from deployments import tasks
    from deployments.backends.local.runtime import stop_local_instance
    from deployments.models import Instance, Placement
    from deployments.selectors.fleet import instances_with_memory_use
    from deployments.services.reconciler import reconcile_fleet
    from models_registry.base_model import base_encoder
    from tenants.services import issue_token

    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    models = build_fleet(args.models, base, var_dir)
    instance = Instance.objects.get(endpoint__name="local-intent-classifier", status="healthy")
    measured = [p.host_memory_mb or 115 for p in Placement.objects.filter(instance=instance)]
    budget = int(sum(measured) / len(measured) * (args.room + 0.5))
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=budget)
    # Deploying loaded every model; the reconciler trims to the lowered budget, as it would
    # within a minute of an operator lowering it.
    reconcile_fleet()
    token = issue_token(tenant=None, name="soak", actor="bench").secret
    port = free_port()
    web = start_proxy(var_dir, port)
    worker = start_worker(var_dir)
    base_url = f"http://127.0.0.1:{port}"
    slugs = [model.tenant.slug for model in models]
    random.Random(7).shuffle(slugs)

    answers: dict[int, int] = {}
    outside_faults: list[tuple[float, int, str]] = []
    latencies: list[float] = []
    fault_windows: list[list[float]] = []
    killed_pids: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def in_fault(started: float, finished: float) -> bool:
        # A request in flight at the kill (it may have been waiting for a load) or sent before
        # the instance was restored met the fault.
        return any(
            started <= (end or float("inf")) and finished >= start for start, end in fault_windows
        )

    def client(seed: int) -> None:
        ranks = zipf_trace(models=len(slugs), requests=100_000, zipf_s=1.1, seed=seed)
        index = 0
        while not stop.is_set():
            slug = slugs[ranks[index % len(ranks)]]
            index += 1
            request = urllib.request.Request(
                f"{base_url}/api/v1/tenants/{slug}/models/intents/invoke",
                data=json.dumps({"inputs": [TEXT]}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, body = response.status, b""
                    response.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read()
            except OSError as error:
                status, body = 0, str(error).encode()
            finished = time.monotonic()
            with lock:
                answers[status] = answers.get(status, 0) + 1
                if status == 200:
                    latencies.append(finished - started)
                elif not (status == 503 and in_fault(started, finished)):
                    outside_faults.append((finished, status, body[:200].decode("utf-8", "replace")))
            if status == 503:
                time.sleep(0.5)  # as a client honouring Retry-After would, roughly

    samples: list[dict] = []
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
    began = time.monotonic()
    deadline = began + args.minutes * 60
    for thread in threads:
        thread.start()
    next_reconcile = began + RECONCILE_EVERY_S
    next_warm_up = began + WARM_UP_EVERY_S
    next_fault = began + args.fault_every
    next_sample = began
    next_memory_sample = began
    memory_samples: list[list[float]] = []
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_memory_sample:
                live = Instance.objects.get(pk=instance.pk)
                used, stubs = models_memory_mb(live.pid)
                memory_samples.append([round(now - began, 1), round(used, 1), stubs])
                next_memory_sample += MEMORY_SAMPLE_EVERY_S
            if now >= next_sample:
                row = instances_with_memory_use().get(pk=instance.pk)
                samples.append(
                    {
                        "t_s": round(now - began, 1),
                        "web_rss_mb": round(tree_rss_mb(web.pid), 1),
                        "worker_rss_mb": round(tree_rss_mb(worker.pid), 1),
                        "memory_used_mb": memory_samples[-1][1],
                        "models_in_memory": memory_samples[-1][2],
                        "recorded_resident_mb": round(row.memory_used_mb, 1),
                        "budget_mb": row.memory_budget_mb,
                    }
                )
                next_sample += SAMPLE_EVERY_S
            if now >= next_fault:
                live = Instance.objects.get(pk=instance.pk)
                if live.pid and psutil.pid_exists(live.pid):
                    fault_windows.append([now, None])
                    killed_pids.add(live.pid)
                    os.kill(live.pid, signal.SIGKILL)
                next_fault += args.fault_every
            if now >= next_reconcile:
                tasks.reconcile_fleet.delay()
                next_reconcile += RECONCILE_EVERY_S
            if now >= next_warm_up:
                tasks.warm_up_fleet.delay()
                next_warm_up += WARM_UP_EVERY_S
            if fault_windows and fault_windows[-1][1] is None:
                live = Instance.objects.get(pk=instance.pk)
                restarted = live.pid and live.pid not in killed_pids
                if live.status == "healthy" and restarted and psutil.pid_exists(live.pid):
                    fault_windows[-1][1] = time.monotonic() + 2  # answers in flight meanwhile
            time.sleep(0.25)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
        web.terminate()
        web.wait(timeout=30)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor="bench", reason="soak finished")

    warm = [s for s in samples if s["t_s"] >= 120] or samples
    first, last = warm[: max(1, len(warm) // 10)], warm[-max(1, len(warm) // 10) :]

    def mean(rows, key):
        return round(sum(r[key] for r in rows) / len(rows), 1)

    total = sum(answers.values())
    results = {
        "minutes": args.minutes,
        "requests": total,
        "answers": {str(status): count for status, count in sorted(answers.items())},
        "faults_induced": len(fault_windows),
        "fault_windows_s": [
            round((end or time.monotonic()) - start, 1) for start, end in fault_windows
        ],
        "errors_outside_faults": len(outside_faults),
        "errors_outside_faults_sample": outside_faults[:5],
        "p50_ms": round(percentile(latencies, 50) * 1000, 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 2) if latencies else None,
        "memory_samples": len(memory_samples),
        "max_memory_used_mb": max(used for _, used, _ in memory_samples),
        "max_memory_over_budget": round(max(used for _, used, _ in memory_samples) / budget, 3),
        "budget_exceeded_samples": sum(used > budget for _, used, _ in memory_samples),
        "web_rss_mb_start": mean(first, "web_rss_mb"),
        "web_rss_mb_end": mean(last, "web_rss_mb"),
        "worker_rss_mb_start": mean(first, "worker_rss_mb"),
        "worker_rss_mb_end": mean(last, "worker_rss_mb"),
        "settings": vars(args) | {"base_cache_dir": str(args.base_cache_dir), "budget_mb": budget},
        "samples": samples,
    }
    print_table(
        f"Soak: {args.minutes:g} min, {args.models} tenant models with room for {args.room}, "
        f"{args.clients} clients, a Triton kill every {args.fault_every:g} s",
        ["figure", "value"],
        [
            ["requests", total],
            ["answers by status", results["answers"]],
            ["faults induced", results["faults_induced"]],
            ["errors outside fault windows", results["errors_outside_faults"]],
            ["p50 / p99 ms (200s)", f"{results['p50_ms']} / {results['p99_ms']}"],
            [
                "highest model memory / budget (sampled each second)",
                f"{results['max_memory_used_mb']} / {budget} MB",
            ],
            ["samples over budget", results["budget_exceeded_samples"]],
            [
                "web RSS MB, start → end",
                f"{results['web_rss_mb_start']} → {results['web_rss_mb_end']}",
            ],
            [
                "worker RSS MB, start → end",
                f"{results['worker_rss_mb_start']} → {results['worker_rss_mb_end']}",
            ],
        ],
    )
    write_results("soak", results)


if __name__ == "__main__":
    main()
