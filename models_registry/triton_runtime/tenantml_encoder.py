"""The base encoder every built-in kind's Triton model runs: tokenize, ONNX, mean-pool.

Packaged as ``1/tenantml_encoder.py`` beside the kind's ``1/model.py`` (which imports it), so it
imports only numpy, onnxruntime, tokenizers and the standard library.

On a CPU instance it runs ``encoder.onnx`` (int8) on ONNX Runtime's CPU provider. A package
rendered for a GPU instance type (``kind: KIND_GPU``) also carries ``encoder-gpu.onnx`` (fp16 or
fp32, whichever keeps the kind's quality): there the encoder asks for the CUDA provider first and
the CPU provider second, runs ``encoder-gpu.onnx`` when CUDA is there and the int8 encoder when it
is not, and says which provider it got.
"""

from __future__ import annotations

import os
import sys

# Triton's python stub runs an isolated interpreter: it inherits PYTHONPATH but does not put it on
# sys.path. Honour it, first as Python would, so the server's environment picks numpy/onnxruntime.
for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

# A package built for a serving image carries what its Python lacks (onnxruntime, tokenizers)
# in python-packages/ beside the version directory (models_registry.runtime_layers); it comes
# after the image's own packages, so numpy stays the image's (the stub is built against it).
_VENDORED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python-packages"
)
if os.path.isdir(_VENDORED) and _VENDORED not in sys.path:
    sys.path.append(_VENDORED)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

ENCODER_FILE = "encoder.onnx"
# The float encoder a GPU package runs on CUDA (int8 MatMulInteger graphs are CPU kernels).
GPU_ENCODER_FILE = "encoder-gpu.onnx"
TOKENIZER_FILE = "tokenizer.json"
CPU, GPU = "cpu", "gpu"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
MAX_TOKENS = 128
ENCODE_BATCH_SIZE = 32

# tokenizers would otherwise start a thread per core in every loaded model's stub process; one
# host holds hundreds of models, and the batches here are at most 32 short texts.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def instance_device(args: dict) -> tuple[str, int]:
    """The device Triton gave this model instance (``initialize``'s args) and its GPU index."""
    if str(args.get("model_instance_kind", "")).upper() == "GPU":
        return GPU, int(args.get("model_instance_device_id") or 0)
    return CPU, 0


def session_plan(model_dir: str, *, device: str, device_id: int = 0) -> tuple[str, list]:
    """The encoder file and the providers to ask ONNX Runtime for, on ``device``.

    On a GPU the float encoder runs on CUDA when this ONNX Runtime has the CUDA provider;
    without it (a CPU-only build) the int8 encoder runs on the CPU, as in a CPU package.
    """
    gpu_file = os.path.join(model_dir, GPU_ENCODER_FILE)
    if device != GPU:
        return os.path.join(model_dir, ENCODER_FILE), [CPU_PROVIDER]
    cuda = (
        CUDA_PROVIDER,
        # Grow the GPU arena by what is asked, not in doubling chunks, so the memory measured
        # at load is what the model keeps holding.
        {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"},
    )
    if CUDA_PROVIDER in ort.get_available_providers() and os.path.isfile(gpu_file):
        return gpu_file, [cuda, CPU_PROVIDER]
    return os.path.join(model_dir, ENCODER_FILE), [cuda, CPU_PROVIDER]


class Encoder:
    """The base encoder: tokenizes, runs the ONNX graph and mean-pools to unit-norm vectors."""

    def __init__(self, model_dir: str, *, device: str = CPU, device_id: int = 0) -> None:
        options = ort.SessionOptions()
        # One thread and no arena: a host runs many small models side by side, and each one's
        # memory must stay what was measured at load, not grow with the largest batch seen.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path, providers = session_plan(model_dir, device=device, device_id=device_id)
        # A build without CUDA warns that it lacks the provider and runs on the next one.
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.encoder_file = os.path.basename(path)
        # What ONNX Runtime gave, first choice first: CUDA, or the CPU fallback.
        self.provider = self.session.get_providers()[0]
        self.input_names = {node.name for node in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, TOKENIZER_FILE))
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        # No fixed length: pad to the longest text of each batch.
        self.tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]")
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm mean-pooled embeddings, one float32 row per text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        # Sorting by length keeps padding (wasted encoder work) small within each chunk.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(order), ENCODE_BATCH_SIZE):
            chunk = order[start : start + ENCODE_BATCH_SIZE]
            for index, row in zip(chunk, self._embed_batch([texts[i] for i in chunk]), strict=True):
                rows[index] = row
        return np.stack(rows)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        mask = np.array([item.attention_mask for item in encodings], dtype=np.int64)
        feeds = {
            "input_ids": np.array([item.ids for item in encodings], dtype=np.int64),
            "attention_mask": mask,
        }
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.array([item.type_ids for item in encodings], np.int64)
        hidden = self.session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def describe(encoder: Encoder, *, requested: str) -> str:
    """One log line: the device asked for, the provider got and the encoder file it runs."""
    line = f"encoder {encoder.encoder_file} on {encoder.provider} ({requested} package)"
    if requested == GPU and encoder.provider != CUDA_PROVIDER:
        line += "; CUDA is not available here, so it runs on the CPU"
    return line


def log_info(pb_utils, message: str) -> None:
    """Write ``message`` to Triton's log (stderr outside Triton, or on a stub without Logger)."""
    logger = getattr(pb_utils, "Logger", None) if pb_utils is not None else None
    if logger is not None:
        logger.log_info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def answer_batch(pb_utils, requests: list, *, kind: str, compute, outputs) -> list:
    """Triton's ``execute`` for a text model: one ``compute`` over every request's texts (the
    dynamic batcher's whole batch), then each request answered with ``outputs(its rows)``; if
    anything fails, every request of the batch gets the reason instead of the stub crashing."""
    texts_per_request = []
    try:
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            texts_per_request.append([_text(value) for value in tensor.reshape(-1)])
        rows = compute([text for texts in texts_per_request for text in texts])
    except Exception as exc:  # answer every request of the batch with the reason
        error = pb_utils.TritonError(f"{kind} failed: {exc}")
        return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
    responses, start = [], 0
    for texts in texts_per_request:
        chunk = rows[start : start + len(texts)]
        start += len(texts)
        responses.append(pb_utils.InferenceResponse(output_tensors=outputs(chunk)))
    return responses


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
