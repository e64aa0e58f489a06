"""Reply autocomplete: training time, held-out quality against the n-gram baseline, cold start,
time to first token, tokens a second and memory, on a real Triton.

Everything goes through the platform's services, as production runs them:

- training: the ``reply-autocomplete`` kind's ``train`` on each demo tenant's generated replies
  (``models_registry.demo.replies``, ``--rows`` rows, the platform's random 80/20 split), with
  the kind's default hyperparameters; the first tenant's time is ``train_seconds_1k_rows`` at
  the default 1,000 rows. Quality is the held-out next-token accuracy beside the trigram
  baseline's over the same tokens (both as the kind reports them);
- serving: each version registered, packaged (``package_version``), promoted and deployed
  (``request_deployment`` + ``run_rollout``: placement on the kind's local endpoint, one
  ``tritonserver`` in SageMaker multi-model mode, the model loaded and probed);
- cold start: a placement unloaded, then ``ensure_loaded`` (verify + unpack the package, load
  it, the model's own warm-up) and one ``generate_stream`` to its first token, per tenant and
  ``--cold-starts`` times each;
- warm streams straight to the instance's ``/v2/models/<name>/generate_stream`` (Server-Sent
  Events, greedy, ``--max-new-tokens``): time to first token (request sent → first event with
  text), tokens a second of one stream (tokens over request sent → last token) and its decode
  rate (after the first token), round-robin over the tenants' models; then 4 streams at once
  on one model (the instance runs one model copy, whose requests are answered one after
  another): total tokens a second, per stream, and their time to first token;
- the proxy: the same streams through the platform's web server (``uvicorn
  config.asgi:application``, ``/v2/models/<tenant>.<model>/generate_stream``, bearer token,
  checks, routing, counting), interleaved with direct ones so both see the same machine;
- memory: the placement's ``host_memory_mb`` (the model's python stub RSS as the platform
  measures it at load).

Client, web server, Triton (and any other load on the machine) share its cores.

    python bench/autocomplete.py [--rows 1000] [--epochs N] [--streams 60] [--max-new-tokens 64]
        [--cold-starts 2] [--proxy-streams 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness import percentile, print_table, setup_django, write_results  # noqa: E402

TARGETS = {
    "train_seconds_1k_rows": 300.0,
    "cold_start_s": 2.0,
    "ttft_warm_p50_ms": 50.0,
    "tokens_per_s_one_stream": 50.0,
}
ACTOR = "bench"
MODEL_NAME = "replies"
CONCURRENT_STREAMS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="training rows per tenant")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: the kind's own)"
    )
    parser.add_argument("--streams", type=int, default=60, help="warm single streams")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--cold-starts", type=int, default=2, help="per tenant")
    parser.add_argument(
        "--concurrent-rounds", type=int, default=6, help="streams each of the 4 clients sends"
    )
    parser.add_argument("--proxy-streams", type=int, default=30, help="each way, interleaved")
    args = parser.parse_args()

    began = time.perf_counter()
    var_dir = setup_django()
    try:
        payload = run(args, var_dir)
    finally:
        from deployments.backends.local.runtime import stop_local_instance
        from deployments.models import Instance

        for live in Instance.objects.exclude(status="stopped").exclude(pid=None):
            stop_local_instance(instance=live, actor=ACTOR, reason="measured")
        shutil.rmtree(var_dir, ignore_errors=True)
    payload["runtime_s"] = round(time.perf_counter() - began, 1)
    print(f"\nbenchmark runtime: {payload['runtime_s']:.0f} s")
    write_results("autocomplete", payload)


def run(args, var_dir: Path) -> dict:
    from deployments.backends.local.runtime import client_for
    from deployments.models import Placement

    versions = train_tenants(args, var_dir)
    models = [deploy(version) for version in versions]
    placements = [
        Placement.objects.select_related("instance", "version__model__tenant").get(
            version=model.active_version
        )
        for model in models
    ]
    instance = placements[0].instance
    port = client_for(instance).http_port
    streamer = Streamer(host=instance.host, port=port, max_new_tokens=args.max_new_tokens)
    prompts = {p.version_id: held_out_prompts(p.version.model.tenant.slug) for p in placements}

    cold = cold_starts(placements, streamer, prompts, args.cold_starts)
    # A few untimed streams per model before the warm figures.
    for placement in placements:
        for prompt in prompts[placement.version_id][:3]:
            streamer.stream(placement.version.triton_model_name, prompt)
    warm = [
        streamer.stream(
            placements[i % len(placements)].version.triton_model_name,
            prompts[placements[i % len(placements)].version_id][3 + i // len(placements)],
        )
        for i in range(args.streams)
    ]
    concurrent = concurrent_streams(placements[0], streamer, prompts, args.concurrent_rounds)
    proxy = through_proxy(placements[0], streamer, prompts, args.proxy_streams, var_dir)
    memory = [p.host_memory_mb for p in Placement.objects.filter(pk__in=[p.pk for p in placements])]

    tenants = [
        {
            "tenant": version.model.tenant.slug,
            "metric": "next_token_accuracy",
            "quality": round(version.metrics["next_token_accuracy"], 4),
            "ngram_metric": "ngram_next_token_accuracy",
            "ngram_quality": round(version.metrics["ngram_next_token_accuracy"], 4),
            "beats_ngram": version.metrics["next_token_accuracy"]
            > version.metrics["ngram_next_token_accuracy"],
            "perplexity": round(version.metrics["perplexity"], 3),
            "train_rows": version.metrics["train_rows"],
            "validation_rows": version.metrics["validation_rows"],
            "validation_tokens": version.metrics["validation_tokens"],
            "epochs": version.metrics["epochs"],
            "vocabulary_size": version.metrics["vocabulary_size"],
            "train_seconds": version.metrics["bench_train_seconds"],
        }
        for version in versions
    ]
    one = stream_figures(warm)
    figures = {
        "train_seconds_1k_rows": tenants[0]["train_seconds"],
        "tenants": tenants,
        "cold_start_s": round(statistics.median(c["cold_start_s"] for c in cold), 3),
        "ttft_warm_p50_ms": one["ttft_p50_ms"],
        "tokens_per_s_one_stream": one["tokens_per_s_p50"],
        "tokens_per_s_4_streams": {
            "total": concurrent["tokens_per_s_total"],
            "per_stream": concurrent["tokens_per_s_per_stream"],
        },
        "rss_per_model_mb": round(statistics.median(memory), 1),
    }
    detail = {
        "rows_per_tenant": args.rows,
        "max_new_tokens": args.max_new_tokens,
        "cold_starts": cold,
        "cold_start_max_s": max(c["cold_start_s"] for c in cold),
        "warm_one_stream": one,
        "four_streams": concurrent,
        "proxy": proxy,
        "rss_per_model_mb_each": memory,
    }
    report(figures, detail)
    return {**figures, "targets": TARGETS, "meets_targets": meets_targets(figures), **detail}


# --- Training, packaging, deployment -------------------------------------------------------------


def train_tenants(args, var_dir: Path) -> list:
    """One reply model per demo tenant, trained on ``args.rows`` of its replies, packaged."""
    from models_registry import artifacts
    from models_registry.dataset_files import stratified_split
    from models_registry.demo import tickets as demo_data
    from models_registry.demo.replies import generate_replies
    from models_registry.kinds import get_kind
    from models_registry.services.packaging import package_version
    from models_registry.services.registry import create_model, register_version
    from tenants.services import create_tenant

    kind = get_kind("reply-autocomplete")
    scratch = Path(tempfile.mkdtemp(prefix="artifacts-", dir=var_dir))
    versions = []
    for slug, info in demo_data.DEMO_TENANTS.items():
        tenant = create_tenant(slug=slug, name=info["name"], actor=ACTOR)
        model = create_model(tenant=tenant, name=MODEL_NAME, kind=kind.name, actor=ACTOR)
        rows = generate_replies(slug, rows=args.rows, seed=0)
        split = stratified_split(rows)
        out_dir = scratch / slug
        started = time.perf_counter()
        metrics = kind.train(
            train_rows=[rows[i] for i in split["train"]],
            validation_rows=[rows[i] for i in split["validation"]],
            out_dir=out_dir,
            hyperparameters={} if args.epochs is None else {"epochs": args.epochs},
            cache_dir=scratch,
            progress=lambda percent, message: None,
        )
        metrics["bench_train_seconds"] = round(time.perf_counter() - started, 1)
        print(
            f"{slug}: {args.rows} rows trained in {metrics['bench_train_seconds']} s "
            f"({metrics['epochs']} epochs); next-token accuracy "
            f"{metrics['next_token_accuracy']:.3f} against the trigram's "
            f"{metrics['ngram_next_token_accuracy']:.3f}",
            flush=True,
        )
        uri = artifacts.put_directory(f"artifacts/{slug}/{MODEL_NAME}/1", out_dir)
        version = register_version(model=model, actor=ACTOR, artifact_uri=uri, metrics=metrics)
        versions.append(package_version(version=version, actor=ACTOR))
    shutil.rmtree(scratch, ignore_errors=True)
    return versions


def deploy(version):
    """Promote the version and roll it out: placed and loaded on the kind's local endpoint."""
    from deployments.services import rollouts
    from models_registry.services.promotion import promote_version

    promote_version(version=version, actor=ACTOR, force=True)
    model = version.model
    model.refresh_from_db()
    deployment, _ = rollouts.request_deployment(model=model, actor=ACTOR)
    outcome = rollouts.run_rollout(deployment_id=deployment.pk)
    if not outcome.switched:
        raise SystemExit(f"{model} did not go live")
    return model


def held_out_prompts(slug: str, count: int = 200) -> list[str]:
    """Tickets (and reply starts) no version was trained on (another seed)."""
    from models_registry.demo.replies import generate_replies

    return [row["text"] for row in generate_replies(slug, rows=count, seed=1000)]


# --- Streams -------------------------------------------------------------------------------------


class Streamer:
    """Greedy generate streams over HTTP, each event timed as it arrives."""

    def __init__(
        self, *, host: str, port: int, max_new_tokens: int, token: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.max_new_tokens = max_new_tokens
        self.token = token

    def stream(self, name: str, prompt: str) -> dict:
        """One stream of model ``name``: time to first token, tokens, duration."""
        body = json.dumps(
            {
                "text_input": prompt,
                "parameters": {"max_new_tokens": self.max_new_tokens, "temperature": 0.0},
            }
        )
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        started = time.perf_counter()
        connection.request("POST", f"/v2/models/{name}/generate_stream", body, headers)
        answer = connection.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"{name}: HTTP {answer.status}: {answer.read()[:300]!r}")
        arrivals, finish = [], ""
        while line := answer.readline():
            if not line.startswith(b"data:"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(f"{name}: {event['error']}")
            if event.get("text_output"):
                arrivals.append(time.perf_counter() - started)
            finish = event.get("finish_reason") or finish
        connection.close()
        if not arrivals:
            raise RuntimeError(f"{name} generated nothing for {prompt!r}")
        return {
            "ttft_s": arrivals[0],
            "tokens": len(arrivals),
            "last_token_s": arrivals[-1],
            "finish_reason": finish,
        }


def stream_figures(samples: list[dict]) -> dict:
    ttft = [s["ttft_s"] * 1000 for s in samples]
    rates = [s["tokens"] / s["last_token_s"] for s in samples]
    decode = [
        (s["tokens"] - 1) / (s["last_token_s"] - s["ttft_s"])
        for s in samples
        if s["tokens"] > 1 and s["last_token_s"] > s["ttft_s"]
    ]
    return {
        "streams": len(samples),
        "ttft_p50_ms": round(percentile(ttft, 50), 2),
        "ttft_p99_ms": round(percentile(ttft, 99), 2),
        "tokens_per_s_p50": round(statistics.median(rates), 1),
        "decode_tokens_per_s_p50": round(statistics.median(decode), 1) if decode else None,
        "tokens_per_stream_mean": round(statistics.fmean(s["tokens"] for s in samples), 1),
        "finish_reasons": {
            reason: sum(1 for s in samples if s["finish_reason"] == reason)
            for reason in sorted({s["finish_reason"] for s in samples})
        },
    }


def cold_starts(placements: list, streamer: Streamer, prompts: dict, rounds: int) -> list[dict]:
    """Unload, then load (``ensure_loaded``) and stream to the first token, timed."""
    from deployments.backends.local.runtime import ensure_loaded, unload_placement

    cold = []
    for round_ in range(rounds):
        for placement in placements:
            unload_placement(placement=placement, actor=ACTOR, reason="cold start measured")
            started = time.perf_counter()
            outcome = ensure_loaded(placement=placement, actor=ACTOR)
            loaded_s = time.perf_counter() - started
            first = streamer.stream(
                placement.version.triton_model_name, prompts[placement.version_id][round_]
            )
            assert outcome.cold_start, f"{placement} was already loaded"
            cold.append(
                {
                    "model": placement.version.triton_model_name,
                    "load_s": round(loaded_s, 3),
                    "first_token_s": round(first["ttft_s"], 3),
                    "cold_start_s": round(loaded_s + first["ttft_s"], 3),
                }
            )
    return cold


def concurrent_streams(placement, streamer: Streamer, prompts: dict, rounds: int) -> dict:
    """Four clients streaming from one model at once, ``rounds`` streams each."""
    name = placement.version.triton_model_name
    pool = prompts[placement.version_id]
    results: list[list[dict]] = [[] for _ in range(CONCURRENT_STREAMS)]
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            for round_ in range(rounds):
                prompt = pool[50 + (index * rounds + round_) % (len(pool) - 50)]
                results[index].append(streamer.stream(name, prompt))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONCURRENT_STREAMS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    if errors:
        raise errors[0]
    samples = [sample for per_client in results for sample in per_client]
    tokens = sum(s["tokens"] for s in samples)
    return {
        "clients": CONCURRENT_STREAMS,
        "streams": len(samples),
        "wall_s": round(wall_s, 2),
        "tokens": tokens,
        "tokens_per_s_total": round(tokens / wall_s, 1),
        "tokens_per_s_per_stream": round(tokens / wall_s / CONCURRENT_STREAMS, 1),
        "ttft_p50_ms": round(percentile([s["ttft_s"] * 1000 for s in samples], 50), 2),
        "ttft_p99_ms": round(percentile([s["ttft_s"] * 1000 for s in samples], 99), 2),
    }


def through_proxy(placement, streamer: Streamer, prompts: dict, count: int, var_dir: Path) -> dict:
    """The same streams straight to Triton and through the platform's web server, alternating."""
    from proxy import free_port, start_proxy

    from tenants.services import issue_token

    token = issue_token(tenant=None, name="bench", actor=ACTOR).secret
    port = free_port()
    web = start_proxy(var_dir, port)
    public = f"{placement.version.model.tenant.slug}.{MODEL_NAME}"
    via_proxy = Streamer(
        host="127.0.0.1", port=port, max_new_tokens=streamer.max_new_tokens, token=token
    )
    name = placement.version.triton_model_name
    pool = prompts[placement.version_id]
    direct, proxied = [], []
    try:
        via_proxy.stream(public, pool[0])  # the route, token and connection warmed
        for i in range(count):
            prompt = pool[100 + i % (len(pool) - 100)]
            direct.append(streamer.stream(name, prompt))
            proxied.append(via_proxy.stream(public, prompt))
    finally:
        web.terminate()
        web.wait(timeout=30)
    direct_figures, proxy_figures = stream_figures(direct), stream_figures(proxied)
    return {
        "model": public,
        "route": f"/v2/models/{public}/generate_stream",
        "direct": direct_figures,
        "proxy": proxy_figures,
        "added_ttft_p50_ms": round(proxy_figures["ttft_p50_ms"] - direct_figures["ttft_p50_ms"], 2),
    }


# --- Report --------------------------------------------------------------------------------------


def meets_targets(figures: dict) -> dict:
    return {
        "train_seconds_1k_rows": figures["train_seconds_1k_rows"]
        <= TARGETS["train_seconds_1k_rows"],
        "quality_above_ngram_every_tenant": all(t["beats_ngram"] for t in figures["tenants"]),
        "cold_start_s": figures["cold_start_s"] <= TARGETS["cold_start_s"],
        "ttft_warm_p50_ms": figures["ttft_warm_p50_ms"] <= TARGETS["ttft_warm_p50_ms"],
        "tokens_per_s_one_stream": figures["tokens_per_s_one_stream"]
        >= TARGETS["tokens_per_s_one_stream"],
    }


def report(figures: dict, detail: dict) -> None:
    print_table(
        "Reply autocomplete: quality per demo tenant (held-out next-token accuracy)",
        ["tenant", "decoder", "trigram", "beats", "train s", "epochs", "val tokens"],
        [
            [
                t["tenant"],
                t["quality"],
                t["ngram_quality"],
                t["beats_ngram"],
                t["train_seconds"],
                t["epochs"],
                t["validation_tokens"],
            ]
            for t in figures["tenants"]
        ],
    )
    one, four, proxy = detail["warm_one_stream"], detail["four_streams"], detail["proxy"]
    met = meets_targets(figures)
    print_table(
        "Reply autocomplete: serving on a local Triton",
        ["figure", "value", "target", "met"],
        [
            [
                "train 1k rows (s)",
                figures["train_seconds_1k_rows"],
                "<= 300",
                met["train_seconds_1k_rows"],
            ],
            ["cold start p50 (s)", figures["cold_start_s"], "<= 2", met["cold_start_s"]],
            ["cold start max (s)", detail["cold_start_max_s"], "", ""],
            [
                "warm TTFT p50 (ms)",
                figures["ttft_warm_p50_ms"],
                "<= 50",
                met["ttft_warm_p50_ms"],
            ],
            ["warm TTFT p99 (ms)", one["ttft_p99_ms"], "", ""],
            [
                "tokens/s, one stream",
                figures["tokens_per_s_one_stream"],
                ">= 50",
                met["tokens_per_s_one_stream"],
            ],
            ["decode tokens/s, one stream", one["decode_tokens_per_s_p50"], "", ""],
            ["tokens/s, 4 streams total", four["tokens_per_s_total"], "", ""],
            ["tokens/s, 4 streams per stream", four["tokens_per_s_per_stream"], "", ""],
            ["TTFT p50, 4 streams (ms)", four["ttft_p50_ms"], "", ""],
            ["TTFT p50 direct (ms)", proxy["direct"]["ttft_p50_ms"], "", ""],
            ["TTFT p50 via proxy (ms)", proxy["proxy"]["ttft_p50_ms"], "", ""],
            ["tokens/s via proxy", proxy["proxy"]["tokens_per_s_p50"], "", ""],
            ["stub RSS per model (MB)", figures["rss_per_model_mb"], "", ""],
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
