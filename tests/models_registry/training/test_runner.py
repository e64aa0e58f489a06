"""The local training runner: a real entry-point process, its progress, cancel and timeout."""

from __future__ import annotations

import time

import psutil

from models_registry.demo.tickets import generate_pairs
from models_registry.training.runner import prepare_job_dir, process_alive, run_local_job
from tests.serving_fixtures import INTENT_TRAINING_ROWS

INTENT_ROWS = [{"text": text, "label": label} for text, label in INTENT_TRAINING_ROWS]


def long_embedding_job(job_dir):
    # A hundred epochs keeps the process busy well past the point the tests stop it.
    rows = generate_pairs("zoomride", groups=12, seed=2)
    return prepare_job_dir(
        job_dir=job_dir,
        hyperparameters={"kind": "embedding", "epochs": 100, "batch_size": 4},
        train_rows=rows[:16],
        validation_rows=rows[16:],
    )


def test_a_job_succeeds_reporting_progress_metrics_and_its_log(
    tmp_path, base_encoder_files, base_encoder_cache_dir
):
    paths = prepare_job_dir(
        job_dir=tmp_path,
        hyperparameters={"kind": "intent-classifier", "epochs": 200, "l2": 1e-4},
        train_rows=INTENT_ROWS,
        validation_rows=INTENT_ROWS[1::3],
    )
    progress: list[tuple[int, str]] = []
    started: list[int] = []

    outcome = run_local_job(
        job_dir=tmp_path,
        on_progress=lambda percent, message: progress.append((percent, message)),
        should_cancel=lambda: False,
        timeout_s=120,
        poll_s=0.1,
        extra_env={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
        on_start=started.append,
    )

    assert outcome.status == "succeeded", outcome.failure_reason
    assert outcome.metrics["metrics"]["macro_f1"] == 1.0
    assert outcome.model_dir == paths.model_dir and (paths.model_dir / "head.npz").is_file()
    assert progress[0][0] < progress[-1][0] == 100
    assert len(progress) == len(set(progress))  # each update once
    assert [percent for percent, _ in progress] == sorted(percent for percent, _ in progress)
    assert started == [outcome.pid] and not process_alive(outcome.pid)
    log = paths.log_path.read_text()
    assert "#metric macro_f1=1" in log and "#metric macro_f1=1" in outcome.log_tail
    assert outcome.duration_s > 0


def test_a_failing_job_reports_the_entry_points_reason(tmp_path, base_encoder_cache_dir):
    prepare_job_dir(
        job_dir=tmp_path,
        hyperparameters={"kind": "intent-classifier", "l2": -1},
        train_rows=INTENT_ROWS,
        validation_rows=INTENT_ROWS,
    )

    outcome = run_local_job(
        job_dir=tmp_path,
        on_progress=lambda percent, message: None,
        should_cancel=lambda: False,
        timeout_s=60,
        extra_env={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
    )

    assert outcome.status == "failed"
    assert outcome.failure_reason == "Hyperparameter 'l2' must be ≥ 0, not -1."
    assert outcome.exit_code == 1 and outcome.metrics == {}


def test_cancel_stops_the_training_process(tmp_path, base_encoder_files, base_encoder_cache_dir):
    long_embedding_job(tmp_path)
    seen: list[str] = []
    alive_while_training: list[bool] = []
    pids: list[int] = []

    def on_progress(percent: int, message: str) -> None:
        seen.append(message)
        if message.startswith("epoch") and not alive_while_training:
            alive_while_training.append(process_alive(pids[0]))

    started = time.monotonic()
    outcome = run_local_job(
        job_dir=tmp_path,
        on_progress=on_progress,
        should_cancel=lambda: any(message.startswith("epoch") for message in seen),
        timeout_s=120,
        poll_s=0.1,
        extra_env={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
        on_start=pids.append,
    )

    assert outcome.status == "cancelled"
    assert alive_while_training == [True]
    assert not psutil.pid_exists(outcome.pid) and not process_alive(outcome.pid)
    # SIGTERM ends it at once: well before a hundred epochs, and without needing SIGKILL.
    assert time.monotonic() - started < 60
    assert outcome.exit_code == -15 or outcome.exit_code == 143
    assert "stopped by SIGTERM" in outcome.log_tail


def test_a_job_past_its_timeout_is_stopped_and_failed(tmp_path, base_encoder_cache_dir):
    long_embedding_job(tmp_path)

    started = time.monotonic()
    outcome = run_local_job(
        job_dir=tmp_path,
        on_progress=lambda percent, message: None,
        should_cancel=lambda: False,
        timeout_s=1.5,
        poll_s=0.1,
        extra_env={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
    )

    assert outcome.status == "failed"
    assert outcome.failure_reason == "timed out after 1.5 s"
    assert time.monotonic() - started < 15
    assert not process_alive(outcome.pid)
