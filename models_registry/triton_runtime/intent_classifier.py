"""Triton python-backend model for the ``intent-classifier`` kind: text → label and scores.

This file is copied verbatim as ``1/model.py`` into the kind's Triton package, so it imports only
numpy, onnxruntime, tokenizers, the standard library and the two runtime modules packaged beside
it, ``tenantml_encoder.py`` (the encoder) and ``tenantml_head.py`` (the tenant's head) (plus
Triton's own ``triton_python_backend_utils`` when Triton runs it). The files it loads sit beside
it in ``1/``: ``encoder.onnx`` (the base encoder), ``tokenizer.json``, ``head.npz`` (``W``
[384 x n_labels], ``b`` [n_labels], and optionally the calibration ``temperature``, the
out-of-scope ``threshold`` and ``out_of_scope_label``; see ``tenantml_head``) and
``labels.json`` (the label names, in head column order); a package rendered for a GPU also
carries ``encoder-gpu.onnx`` (see ``tenantml_encoder``).

Wire format (KServe v2 JSON, ``POST /models/<name>/invoke`` on a SageMaker-mode Triton)::

    request:  {"inputs": [{"name": "TEXT", "shape": [n, 1], "datatype": "BYTES",
                           "data": ["Where is my refund?", ...]}]}
    response: {"outputs": [
        {"name": "LABEL",  "datatype": "BYTES", "shape": [n, 1], "data": ["refund", ...]},
        {"name": "SCORES", "datatype": "FP32",  "shape": [n, k], "data": [p00, p01, ...]},
        {"name": "LABELS", "datatype": "BYTES", "shape": [n, k], "data": ["billing", ...]}]}

SCORES row i holds the calibrated probabilities (softmax of the logits divided by the head's
temperature) of the trained labels, in the order of LABELS row i (every row repeats the label
names, so an answer decodes without the model's config; the names are also the config parameter
``labels``). LABEL is the most probable label, or the out-of-scope label when the head has a
threshold and no probability reaches it: then LABEL may name no column of SCORES (unless the
tenant trained an out-of-scope label of that name). At most 32 texts per request
(``max_batch_size``); Triton's dynamic batcher merges concurrent requests into one encoder run.
"""

from __future__ import annotations

import os
import sys

# The shared encoder and head code (tenantml_encoder.py, tenantml_head.py) ship beside this file,
# in the package as in the source tree.
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
from tenantml_head import HEAD_FILE, LABELS_FILE, Head  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton: training, packaging and tests use Predictor
    pb_utils = None

__all__ = [
    "ENCODER_FILE",
    "HEAD_FILE",
    "LABELS_FILE",
    "TOKENIZER_FILE",
    "Encoder",
    "Head",
    "Predictor",
]


class Predictor:
    """The intent classifier loaded from a directory holding the files named above."""

    def __init__(self, model_dir: str, *, device: str = CPU, device_id: int = 0) -> None:
        self.encoder = Encoder(model_dir, device=device, device_id=device_id)
        self.head = Head.from_dir(model_dir)
        self.labels = self.head.labels

    def scores(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities, one row per text, columns in ``self.labels`` order."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.head.probabilities(self.encoder.embed(texts))

    def predict(self, texts: list[str]) -> list[dict]:
        """``{"label": answer, "scores": {label: probability}}`` for each text; the answer is
        the out-of-scope label where no probability reaches the head's threshold."""
        rows = self.scores(texts)
        return [
            {
                "label": answer,
                "scores": {label: float(p) for label, p in zip(self.labels, row, strict=True)},
            }
            for answer, row in zip(self.head.decide(rows), rows, strict=True)
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

    def execute(self, requests: list) -> list:
        return answer_batch(
            pb_utils,
            requests,
            kind="intent-classifier",
            compute=self.predictor.scores,
            outputs=self._outputs,
        )

    def _outputs(self, rows: np.ndarray) -> list:
        head = self.predictor.head
        best = np.array([name.encode() for name in head.decide(rows)], object).reshape(-1, 1)
        names = np.tile(head.label_array, (len(rows), 1))
        return [
            pb_utils.Tensor("LABEL", best),
            pb_utils.Tensor("SCORES", rows),
            pb_utils.Tensor("LABELS", names),
        ]

    def finalize(self) -> None:
        self.predictor = None
