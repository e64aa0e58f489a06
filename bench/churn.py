"""Churn: more tenant models than fit, Zipf traffic through the proxy, no faults; latency under
memory pressure against the same requests with everything loaded.

A throwaway platform (SQLite, temporary state) deploys N tenant models on one local Triton
process whose memory budget holds only some of them (``--room``, as ``bench/soak.py`` sizes it:
the mean measured model times room + 0.5), runs the platform's web server and sends Zipf-
distributed requests (s = 1.1) from closed-loop clients through the proxy's native route for
``--minutes``. Every 250 ms it samples the memory the instance's model processes really hold
against the budget. Then it raises the budget so every model fits, loads them all and sends the
same clients' requests for ``--warm-seconds``: the warm p50 the churn phase is compared with.

Each layout is one entry of ``LAYOUTS``: it deploys the fleet and says which instance serves it,
with what budget, and which URL asks each tenant. ``single-model`` gives every tenant model its
own Triton model. ``shared-base`` deploys the same number of tenant models in the platform's
shared-base mode (one loaded encoder answering every tenant's head) on one instance with the
single-model layout's budget (this run's, or the one recorded in ``bench/results/churn.json``):
every head fits beside the one encoder, which is the point of the layout. Its tenants' versions
come from one trained artifact, each with another valid head (random weights, own labels), each
registered, packaged, promoted and rolled out through the platform like any version.

``--merge`` adds the layouts run to the recorded ``bench/results/churn.json`` (each with its own
command and date) and leaves the other layouts as recorded; the top-level figures are the
single-model layout's, so they change only when that layout is among those run.

    python bench/churn.py [--minutes 5] [--models 10] [--room 4] [--clients 4] \
        [--layouts single-model,shared-base] [--merge]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import RESULTS_DIR, percentile, print_table, setup_django, write_results
from proxy import DEFAULT_BASE_CACHE, build_fleet, free_port, start_proxy
from soak import TEXT, models_memory_mb

MEMORY_SAMPLE_EVERY_S = 0.25
ZIPF_S = 1.1


@dataclass
class Fleet:
    """What a layout deployed: the instance serving it, the URL of each tenant's model (most
    popular first, as the Zipf ranks index it) and the budget it churns in."""

    instance_id: int
    urls: list[str]
    budget_mb: int
    # Whether timing unloads of one loaded Triton model means anything for the layout.
    time_unloads: bool = True
    # What the layout wants said beside its figures.
    note: str = ""


def prepare_single_model(args, base, var_dir: Path) -> Fleet:
    """Each tenant model its own Triton model on the intent-classifier endpoint; the budget
    holds ``--room`` of them."""
    import random

    from deployments.models import Instance, Placement
    from deployments.services.reconciler import reconcile_fleet

    models = build_fleet(args.models, base, var_dir)
    instance = Instance.objects.get(endpoint__name="local-intent-classifier", status="healthy")
    measured = [p.host_memory_mb or 115 for p in Placement.objects.filter(instance=instance)]
    budget = int(sum(measured) / len(measured) * (args.room + 0.5))
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=budget)
    reconcile_fleet()  # trims the deployed fleet to the lowered budget
    args.single_model_budget_mb = budget  # a shared-base layout of the same run takes it
    slugs = [model.tenant.slug for model in models]
    random.Random(7).shuffle(slugs)
    urls = [f"/api/v1/tenants/{slug}/models/intents/invoke" for slug in slugs]
    return Fleet(instance_id=instance.pk, urls=urls, budget_mb=budget)


def single_model_budget_mb(args) -> int:
    """The single-model layout's budget: this run's, else the one recorded in the results."""
    if getattr(args, "single_model_budget_mb", None):
        return args.single_model_budget_mb
    recorded = RESULTS_DIR / "churn.json"
    try:
        return int(json.loads(recorded.read_text())["layouts"]["single-model"]["budget_mb"])
    except (OSError, KeyError, ValueError) as error:
        raise SystemExit(
            f"shared-base takes the single-model layout's budget: run both layouts together, "
            f"or record single-model in {recorded} first ({error!r})"
        ) from None


def prepare_shared_base(args, base, var_dir: Path) -> Fleet:
    """The same number of tenant models deployed in shared-base mode on one instance of the
    kind's shared-base endpoint, with the single-model layout's budget."""
    import random
    import tempfile

    from shared_base_mode import derived_artifact

    from deployments.backends.local import shared_base
    from deployments.models import Endpoint, Instance, Placement
    from deployments.services import rollouts
    from models_registry import artifacts
    from models_registry.demo import tickets as demo_data
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.promotion import promote_version
    from models_registry.services.registry import create_model, register_version
    from tenants.services import create_tenant

    kind, actor = "intent-classifier", "bench"
    cache = var_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "base_models").exists():  # the encoder the instance loads
        (cache / "base_models").symlink_to(Path(args.base_cache_dir).resolve())
    endpoint = shared_base.shared_base_endpoint(kind=kind, actor=actor)
    Endpoint.objects.filter(pk=endpoint.pk).update(min_instances=1, max_instances=1)

    scratch = Path(tempfile.mkdtemp(prefix="shared-artifacts-", dir=var_dir))
    trained = scratch / "trained"
    verticals = list(demo_data.DEMO_TENANTS)
    rows = demo_data.generate_tickets(verticals[0], rows=120, seed=0)
    metrics = get_kind(kind).build_artifact(
        texts=[row["text"] for row in rows],
        labels=[row["label"] for row in rows],
        out_dir=trained,
        base=base,
    )
    slugs = []
    for index in range(args.models):
        slug = f"shared-{index:02d}"
        source = trained if index == 0 else derived_artifact(trained, scratch / slug, seed=index)
        tenant = create_tenant(slug=slug, name=slug.title(), actor=actor)
        model = create_model(tenant=tenant, name="intents", kind=kind, actor=actor)
        uri = artifacts.put_directory(f"artifacts/{slug}/intents/0", source)
        version = register_version(model=model, actor=actor, artifact_uri=uri, metrics=metrics)
        version = package_version(version=version, actor=actor)
        promote_version(version=version, actor=actor)
        model.refresh_from_db()
        deployment, _ = rollouts.request_deployment(model=model, actor=actor, mode="shared-base")
        rollouts.run_rollout(deployment_id=deployment.pk)
        slugs.append(slug)

    instance = Instance.objects.get(endpoint=endpoint, status="healthy")
    placed = Placement.objects.filter(instance=instance)
    assert placed.count() == args.models, f"{placed.count()} of {args.models} heads on {instance}"
    budget = single_model_budget_mb(args)
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=budget)
    instance.refresh_from_db()
    encoder_mb = instance.shared_base_memory_mb or 0.0
    heads_kb = sum(p.host_memory_mb or 0.0 for p in placed) * 1024
    note = (
        f"shared-base: one encoder ({encoder_mb:.0f} MB measured) and all {args.models} heads "
        f"({heads_kb:.0f} kB together) fit in the single-model layout's budget of {budget} MB, "
        f"which holds {args.room} of its models: no tenant model is evicted for room"
    )
    random.Random(7).shuffle(slugs)
    urls = [f"/api/v1/tenants/{slug}/models/intents/invoke" for slug in slugs]
    return Fleet(
        instance_id=instance.pk, urls=urls, budget_mb=budget, time_unloads=False, note=note
    )


# name -> prepare(args, base, var_dir) -> Fleet.
LAYOUTS = {"single-model": prepare_single_model, "shared-base": prepare_shared_base}


class Traffic:
    """Closed-loop clients sending Zipf-ranked requests; latencies and answers by status."""

    def __init__(self, base_url: str, token: str, urls: list[str], clients: int) -> None:
        self.base_url, self.token, self.urls, self.clients = base_url, token, urls, clients
        self.latencies_s: list[float] = []
        # The answers that said they found their model loaded (``cold_start`` false).
        self.hit_latencies_s: list[float] = []
        self.answers: dict[int, int] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def send(self, url: str) -> int:
        """One request through the proxy, counted; returns its status (0: no answer)."""
        request = urllib.request.Request(
            self.base_url + url,
            data=json.dumps({"inputs": [TEXT]}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        except OSError as error:
            status, body = 0, str(error).encode()
        elapsed = time.monotonic() - started
        with self._lock:
            self.answers[status] = self.answers.get(status, 0) + 1
            if status == 200:
                self.latencies_s.append(elapsed)
                if not json.loads(body).get("cold_start", True):
                    self.hit_latencies_s.append(elapsed)
            else:
                self.errors.append(f"{status}: {body[:200].decode('utf-8', 'replace')}")
        return status

    def run(self, seconds: float) -> float:
        """Send for ``seconds``; returns the seconds it really ran."""
        from zipf_eviction import zipf_trace

        stop = threading.Event()

        def client(seed: int) -> None:
            ranks = zipf_trace(models=len(self.urls), requests=100_000, zipf_s=ZIPF_S, seed=seed)
            index = 0
            while not stop.is_set():
                url = self.urls[ranks[index % len(ranks)]]
                index += 1
                self.send(url)

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(self.clients)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
        return time.monotonic() - began


def measure_unloads(instance_id: int, rounds: int) -> dict:
    """Unload one loaded model of the instance ``rounds`` times each way, loading it back in
    between: the SageMaker front end's ``DELETE /models/<name>`` against Triton's model control
    (``POST /v2/repository/models/<name>/unload``, then the repository index polled until the
    model is unavailable). Also when its python stub process had gone, for the second way."""
    from deployments.backends.local.memory import model_memory_mb
    from deployments.backends.local.runtime import client_for
    from deployments.models import Instance

    instance = Instance.objects.get(pk=instance_id)
    client = client_for(instance)
    loaded = client.list_models()[0]
    by_delete, by_control, stub_gone = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        client.unload_through_front_end(loaded.name, 60)
        by_delete.append(time.perf_counter() - started)
        client.load_model(loaded.name, loaded.url, timeout_s=60)
        started = time.perf_counter()
        assert client.unload_model(loaded.name, timeout_s=60)
        by_control.append(time.perf_counter() - started)
        while model_memory_mb(instance.pid, loaded.name) is not None:
            time.sleep(0.005)
        stub_gone.append(time.perf_counter() - started)
        client.load_model(loaded.name, loaded.url, timeout_s=60)

    def median_ms(values: list[float]) -> float:
        return round(percentile(values, 50) * 1000, 1)

    return {
        "rounds": rounds,
        "delete_p50_ms": median_ms(by_delete),
        "delete_max_ms": round(max(by_delete) * 1000, 1),
        "model_control_p50_ms": median_ms(by_control),
        "model_control_max_ms": round(max(by_control) * 1000, 1),
        "stub_gone_after_model_control_p50_ms": median_ms(stub_gone),
    }


def run_layout(name: str, args, base, var_dir: Path, token: str, base_url: str) -> dict:
    from deployments.models import Event, Instance, Placement

    fleet = LAYOUTS[name](args, base, var_dir)
    unloads = (
        measure_unloads(fleet.instance_id, args.unload_rounds)
        if args.unload_rounds and fleet.time_unloads
        else {}
    )
    samples: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            pid = Instance.objects.values_list("pid", flat=True).get(pk=fleet.instance_id)
            samples.append(models_memory_mb(pid)[0])
            time.sleep(MEMORY_SAMPLE_EVERY_S)

    sampler = threading.Thread(target=sample)
    sampler.start()
    churn = Traffic(base_url, token, fleet.urls, args.clients)
    events_before = Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    try:
        churn_s = churn.run(args.minutes * 60)
    finally:
        sampling.set()
        sampler.join(timeout=10)
    churn_events = Event.objects.filter(pk__gt=events_before)
    loads = list(churn_events.filter(kind="placement.loaded").values_list("data", flat=True))
    cold_starts = len(loads)
    load_times_s = [data["load_time_ms"] / 1000 for data in loads if data.get("load_time_ms")]
    evictions = list(
        churn_events.filter(kind="placement.evicted").values_list("message", flat=True)
    )
    ahead_of_need = sum("keep room for cold loads" in message for message in evictions)

    # Warm: every model fits and is loaded; the same clients send the same kind of requests.
    Instance.objects.filter(pk=fleet.instance_id).update(memory_budget_mb=fleet.budget_mb * 100)
    warm = Traffic(base_url, token, fleet.urls, args.clients)
    loading = Traffic(base_url, token, fleet.urls, 1)
    for url in fleet.urls:  # one request each loads every model
        loading.send(url)
    loaded = Placement.objects.filter(instance_id=fleet.instance_id, actual_state="loaded").count()
    warm_s = warm.run(args.warm_seconds)
    Instance.objects.filter(pk=fleet.instance_id).update(memory_budget_mb=fleet.budget_mb)

    def ms(values: list[float], pct: float) -> float | None:
        return round(percentile(values, pct) * 1000, 2) if values else None

    total = sum(churn.answers.values())
    return {
        "p50_ms": ms(churn.latencies_s, 50),
        "p99_ms": ms(churn.latencies_s, 99),
        "warm_p50_ms": ms(warm.latencies_s, 50),
        "warm_p99_ms": ms(warm.latencies_s, 99),
        # Answers during the churn whose model was loaded already, and the share of them.
        "hit_p50_ms": ms(churn.hit_latencies_s, 50),
        "hit_p99_ms": ms(churn.hit_latencies_s, 99),
        "hit_share": round(len(churn.hit_latencies_s) / len(churn.latencies_s), 3)
        if churn.latencies_s
        else None,
        "requests": total,
        "requests_per_s": round(total / churn_s, 2),
        "warm_requests_per_s": round(sum(warm.answers.values()) / warm_s, 2),
        "cold_starts": cold_starts,
        "cold_start_share": round(cold_starts / total, 3) if total else None,
        # Triton's load alone (POST /models), from the loads' events: the floor under a cold start.
        "load_time_p50_ms": ms(load_times_s, 50),
        "load_time_p99_ms": ms(load_times_s, 99),
        "evictions_ahead_of_need": ahead_of_need,
        "evictions_on_a_request_path": len(evictions) - ahead_of_need,
        "errors": total
        - churn.answers.get(200, 0)
        + sum(count for status, count in warm.answers.items() if status != 200),
        "errors_sample": (churn.errors + warm.errors)[:5],
        "answers": {str(status): count for status, count in sorted(churn.answers.items())},
        "budget_mb": fleet.budget_mb,
        "max_memory_used_mb": round(max(samples), 1) if samples else None,
        "max_memory_over_budget": round(max(samples) / fleet.budget_mb, 3) if samples else None,
        "memory_samples": len(samples),
        "models_loaded_for_warm_phase": loaded,
        "unloads": unloads,
        **({"note": fleet.note} if fleet.note else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="churn phase (0.5 for a try)")
    parser.add_argument("--warm-seconds", type=float, default=30.0)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--room", type=int, default=4, help="models the memory budget holds")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--unload-rounds", type=int, default=5, help="unloads timed each way before the churn"
    )
    parser.add_argument(
        "--layouts", default="single-model", help=f"comma-separated, of: {', '.join(LAYOUTS)}"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add the layouts run to bench/results/churn.json, keeping the rest as recorded",
    )
    parser.add_argument("--base-cache-dir", type=Path, default=DEFAULT_BASE_CACHE)
    args = parser.parse_args()
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layouts {unknown}; known: {', '.join(LAYOUTS)}")

    var_dir = setup_django()
    from django.conf import settings

    from deployments.backends.local.runtime import stop_local_instance
    from deployments.models import Instance
    from models_registry.base_model import base_encoder
    from tenants.services import issue_token

    base = base_encoder(quantized=True, cache_dir=args.base_cache_dir)
    token = issue_token(tenant=None, name="churn", actor="bench").secret
    port = free_port()
    web = start_proxy(var_dir, port)
    results: dict[str, dict] = {}
    try:
        for name in layouts:
            results[name] = run_layout(name, args, base, var_dir, token, f"http://127.0.0.1:{port}")
    finally:
        web.terminate()
        web.wait(timeout=30)
        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor="bench", reason="churn finished")

    rows = [
        [
            name,
            figures["p50_ms"],
            figures["p99_ms"],
            figures["warm_p50_ms"],
            figures["requests_per_s"],
            figures["cold_starts"],
            figures["errors"],
            figures["max_memory_over_budget"],
        ]
        for name, figures in results.items()
    ]
    print_table(
        f"Churn: {args.minutes:g} min, {args.models} tenant models with room for {args.room}, "
        f"{args.clients} closed-loop clients, Zipf s = {ZIPF_S}",
        ["layout", "p50 ms", "p99 ms", "warm p50 ms", "req/s", "cold starts", "errors",
         "max memory / budget"],
        rows,
    )  # fmt: skip
    for figures in results.values():
        if figures.get("note"):
            print(figures["note"])
    settings_used = vars(args) | {
        "base_cache_dir": str(args.base_cache_dir),
        # Absent on a platform from before headroom (a baseline run of this script).
        "eviction_high_watermark": getattr(settings, "TENANTML_EVICTION_HIGH_WATERMARK", None),
        "eviction_low_watermark": getattr(settings, "TENANTML_EVICTION_LOW_WATERMARK", None),
        "eviction_policy": settings.TENANTML_EVICTION_POLICY,
    }
    settings_used.pop("single_model_budget_mb", None)
    if args.merge:
        merge_results(results, settings_used)
        return
    single = results.get("single-model", {})
    write_results(
        "churn",
        {
            "p50_ms": single.get("p50_ms"),
            "p99_ms": single.get("p99_ms"),
            "warm_p50_ms": single.get("warm_p50_ms"),
            "errors": single.get("errors"),
            "max_memory_over_budget": single.get("max_memory_over_budget"),
            "layouts": results,
            "settings": settings_used,
        },
    )


def merge_results(results: dict, settings_used: dict) -> None:
    """Add each layout run to the recorded results, with its own command, date and settings;
    the other layouts stay as recorded, and the top-level figures (the single-model layout's)
    too unless that layout is among those run."""
    import sys

    path = RESULTS_DIR / "churn.json"
    document = json.loads(path.read_text())
    for name, figures in results.items():
        document.setdefault("layouts", {})[name] = {
            **figures,
            "command": "python bench/churn.py " + " ".join(sys.argv[1:]),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": settings_used,
        }
    single = results.get("single-model")
    if single is not None:
        for key in ("p50_ms", "p99_ms", "warm_p50_ms", "errors", "max_memory_over_budget"):
            document[key] = single[key]
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"\nmerged {', '.join(results)} into {path}")


if __name__ == "__main__":
    main()
