"""A tenant's intent head: the few kilobytes that turn a shared encoder's embeddings into labels.

Shipped beside ``model.py`` in the intent classifier's Triton package and in the shared-base
encoder's package, so it imports only numpy and the standard library. One file format serves
both layouts: ``head.npz`` holds ``W`` [dim x n_labels] and ``b`` [n_labels] and, optionally,

- ``temperature`` (a scalar, default 1): logits are divided by it before the softmax, so the
  probabilities are calibrated on the validation split;
- ``threshold`` (a scalar; absent or NaN: none): when the highest probability is below it, the
  text fits no intent and the answer is the out-of-scope label;
- ``out_of_scope_label`` (a string; default ``"out_of_scope"``): the label answered then (and the
  name of a trained out-of-scope class, when the tenant's data has one);

and ``labels.json`` names the labels in ``W``'s column order.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os

import numpy as np

HEAD_FILE = "head.npz"
LABELS_FILE = "labels.json"
DEFAULT_OUT_OF_SCOPE_LABEL = "out_of_scope"


class HeadFormatError(ValueError):
    """A head file that cannot be served (wrong shapes, missing arrays, a bad checksum)."""


class Head:
    """One tenant's head, loaded and checked; pure numpy, safe to share across threads."""

    def __init__(
        self,
        *,
        weights: np.ndarray,
        bias: np.ndarray,
        labels: list[str],
        temperature: float = 1.0,
        threshold: float | None = None,
        out_of_scope_label: str = DEFAULT_OUT_OF_SCOPE_LABEL,
    ) -> None:
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.labels = [str(label) for label in labels]
        if self.weights.ndim != 2 or self.weights.shape[1:] != (len(self.labels),):
            raise HeadFormatError(
                f"head.npz has W {self.weights.shape}, but labels.json names "
                f"{len(self.labels)} labels."
            )
        if self.bias.shape != (len(self.labels),):
            raise HeadFormatError(
                f"head.npz has b {self.bias.shape}, but labels.json names "
                f"{len(self.labels)} labels."
            )
        if not (temperature > 0 and math.isfinite(temperature)):
            raise HeadFormatError(f"head.npz has temperature {temperature}; it must be > 0.")
        self.temperature = float(temperature)
        self.threshold = None if threshold is None or math.isnan(threshold) else float(threshold)
        self.out_of_scope_label = str(out_of_scope_label)
        self.label_array = np.array([name.encode() for name in self.labels], dtype=object)

    @property
    def dimension(self) -> int:
        """The embedding width the head expects."""
        return int(self.weights.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory the head's arrays hold."""
        return int(self.weights.nbytes + self.bias.nbytes)

    @classmethod
    def from_arrays(cls, arrays, labels: list[str]) -> Head:
        """A head from ``head.npz``'s arrays (an ``NpzFile`` or a mapping) and the label names."""
        names = set(getattr(arrays, "files", arrays))
        missing = {"W", "b"} - names
        if missing:
            raise HeadFormatError(f"head.npz lacks {', '.join(sorted(missing))}.")
        return cls(
            weights=arrays["W"],
            bias=arrays["b"],
            labels=labels,
            temperature=float(arrays["temperature"]) if "temperature" in names else 1.0,
            threshold=float(arrays["threshold"]) if "threshold" in names else None,
            out_of_scope_label=(
                str(arrays["out_of_scope_label"])
                if "out_of_scope_label" in names
                else DEFAULT_OUT_OF_SCOPE_LABEL
            ),
        )

    @classmethod
    def from_dir(cls, model_dir: str) -> Head:
        """The head stored as ``head.npz`` and ``labels.json`` in ``model_dir``."""
        with open(os.path.join(model_dir, LABELS_FILE), encoding="utf-8") as handle:
            labels = json.load(handle)
        with np.load(os.path.join(model_dir, HEAD_FILE), allow_pickle=False) as arrays:
            return cls.from_arrays(arrays, labels)

    @classmethod
    def from_bytes(cls, head_npz: bytes, labels_json: bytes, *, sha256: str | None = None) -> Head:
        """A head sent as bytes; with ``sha256``, the digest of ``head_npz + labels_json`` must
        match or nothing is loaded."""
        if sha256 is not None and head_digest(head_npz, labels_json) != sha256:
            raise HeadFormatError("The head's sha256 does not match its bytes; not loaded.")
        labels = json.loads(labels_json.decode("utf-8"))
        with np.load(io.BytesIO(head_npz), allow_pickle=False) as arrays:
            return cls.from_arrays(arrays, labels)

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``head.npz`` stores for this head (``from_arrays`` reads it back); a head
        without a threshold stores NaN."""
        return {
            "W": self.weights,
            "b": self.bias,
            "temperature": np.array(self.temperature, dtype=np.float64),
            "threshold": np.array(
                np.nan if self.threshold is None else self.threshold, dtype=np.float64
            ),
            "out_of_scope_label": np.array(self.out_of_scope_label),
        }

    def save(self, model_dir: str) -> None:
        """Write ``head.npz`` and ``labels.json`` into ``model_dir``."""
        np.savez(os.path.join(model_dir, HEAD_FILE), **self.arrays())
        with open(os.path.join(model_dir, LABELS_FILE), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.labels, ensure_ascii=False) + "\n")

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated softmax probabilities, one row per embedding, columns in label order."""
        if len(embeddings) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        logits = (embeddings @ self.weights + self.bias) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def decide(self, probabilities: np.ndarray) -> list[str]:
        """The answered label per row: the most probable one, or the out-of-scope label where
        the head has a threshold and no label reaches it."""
        best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
        answers = [self.labels[int(index)] for index in best]
        if self.threshold is not None:
            top = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
            answers = [
                self.out_of_scope_label if float(p) < self.threshold else answer
                for answer, p in zip(answers, top, strict=True)
            ]
        return answers


def head_digest(head_npz: bytes, labels_json: bytes) -> str:
    """The sha256 a head is verified by: of its ``head.npz`` bytes, then its ``labels.json``."""
    return hashlib.sha256(head_npz + labels_json).hexdigest()
