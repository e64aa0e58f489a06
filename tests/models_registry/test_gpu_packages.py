"""Packages for GPU instance types: rendered with ``KIND_GPU`` and the fp16 encoder, asking ONNX
Runtime for CUDA first and the CPU second; the fp16 check that picks the encoder's precision;
and the device a fine-tune trains on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from models_registry.demo.tickets import generate_pairs
from models_registry.kinds import embedding as embedding_kind
from models_registry.kinds import get_kind, gpu
from models_registry.kinds.intent_classifier import f1_per_label
from models_registry.services.packaging import device_model_dir
from models_registry.triton_packages import (
    CPU,
    GPU,
    GPU_ENCODER_FILE,
    model_entries,
    render_config,
)
from models_registry.triton_runtime import tenantml_encoder
from models_registry.triton_runtime.intent_classifier import Predictor as IntentPredictor
from tests.factories import ModelVersionFactory
from tests.serving_fixtures import INTENT_TRAINING_ROWS


@pytest.fixture
def base_var_dir(settings, base_encoder_cache_dir):
    """VAR_DIR set to the session's, so the kinds find the base encoders already exported."""
    settings.VAR_DIR = base_encoder_cache_dir.parent.parent
    return settings.VAR_DIR


def _model_config(text: str):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_the_gpu_encoder_has_one_name_in_the_runtime_and_the_platform():
    assert tenantml_encoder.GPU_ENCODER_FILE == gpu.GPU_ENCODER_FILE == GPU_ENCODER_FILE


def test_a_gpu_config_puts_the_model_on_every_gpu_and_a_cpu_config_on_the_cpu(intent_artifact):
    signature = get_kind("intent-classifier").triton_signature(intent_artifact)

    on_gpu = _model_config(render_config(signature=signature, max_batch_size=32, device=GPU))
    on_cpu = _model_config(render_config(signature=signature, max_batch_size=32, device=CPU))

    # KIND_GPU is 1, KIND_CPU 2; no "gpus" list: Triton places the group on every GPU it sees.
    assert [(g.count, g.kind, list(g.gpus)) for g in on_gpu.instance_group] == [(1, 1, [])]
    assert [(g.count, g.kind) for g in on_cpu.instance_group] == [(1, 2)]
    assert on_gpu.output == on_cpu.output and on_gpu.parameters == on_cpu.parameters


def test_a_gpu_package_adds_the_fp16_encoder_and_a_cpu_package_leaves_it_out(tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    for name in ("encoder.onnx", "tokenizer.json", GPU_ENCODER_FILE):
        (artifact / name).write_bytes(name.encode())
    (artifact / "artifact.json").write_text('{"kind": "embedding", "fine_tuned": true}')

    cpu_files = {e.name for e in model_entries(kind="embedding", artifact_dir=artifact)}
    gpu_files = {e.name for e in model_entries(kind="embedding", artifact_dir=artifact, device=GPU)}

    assert f"1/{GPU_ENCODER_FILE}" not in cpu_files  # the CPU package is what it always was
    assert gpu_files == cpu_files | {f"1/{GPU_ENCODER_FILE}"}
    with pytest.raises(Exception, match="not 'tpu'"):
        model_entries(kind="embedding", artifact_dir=artifact, device="tpu")


@pytest.mark.django_db
def test_a_version_rendered_for_a_gpu_carries_the_base_fp16_encoder_and_answers_on_the_cpu_here(
    intent_artifact, base_var_dir, tmp_path
):
    version = ModelVersionFactory(
        model__kind="intent-classifier", artifact_uri=str(intent_artifact), sha256="ab" * 32
    )

    root = device_model_dir(version=version, device=GPU, models_root=tmp_path)

    model_dir = root / version.triton_model_name
    config = _model_config((model_dir / "config.pbtxt").read_text())
    assert [g.kind for g in config.instance_group] == [1]  # KIND_GPU
    encoder = model_dir / "1" / GPU_ENCODER_FILE
    assert encoder.samefile(gpu.base_gpu_encoder(precision=gpu.FP16))
    assert {p.name for p in (model_dir / "1").iterdir()} >= {
        "model.py",
        "tenantml_encoder.py",
        "encoder.onnx",
        "head.npz",
    }
    assert device_model_dir(version=version, device=GPU, models_root=tmp_path) == root

    # The packaged model as Triton's GPU instance starts it: it asks for CUDA, then the CPU;
    # this ONNX Runtime has no CUDA, so the int8 encoder answers on the CPU and it says so.
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        predictor = IntentPredictor(str(model_dir / "1"), device=GPU)
    assert predictor.encoder.provider == "CPUExecutionProvider"
    assert predictor.encoder.encoder_file == "encoder.onnx"
    assert "CUDA is not available here" in tenantml_encoder.describe(
        predictor.encoder, requested=GPU
    )
    expected = IntentPredictor(str(intent_artifact)).predict(["Where is my refund?"])
    assert predictor.predict(["Where is my refund?"]) == expected


def test_a_gpu_instance_asks_for_cuda_then_the_cpu_and_runs_the_float_encoder_there(
    tmp_path, monkeypatch
):
    (tmp_path / GPU_ENCODER_FILE).write_bytes(b"fp16")

    cpu_file, cpu_providers = tenantml_encoder.session_plan(str(tmp_path), device=CPU)
    without_cuda = tenantml_encoder.session_plan(str(tmp_path), device=GPU, device_id=1)
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    with_cuda = tenantml_encoder.session_plan(str(tmp_path), device=GPU, device_id=1)

    assert (Path(cpu_file).name, cpu_providers) == ("encoder.onnx", ["CPUExecutionProvider"])
    cuda = ("CUDAExecutionProvider", {"device_id": 1, "arena_extend_strategy": "kSameAsRequested"})
    assert Path(with_cuda[0]).name == GPU_ENCODER_FILE
    assert with_cuda[1] == [cuda, "CPUExecutionProvider"]
    assert Path(without_cuda[0]).name == "encoder.onnx"  # int8, what the CPU runs best
    assert without_cuda[1] == [cuda, "CPUExecutionProvider"]
    assert tenantml_encoder.instance_device(
        {"model_instance_kind": "GPU", "model_instance_device_id": "1"}
    ) == (GPU, 1)
    assert tenantml_encoder.instance_device({"model_instance_kind": "CPU"}) == (CPU, 0)


def test_fp16_keeps_each_kinds_quality_on_its_evaluation(
    base_encoder_files, base_encoder_cache_dir, intent_artifact, tmp_path
):
    from models_registry.base_model import base_encoder

    fp32 = base_encoder(quantized=False, cache_dir=base_encoder_cache_dir)
    fp16 = gpu.base_gpu_encoder(precision=gpu.FP16, cache_dir=base_encoder_cache_dir)
    encoders = {}
    for precision, path in ((gpu.FP32, fp32.onnx_path), (gpu.FP16, fp16)):
        directory = tmp_path / precision
        shutil.copytree(intent_artifact, directory)
        shutil.copyfile(path, directory / "encoder.onnx")
        encoders[precision] = directory

    # intent-classifier: the served head on fp16 vs fp32 features, held-out wording.
    texts = [
        "I never got my money back for the return.",
        "The reset password email does not arrive.",
        "My parcel is stuck in transit.",
        *[text for text, _ in INTENT_TRAINING_ROWS],
    ]
    truth = ["refund", "account_access", "shipping", *[label for _, label in INTENT_TRAINING_ROWS]]
    scores = {p: IntentPredictor(str(d)).scores(texts) for p, d in encoders.items()}
    labels = IntentPredictor(str(encoders[gpu.FP32])).labels
    macro_f1 = {}
    for precision, rows in scores.items():
        predicted = [labels[i] for i in rows.argmax(axis=1)]
        per_label = f1_per_label(truth, predicted, labels=labels)
        macro_f1[precision] = float(np.mean(list(per_label.values())))
    # embedding: recall@5 on paraphrase groups the base never saw.
    pairs = generate_pairs("threadline", groups=20, per_group=3, seed=3)
    group_ids = [row["group"] for row in pairs]
    embedded = {
        p: tenantml_encoder.Encoder(str(d)).embed([row["text"] for row in pairs])
        for p, d in encoders.items()
    }
    recall = {p: embedding_kind.recall_at_k(e, group_ids, ks=(5,))[5] for p, e in embedded.items()}
    cosine = gpu.min_cosine(embedded[gpu.FP32], embedded[gpu.FP16])

    assert cosine > 0.9999
    assert np.abs(scores[gpu.FP16] - scores[gpu.FP32]).max() < 0.01
    for kind, metric in (("intent-classifier", macro_f1), ("embedding", recall)):
        assert get_kind(kind).gpu_precision == gpu.FP16
        assert gpu.keeps_quality(
            fp32_metric=metric[gpu.FP32], fp16_metric=metric[gpu.FP16], cosine=cosine
        )


def test_fp16_that_costs_recall_or_turns_embeddings_is_not_kept():
    assert gpu.keeps_quality(fp32_metric=0.80, fp16_metric=0.795, cosine=0.9999)
    assert not gpu.keeps_quality(fp32_metric=0.80, fp16_metric=0.78, cosine=0.9999)
    assert not gpu.keeps_quality(fp32_metric=0.80, fp16_metric=0.80, cosine=0.99)
    # A loss metric: lower is better, so fp16 may not rise by more than the tolerance.
    assert not gpu.keeps_quality(
        fp32_metric=0.30, fp16_metric=0.35, cosine=1.0, higher_is_better=False
    )


def test_a_fine_tuned_artifact_without_a_gpu_encoder_runs_its_own_int8_one(tmp_path):
    (tmp_path / "artifact.json").write_text(json.dumps({"kind": "embedding", "fine_tuned": True}))

    assert gpu.artifact_gpu_encoder(tmp_path, precision=gpu.FP16) is None


def test_the_fine_tune_trains_on_cuda_where_the_instance_has_a_gpu(monkeypatch):
    import torch

    monkeypatch.delenv("SM_NUM_GPUS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert embedding_kind.fine_tune_device() == "cuda"
    monkeypatch.setenv("SM_NUM_GPUS", "0")  # SageMaker says the instance has none
    assert embedding_kind.fine_tune_device() == "cpu"
    monkeypatch.setenv("SM_NUM_GPUS", "4")
    assert embedding_kind.fine_tune_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embedding_kind.fine_tune_device() == "cpu"
