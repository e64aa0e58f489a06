"""Triton python-backend model for the ``embedding`` kind: text → 384-float unit vector.

This file is copied verbatim as ``1/model.py`` into the kind's Triton package, so it imports only
numpy, onnxruntime, tokenizers, the standard library and ``tenantml_encoder.py`` (packaged
beside it) (plus Triton's own
``triton_python_backend_utils`` when Triton runs it). The files it loads sit beside it in ``1/``:
``encoder.onnx`` (the tenant's encoder) and ``tokenizer.json`` (and, in a package rendered for a
GPU, ``encoder-gpu.onnx``: see ``tenantml_encoder``).

Wire format (KServe v2 JSON, ``POST /models/<name>/invoke`` on a SageMaker-mode Triton)::

    request:  {"inputs": [{"name": "TEXT", "shape": [n, 1], "datatype": "BYTES",
                           "data": ["How do I reset my password?", ...]}]}
    response: {"outputs": [
        {"name": "EMBEDDING", "datatype": "FP32", "shape": [n, 384], "data": [e00, e01, ...]}]}

Row i of EMBEDDING (row-major in ``data``) is the L2-normalized mean-pooled embedding of text i,
so a dot product is the cosine similarity. At most 32 texts per request (``max_batch_size``);
Triton's dynamic batcher merges concurrent requests into one encoder run.
"""

from __future__ import annotations

import os
import sys

# The shared encoder (tenantml_encoder.py) ships beside this file, in the package as in the
# source tree.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from tenantml_encoder import (  # noqa: E402
    CPU,
    ENCODER_FILE,
    TOKENIZER_FILE,
    Encoder,
    answer_batch,
    describe,
    instance_device,
    log_info,
)

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton: training, packaging and tests use Predictor
    pb_utils = None

EMBEDDING_DIM = 384
__all__ = ["ENCODER_FILE", "TOKENIZER_FILE", "Encoder", "Predictor"]


class Predictor:
    """The embedding model loaded from a directory holding the files named above."""

    def __init__(self, model_dir: str, *, device: str = CPU, device_id: int = 0) -> None:
        self.encoder = Encoder(model_dir, device=device, device_id=device_id)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings as a float32 array of shape [len(texts), 384]."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return self.encoder.embed(texts)

    def predict(self, texts: list[str]) -> list[list[float]]:
        """One list of 384 floats (unit L2 norm) per text."""
        return self.embed(texts).tolist()


class TritonPythonModel:
    """Triton's entry point: one Predictor per model instance, one encoder run per batch."""

    def initialize(self, args: dict) -> None:
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        device, device_id = instance_device(args)
        self.predictor = Predictor(model_dir, device=device, device_id=device_id)
        log_info(
            pb_utils, f"{args['model_name']}: {describe(self.predictor.encoder, requested=device)}"
        )

    def execute(self, requests: list) -> list:
        return answer_batch(
            pb_utils,
            requests,
            kind="embedding",
            compute=self.predictor.embed,
            outputs=lambda rows: [pb_utils.Tensor("EMBEDDING", rows)],
        )

    def finalize(self) -> None:
        self.predictor = None
