"""Triton python-backend model for the ``intent-classifier`` kind: text → label and scores.

This file is copied verbatim as ``1/model.py`` into the kind's Triton package, so it imports only
numpy, onnxruntime, tokenizers, the standard library and ``tenantml_encoder.py`` (packaged
beside it) (plus Triton's own
``triton_python_backend_utils`` when Triton runs it). The files it loads sit beside it in ``1/``:
``encoder.onnx`` (the base encoder), ``tokenizer.json``, ``head.npz`` (``W`` [384 x n_labels],
``b`` [n_labels]) and ``labels.json`` (the label names, in head column order); a package rendered
for a GPU also carries ``encoder-gpu.onnx`` (see ``tenantml_encoder``).

Wire format (KServe v2 JSON, ``POST /models/<name>/invoke`` on a SageMaker-mode Triton)::

    request:  {"inputs": [{"name": "TEXT", "shape": [n, 1], "datatype": "BYTES",
                           "data": ["Where is my refund?", ...]}]}
    response: {"outputs": [
        {"name": "LABEL",  "datatype": "BYTES", "shape": [n, 1], "data": ["refund", ...]},
        {"name": "SCORES", "datatype": "FP32",  "shape": [n, k], "data": [p00, p01, ...]},
        {"name": "LABELS", "datatype": "BYTES", "shape": [n, k], "data": ["billing", ...]}]}

SCORES row i holds softmax probabilities in the order of LABELS row i (every row repeats the
label names, so an answer decodes without the model's config; the names are also the config
parameter ``labels``). At most 32 texts per request (``max_batch_size``); Triton's dynamic batcher
merges concurrent requests into one encoder run.
"""

from __future__ import annotations

import json
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

HEAD_FILE = "head.npz"
LABELS_FILE = "labels.json"
__all__ = ["ENCODER_FILE", "TOKENIZER_FILE", "Encoder", "Predictor"]


class Predictor:
    """The intent classifier loaded from a directory holding the files named above."""

    def __init__(self, model_dir: str, *, device: str = CPU, device_id: int = 0) -> None:
        self.encoder = Encoder(model_dir, device=device, device_id=device_id)
        with np.load(os.path.join(model_dir, HEAD_FILE)) as head:
            self.weights = head["W"].astype(np.float32)
            self.bias = head["b"].astype(np.float32)
        with open(os.path.join(model_dir, LABELS_FILE), encoding="utf-8") as handle:
            self.labels = [str(label) for label in json.load(handle)]
        if self.weights.shape[1:] != (len(self.labels),) or self.bias.shape != (len(self.labels),):
            raise ValueError(
                f"head.npz has W {self.weights.shape} and b {self.bias.shape}, "
                f"but labels.json names {len(self.labels)} labels."
            )

    def scores(self, texts: list[str]) -> np.ndarray:
        """Softmax probabilities, one row per text, columns in ``self.labels`` order."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        logits = self.encoder.embed(texts) @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, texts: list[str]) -> list[dict]:
        """``{"label": best, "scores": {label: probability}}`` for each text."""
        return [
            {
                "label": self.labels[int(row.argmax())],
                "scores": {label: float(p) for label, p in zip(self.labels, row, strict=True)},
            }
            for row in self.scores(texts)
        ]


class TritonPythonModel:
    """Triton's entry point: one Predictor per model instance, one encoder run per batch."""

    def initialize(self, args: dict) -> None:
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        device, device_id = instance_device(args)
        self.predictor = Predictor(model_dir, device=device, device_id=device_id)
        log_info(
            pb_utils, f"{args['model_name']}: {describe(self.predictor.encoder, requested=device)}"
        )
        self.label_names = np.array([name.encode() for name in self.predictor.labels], object)

    def execute(self, requests: list) -> list:
        return answer_batch(
            pb_utils,
            requests,
            kind="intent-classifier",
            compute=self.predictor.scores,
            outputs=self._outputs,
        )

    def _outputs(self, rows: np.ndarray) -> list:
        best = self.label_names[rows.argmax(axis=1)].reshape(-1, 1)
        names = np.tile(self.label_names, (len(rows), 1))
        return [
            pb_utils.Tensor("LABEL", best),
            pb_utils.Tensor("SCORES", rows),
            pb_utils.Tensor("LABELS", names),
        ]

    def finalize(self) -> None:
        self.predictor = None
