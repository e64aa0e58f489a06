"""Synthetic intent heads in the version artifact's format (``head.npz`` + ``labels.json``), for
the shared-base serving tests: random weights, the label names each test picks."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from models_registry.triton_runtime.tenantml_head import Head, head_digest

EMBEDDING_DIM = 384


@dataclass(frozen=True)
class SyntheticHead:
    head_id: str
    head_npz: bytes
    labels_json: bytes
    sha256: str

    def head(self) -> Head:
        """The head as the offline reference computes with it."""
        return Head.from_bytes(self.head_npz, self.labels_json, sha256=self.sha256)


def synthetic_head(
    head_id: str, labels: list[str], *, seed: int, scale: float = 1.0, **extra
) -> SyntheticHead:
    """A head with random ``W`` [384 x len(labels)] and ``b`` (``scale`` their spread) and any
    ``extra`` arrays of the format (``temperature``, ``threshold``, ``out_of_scope_label``)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W=(rng.normal(size=(EMBEDDING_DIM, len(labels))) * scale).astype(np.float32),
        b=(rng.normal(size=len(labels)) * scale).astype(np.float32),
        **{name: np.asarray(value) for name, value in extra.items()},
    )
    head_npz = buffer.getvalue()
    labels_json = json.dumps(labels, ensure_ascii=False).encode()
    return SyntheticHead(head_id, head_npz, labels_json, head_digest(head_npz, labels_json))


def distinct_heads(count: int, *, prefix: str = "tenant", seed: int = 0) -> list[SyntheticHead]:
    """``count`` heads with distinct label sets (2 to 9 labels each) and distinct ids."""
    return [
        synthetic_head(
            f"{prefix}{index}.intents.v1",
            [f"{prefix}{index}-intent-{label}" for label in range(2 + index % 8)],
            seed=seed * 100_000 + index,
        )
        for index in range(count)
    ]
