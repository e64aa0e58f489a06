"""The ``intent-classifier`` kind: a tenant's labelled tickets → label and per-label scores.

The artifact is the frozen int8 base encoder plus a multinomial logistic-regression head trained
here in plain numpy on the encoder's normalized mean-pooled embeddings; the serving side is
``models_registry.triton_runtime.intent_classifier`` (whose ``Encoder`` also embeds the training
texts, so training and serving pool identically).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from models_registry.base_model import BaseEncoderFiles, base_encoder
from models_registry.exceptions import InvalidDataset
from models_registry.kinds import (
    TEXT_INPUT,
    TRITON_MAX_BATCH_SIZE,
    ModelKind,
    SharedBaseSpec,
    TritonSignature,
    TritonTensor,
    check_hyperparameter_names,
    gpu,
    hyperparameter,
    register,
    response_output,
)

RUNTIME_MODULE = "models_registry.triton_runtime.intent_classifier"
ENCODER_FILE = "encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
HEAD_FILE = "head.npz"
LABELS_FILE = "labels.json"
ARTIFACT_FILE = "artifact.json"


def build_artifact(
    *,
    texts: list[str],
    labels: list[str],
    out_dir: Path,
    base: BaseEncoderFiles | None = None,
    epochs: int = 300,
    l2: float = 1e-4,
    validation_texts: list[str] | None = None,
    validation_labels: list[str] | None = None,
) -> dict:
    """Train the head on ``texts``/``labels`` and write the servable artifact into ``out_dir``.

    ``epochs`` full-batch accelerated gradient steps with L2 penalty ``l2`` on the weights;
    returns training (and, given a validation split, validation) accuracy and loss.
    """
    from models_registry.triton_runtime.intent_classifier import Encoder

    _check_rows(texts, labels, what="training")
    if validation_texts is not None or validation_labels is not None:
        _check_rows(validation_texts or [], validation_labels or [], what="validation")
    if epochs < 1 or l2 < 0:
        raise InvalidDataset(f"epochs must be ≥ 1 and l2 ≥ 0 (got {epochs} and {l2}).")
    label_names = sorted(set(labels))
    if len(label_names) < 2:
        raise InvalidDataset(
            f"An intent classifier needs at least two labels; the data has {label_names}.",
            field="labels",
        )
    base = base or base_encoder(quantized=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _link_or_copy(Path(base.onnx_path), out_dir / ENCODER_FILE)
    _link_or_copy(Path(base.tokenizer_path), out_dir / TOKENIZER_FILE)

    started = time.perf_counter()
    encoder = Encoder(str(out_dir))
    features = encoder.embed(list(texts))
    embed_seconds = time.perf_counter() - started
    column = {label: index for index, label in enumerate(label_names)}
    targets = np.array([column[label] for label in labels])
    started = time.perf_counter()
    weights, bias = train_head(features, targets, n_labels=len(label_names), epochs=epochs, l2=l2)
    train_seconds = time.perf_counter() - started

    np.savez(out_dir / HEAD_FILE, W=weights, b=bias)
    (out_dir / LABELS_FILE).write_text(json.dumps(label_names, ensure_ascii=False) + "\n")
    (out_dir / ARTIFACT_FILE).write_text(
        json.dumps({"kind": KIND.name, "base_encoder": base.cache_key}, indent=2) + "\n"
    )
    metrics = {
        "train_accuracy": _accuracy(features, targets, weights, bias),
        "train_loss": _loss(features, targets, weights, bias),
        "train_rows": len(texts),
        "labels": len(label_names),
        "embed_seconds": round(embed_seconds, 3),
        "train_seconds": round(train_seconds, 3),
    }
    if validation_texts:
        known = [i for i, label in enumerate(validation_labels) if label in column]
        held_out = encoder.embed([validation_texts[i] for i in known])
        held_targets = np.array([column[validation_labels[i]] for i in known])
        # A validation label the training split never saw can only be answered wrong.
        correct = _accuracy(held_out, held_targets, weights, bias) * len(known) if known else 0.0
        metrics["validation_accuracy"] = correct / len(validation_texts)
        metrics["validation_rows"] = len(validation_texts)
    return metrics


def train(
    *,
    train_rows: list[dict],
    validation_rows: list[dict],
    out_dir: Path,
    hyperparameters: dict,
    cache_dir: Path,
    progress: Callable[[int, str], None],
) -> dict:
    """Train on ``train_rows`` and score the written artifact on ``validation_rows``.

    Hyperparameters: ``epochs`` (head gradient steps, default 300) and ``l2`` (default 1e-4).
    Validation runs through the runtime's own ``Predictor`` on ``out_dir``, so the figures are
    those of the artifact that will be served. Returns accuracy, macro-F1 and per-label F1.
    """
    from models_registry.triton_runtime.intent_classifier import Predictor

    check_hyperparameter_names(hyperparameters, kind=KIND.name, known={"epochs", "l2"})
    epochs = hyperparameter(hyperparameters, "epochs", 300, minimum=1, maximum=100_000)
    l2 = hyperparameter(hyperparameters, "l2", 1e-4, minimum=0.0)
    if not validation_rows:
        raise InvalidDataset("The validation data has no rows.", field="validation")
    progress(5, "preparing the base encoder")
    base = base_encoder(quantized=True, cache_dir=cache_dir)
    progress(15, f"embedding {len(train_rows)} training rows and training the head")
    started = time.perf_counter()
    built = build_artifact(
        texts=[str(row["text"]) for row in train_rows],
        labels=[str(row["label"]) for row in train_rows],
        out_dir=out_dir,
        base=base,
        epochs=epochs,
        l2=l2,
    )
    train_seconds = time.perf_counter() - started
    progress(80, f"scoring {len(validation_rows)} validation rows")
    predictor = Predictor(str(out_dir))
    truth = [str(row["label"]) for row in validation_rows]
    scores = predictor.scores([str(row["text"]) for row in validation_rows])
    predicted = [predictor.labels[int(index)] for index in scores.argmax(axis=1)]
    per_label = f1_per_label(truth, predicted, labels=sorted(set(truth) | set(predicted)))
    return {
        "accuracy": float(np.mean([a == b for a, b in zip(truth, predicted, strict=True)])),
        "macro_f1": float(np.mean(list(per_label.values()))),
        "per_label_f1": per_label,
        "train_accuracy": built["train_accuracy"],
        "train_loss": built["train_loss"],
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "labels": built["labels"],
        "train_seconds": round(train_seconds, 3),
    }


def f1_per_label(truth: list[str], predicted: list[str], *, labels: list[str]) -> dict[str, float]:
    """F1 of each label: 2·TP / (2·TP + FP + FN); macro-F1 averages it over true ∪ predicted."""
    truth_array, predicted_array = np.array(truth, dtype=object), np.array(predicted, dtype=object)
    out = {}
    for label in labels:
        is_true, is_predicted = truth_array == label, predicted_array == label
        true_positive = int(np.sum(is_true & is_predicted))
        denominator = int(np.sum(is_true)) + int(np.sum(is_predicted))
        out[label] = 2 * true_positive / denominator if denominator else 0.0
    return out


def train_head(
    features: np.ndarray, targets: np.ndarray, *, n_labels: int, epochs: int, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by Nesterov-accelerated full-batch gradient descent.

    Minimizes mean cross-entropy + ``l2``/2·‖W‖² (bias unpenalized). The step is 1/L for the
    gradient's Lipschitz bound L = ½·λmax(XᵀX/n) + l2, so no learning rate needs tuning.
    """
    x = np.hstack([features.astype(np.float64), np.ones((len(features), 1))])
    onehot = np.eye(n_labels)[targets]
    penalty = np.full((x.shape[1], 1), l2)
    penalty[-1] = 0.0
    lipschitz = 0.5 * np.linalg.norm(x, 2) ** 2 / len(x) + l2
    step = 1.0 / lipschitz
    theta = np.zeros((x.shape[1], n_labels))
    previous = theta
    momentum_t = 1.0
    for _ in range(epochs):
        # FISTA's momentum schedule: the accelerated rate for smooth convex objectives.
        next_t = (1 + np.sqrt(1 + 4 * momentum_t**2)) / 2
        lookahead = theta + ((momentum_t - 1) / next_t) * (theta - previous)
        gradient = x.T @ (_softmax(x @ lookahead) - onehot) / len(x) + penalty * lookahead
        previous, theta = theta, lookahead - step * gradient
        momentum_t = next_t
    return theta[:-1].astype(np.float32), theta[-1].astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _accuracy(features, targets, weights, bias) -> float:
    return float(((features @ weights + bias).argmax(axis=1) == targets).mean())


def _loss(features, targets, weights, bias) -> float:
    probabilities = _softmax((features @ weights + bias).astype(np.float64))
    return float(-np.log(probabilities[np.arange(len(targets)), targets] + 1e-12).mean())


def _check_rows(texts: list[str], labels: list[str], *, what: str) -> None:
    if len(texts) != len(labels):
        raise InvalidDataset(
            f"The {what} data has {len(texts)} texts but {len(labels)} labels.", field="labels"
        )
    if what == "training" and not texts:
        raise InvalidDataset("The training data has no rows.", field="texts")


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        # The base files are immutable cache entries; a hard link saves 23 MB per version.
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def triton_signature(artifact_dir: Path) -> TritonSignature:
    """LABEL, SCORES and LABELS outputs sized by the artifact's label count."""
    labels = json.loads((Path(artifact_dir) / LABELS_FILE).read_text(encoding="utf-8"))
    return TritonSignature(
        inputs=(TEXT_INPUT,),
        outputs=(
            TritonTensor(name="LABEL", data_type="TYPE_STRING", dims=(1,)),
            TritonTensor(name="SCORES", data_type="TYPE_FP32", dims=(len(labels),)),
            TritonTensor(name="LABELS", data_type="TYPE_STRING", dims=(len(labels),)),
        ),
        parameters={"labels": json.dumps(labels, ensure_ascii=False)},
    )


def decode_response(answer: dict) -> list[dict]:
    """``[{"label": ..., "scores": {label: probability}}]`` from a KServe v2 JSON answer."""
    _, best = response_output(answer, "LABEL")
    shape, scores = response_output(answer, "SCORES")
    _, names = response_output(answer, "LABELS")
    width = shape[-1]
    return [
        {
            "label": label,
            "scores": {
                names[row * width + column]: float(scores[row * width + column])
                for column in range(width)
            },
        }
        for row, label in enumerate(best)
    ]


KIND = register(
    ModelKind(
        name="intent-classifier",
        description="Frozen MiniLM sentence encoder with a head trained on the tenant's labels.",
        input_schema={
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": TRITON_MAX_BATCH_SIZE,
        },
        output_schema={
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "scores": {"type": "object"}},
            },
        },
        warmup_inputs=["Where is my refund?"],
        runtime_module=RUNTIME_MODULE,
        runtime_requirements=("onnxruntime", "tokenizers"),
        artifact_files=(ENCODER_FILE, TOKENIZER_FILE, HEAD_FILE, LABELS_FILE),
        triton_signature=triton_signature,
        build_artifact=build_artifact,
        train=train,
        primary_metric="macro_f1",
        decode_response=decode_response,
        # Python stub RSS on Triton 2.51 (CPU), int8 encoder: 114 MB loaded, 121 MB after traffic
        # (bench/serving.py); a little over, so the first load never overshoots the budget.
        expected_memory_mb=140.0,
        # The frozen base in fp16: the same macro-F1 as fp32 on every demo tenant.
        gpu_encoder=partial(gpu.artifact_gpu_encoder, precision=gpu.FP16),
        gpu_precision=gpu.FP16,
        shared_base=SharedBaseSpec(
            runtime_module="models_registry.triton_runtime.shared_intent",
            base_files=(ENCODER_FILE, TOKENIZER_FILE),
            head_files=(HEAD_FILE, LABELS_FILE),
        ),
    )
)
