"""GPUs for the built-in kinds: the float encoder a GPU package runs, the measured check that
picks fp16 or fp32 for it, and the device a fine-tune trains on.

A package rendered for a GPU instance type carries ``encoder-gpu.onnx`` beside the int8
``encoder.onnx`` (dynamic int8 graphs run ONNX Runtime's CPU kernels, so on CUDA the encoder must
be a float one). fp16 halves its weights and runs on the GPU's tensor cores; it is used where it
keeps the kind's quality: on the demo tenants' data (``docs/serving.md``) fp16 and fp32 give the
same intent macro-F1 and recall@5 within 0.004, with a pooled-embedding cosine of 0.99999 to
fp32. A fine-tuned encoder is checked again when it is trained (``keeps_quality``) and falls back
to fp32 if fp16 costs it more than ``FP16_METRIC_TOLERANCE``.

Imported by the kinds, so it runs without Django (SageMaker training containers included).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models_registry.base_model import (
    ENCODER_FILE,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    base_encoder,
    build_once,
)

# The runtime's name for it (``tenantml_encoder.GPU_ENCODER_FILE``; the runtime imports nothing
# of the platform, so the name is written there too and a test holds the two equal).
GPU_ENCODER_FILE = "encoder-gpu.onnx"
ARTIFACT_FILE = "artifact.json"
FP16, FP32 = "fp16", "fp32"
# fp16 is kept when it loses at most this much of the kind's primary metric (absolute)...
FP16_METRIC_TOLERANCE = 0.01
# ...and no pooled embedding turns further than this cosine from its fp32 one.
FP16_MIN_COSINE = 0.999
# Bump when ``to_fp16`` changes what it writes.
FP16_CONVERTER_VERSION = 1
CUDA, CPU = "cuda", "cpu"


def to_fp16(fp32_path: Path, out_path: Path) -> None:
    """Convert an fp32 ONNX encoder to fp16, keeping int64 inputs and an fp32 output."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    # keep_io_types: the runtime feeds token ids and pools the fp32 hidden states unchanged;
    # constants beyond fp16's range (the attention mask's -inf stand-in) are clamped to it.
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(out_path))


def base_gpu_encoder(*, precision: str, cache_dir: Path | None = None) -> Path:
    """The base encoder's GPU export in ``precision``, cached beside the int8 and fp32 ones (in
    ``cache_dir``, or the base encoder's default cache)."""
    fp32 = base_encoder(quantized=False, cache_dir=cache_dir)
    if precision == FP32:
        return fp32.onnx_path
    if precision != FP16:
        raise ValueError(f"GPU precision must be {FP16!r} or {FP32!r}, not {precision!r}.")
    import onnxruntime

    inputs = {
        "fp32": fp32.cache_key,
        "converter": FP16_CONVERTER_VERSION,
        "onnxruntime": onnxruntime.__version__,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    key = f"minilm-l6-fp16-{digest}"

    def build(work_dir: Path) -> None:
        to_fp16(fp32.onnx_path, work_dir / ENCODER_FILE)
        shutil.copyfile(fp32.tokenizer_path, work_dir / TOKENIZER_FILE)
        (work_dir / MANIFEST_FILE).write_text(json.dumps({"cache_key": key, **inputs}) + "\n")

    # The fp32 entry sits directly in the cache directory: its parent is the cache.
    return build_once(target=fp32.onnx_path.parent.parent / key, build=build) / ENCODER_FILE


def artifact_gpu_encoder(
    artifact_dir: Path, *, precision: str, cache_dir: Path | None = None
) -> Path | None:
    """The float encoder a GPU package of this artifact adds as ``encoder-gpu.onnx``.

    None when the artifact carries its own (a fine-tune writes it) or cannot have one: a
    fine-tuned artifact trained before GPU packages existed runs its int8 encoder on the GPU.
    An artifact on the untuned base gets the base encoder's GPU export.
    """
    artifact_dir = Path(artifact_dir)
    if (artifact_dir / GPU_ENCODER_FILE).is_file():
        return None
    info_path = artifact_dir / ARTIFACT_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("fine_tuned"):
        return None
    return base_gpu_encoder(precision=precision, cache_dir=cache_dir)


def min_cosine(fp32_embeddings: np.ndarray, other: np.ndarray) -> float:
    """The smallest cosine between matching rows of two sets of unit-norm embeddings."""
    if len(fp32_embeddings) == 0:
        return 1.0
    return float((np.asarray(fp32_embeddings) * np.asarray(other)).sum(axis=1).min())


def keeps_quality(
    *, fp32_metric: float, fp16_metric: float, cosine: float, higher_is_better: bool = True
) -> bool:
    """Whether fp16 keeps the kind's quality: its metric within the tolerance of fp32's, and
    every embedding within ``FP16_MIN_COSINE`` of fp32's."""
    loss = (fp32_metric - fp16_metric) if higher_is_better else (fp16_metric - fp32_metric)
    return loss <= FP16_METRIC_TOLERANCE and cosine >= FP16_MIN_COSINE


def training_device(*, cuda_available: bool, environ: Mapping[str, str] = os.environ) -> str:
    """``"cuda"`` when a GPU can train: torch sees CUDA and SageMaker (``SM_NUM_GPUS``, set in
    its training containers) does not say the instance has none; else ``"cpu"``."""
    gpus = environ.get("SM_NUM_GPUS", "").strip()
    if gpus:
        try:
            if int(gpus) < 1:
                return CPU
        except ValueError:
            pass  # an unreadable count says nothing; torch decides
    return CUDA if cuda_available else CPU
