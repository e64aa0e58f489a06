"""The training entry point, run as SageMaker would run it: a real process, real training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from models_registry.demo.tickets import generate_pairs
from models_registry.kinds import get_kind
from models_registry.training.entrypoint import read_hyperparameters
from models_registry.training.runner import JobPaths, prepare_job_dir
from models_registry.training.sourcedir import build_sourcedir
from tests.serving_fixtures import INTENT_TRAINING_ROWS

REPO = Path(__file__).resolve().parents[3]
INTENT_ROWS = [{"text": text, "label": label} for text, label in INTENT_TRAINING_ROWS]


def run_entrypoint(
    paths: JobPaths, cache_dir: Path, *, command: list[str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SM_")}
    env.update(paths.environment())
    env.update({"HF_HUB_OFFLINE": "1", "TENANTML_BASE_MODEL_CACHE": str(cache_dir)})
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the container has no Django: prove it needs none
    return subprocess.run(
        command or [sys.executable, "-m", "models_registry.training.entrypoint"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        # A hang guard, not a speed check (bench/training.py measures speed): generous enough
        # for an embedding fine-tune on a busy two-core machine.
        timeout=600,
    )


def test_intent_classifier_training_writes_a_servable_artifact_and_metrics(
    tmp_path, base_encoder_files, base_encoder_cache_dir
):
    from models_registry.triton_runtime.intent_classifier import Predictor

    paths = prepare_job_dir(
        job_dir=tmp_path,
        hyperparameters={"kind": "intent-classifier", "epochs": 200},
        train_rows=INTENT_ROWS,
        validation_rows=INTENT_ROWS[::3],
    )
    done = run_entrypoint(paths, base_encoder_cache_dir)

    assert done.returncode == 0, done.stderr
    kind = get_kind("intent-classifier")
    assert set(kind.artifact_files) <= {path.name for path in paths.model_dir.iterdir()}
    predictor = Predictor(str(paths.model_dir))
    answers = predictor.predict([row["text"] for row in INTENT_ROWS])
    assert [answer["label"] for answer in answers] == [row["label"] for row in INTENT_ROWS]

    document = json.loads((paths.output_data_dir / "metrics.json").read_text())
    assert document["primary_metric"] == "macro_f1"
    metrics = document["metrics"]
    assert metrics["macro_f1"] == pytest.approx(1.0)
    assert set(metrics["per_label_f1"]) == {"refund", "account_access", "shipping"}
    assert metrics["train_rows"] == 30 and metrics["validation_rows"] == 10
    assert re.search(r"^#metric macro_f1=1$", done.stdout, re.MULTILINE)
    assert re.search(r"validation:macro_f1=([0-9.]+);", done.stdout).group(1) == "1"
    percents = [int(p) for p in re.findall(r"^#progress (\d+) ", done.stdout, re.MULTILINE)]
    assert percents == sorted(percents) and percents[-1] == 100
    assert not (paths.output_dir / "failure").exists()


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"kind": "intent-classifier", "epochs": "lots"}, "'epochs' must be an integer"),
        ({"kind": "intent-classifier", "learning_rate": 0.1}, "Unknown hyperparameter"),
        ({"epochs": 3}, "'kind' is required"),
        ({"kind": "translator"}, "Unknown model kind 'translator'"),
    ],
)
def test_bad_hyperparameters_fail_with_a_clear_message(
    tmp_path, base_encoder_cache_dir, hyperparameters, message
):
    paths = prepare_job_dir(
        job_dir=tmp_path,
        hyperparameters=hyperparameters,
        train_rows=INTENT_ROWS,
        validation_rows=INTENT_ROWS,
    )
    done = run_entrypoint(paths, base_encoder_cache_dir)

    assert done.returncode == 1
    assert message in (paths.output_dir / "failure").read_text()
    assert message in done.stderr
    assert not (paths.output_data_dir / "metrics.json").exists()


def test_an_empty_channel_fails_with_a_clear_message(tmp_path, base_encoder_cache_dir):
    paths = prepare_job_dir(
        job_dir=tmp_path,
        hyperparameters={"kind": "intent-classifier"},
        train_rows=[],
        validation_rows=INTENT_ROWS,
    )
    done = run_entrypoint(paths, base_encoder_cache_dir)

    assert done.returncode == 1
    assert (
        "The train channel (train.jsonl) has no rows." in (paths.output_dir / "failure").read_text()
    )


def test_hyperparameters_accept_what_sagemaker_sends(tmp_path):
    (tmp_path / "hyperparameters.json").write_text(
        json.dumps({"kind": '"intent-classifier"', "epochs": "50", "sagemaker_program": "train.py"})
    )
    env = {"SM_HPS": json.dumps({"l2": "0.001", "epochs": "7"}), "SM_HP_SEED": "3"}

    assert read_hyperparameters(tmp_path, env) == {
        "kind": "intent-classifier",
        "epochs": 50,  # the file wins over SM_HPS
        "l2": 0.001,
        "seed": 3,
    }
    assert read_hyperparameters(tmp_path / "absent", {"SM_HP_KIND": "embedding"}) == {
        "kind": "embedding"
    }


def test_embedding_fine_tune_reports_recall_and_exports_a_servable_encoder(
    tmp_path, base_encoder_files, base_encoder_cache_dir
):
    from models_registry.triton_runtime.embedding import Predictor

    rows = generate_pairs("zoomride", groups=26, seed=1)
    validation_groups = {row["group"] for row in rows[:12]}
    paths = prepare_job_dir(
        job_dir=tmp_path,
        hyperparameters={"kind": "embedding", "epochs": 1, "batch_size": 8},
        train_rows=[row for row in rows if row["group"] not in validation_groups],
        validation_rows=[row for row in rows if row["group"] in validation_groups],
    )
    done = run_entrypoint(paths, base_encoder_cache_dir)

    assert done.returncode == 0, done.stderr
    metrics = json.loads((paths.output_data_dir / "metrics.json").read_text())["metrics"]
    for name in ("recall_at_1", "recall_at_5", "recall_at_1_before", "recall_at_5_before"):
        assert 0.0 <= metrics[name] <= 1.0
        assert re.search(rf"^#metric {name}=", done.stdout, re.MULTILINE)
    assert metrics["train_rows"] == 40 and metrics["validation_groups"] == 6
    assert {path.name for path in paths.model_dir.iterdir()} >= set(
        get_kind("embedding").artifact_files
    )
    tuned = Predictor(str(paths.model_dir)).embed(["How do I get a refund for my ride?"])
    base = Predictor(str(base_encoder_files.onnx_path.parent)).embed(
        ["How do I get a refund for my ride?"]
    )
    assert tuned.shape == (1, 384)
    assert np.linalg.norm(tuned) == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(tuned, base, atol=1e-4)  # the served encoder is the tuned one


def test_sourcedir_runs_the_entry_point_without_django(tmp_path, base_encoder_cache_dir):
    first = build_sourcedir(tmp_path / "a" / "sourcedir.tar.gz")
    second = build_sourcedir(tmp_path / "b" / "sourcedir.tar.gz")
    assert first.sha256 == second.sha256 and first.size_bytes == second.size_bytes
    code = tmp_path / "code"
    with tarfile.open(first.path) as archive:
        archive.extractall(code, filter="data")
    assert "sentence-transformers==" in (code / "requirements.txt").read_text()

    paths = prepare_job_dir(
        job_dir=tmp_path / "job",
        hyperparameters={"kind": "translator"},
        train_rows=INTENT_ROWS,
        validation_rows=INTENT_ROWS,
    )
    done = run_entrypoint(
        paths, base_encoder_cache_dir, command=[sys.executable, "train.py"], cwd=code
    )

    assert done.returncode == 1, done.stderr
    assert "Unknown model kind 'translator'" in (paths.output_dir / "failure").read_text()
