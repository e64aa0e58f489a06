"""The local training backend: the training entry point as a process of the worker's machine.

The job directory is laid out as a SageMaker training container sees ``/opt/ml`` and the entry
point runs in it (``models_registry.training.runner``), so a local job exercises the same code a
SageMaker one does. ``launch`` returns when the process has ended, with the trained model stored
in the artifact store; cancel is the job's flag, which the runner polls.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from models_registry import artifacts
from models_registry.training.backends.base import (
    TrainingInputs,
    TrainingProgress,
    TrainingReport,
)
from models_registry.training.runner import (
    TrainingOutcome,
    prepare_job_dir,
    process_alive,
    run_local_job,
)

if TYPE_CHECKING:
    from models_registry.models import TrainingJob


class LocalTrainingBackend:
    """Trains in the worker that launched the job, one process per job."""

    name = "local"
    launch_task = "models_registry.tasks.run_training_job"

    def configuration_problem(self) -> str:
        return ""

    def launch(
        self, *, job: TrainingJob, inputs: TrainingInputs, progress: TrainingProgress
    ) -> TrainingReport:
        """Prepare the job directory and run the entry point there until it ends."""
        job_dir = Path(settings.VAR_DIR) / "training" / "jobs" / str(job.pk)
        try:
            # A previous attempt's files would mix with this one's.
            shutil.rmtree(job_dir, ignore_errors=True)
            prepare_job_dir(
                job_dir=job_dir,
                hyperparameters=inputs.hyperparameters,
                train_rows=inputs.train_rows,
                validation_rows=inputs.validation_rows,
            )
        except (OSError, ValueError) as exc:
            return TrainingReport(state="failed", failure_reason=f"Preparing the job failed: {exc}")
        outcome = run_local_job(
            job_dir=job_dir,
            on_progress=progress.on_progress,
            should_cancel=progress.should_cancel,
            timeout_s=float(settings.TENANTML_TRAINING_TIMEOUT_S),
            on_start=lambda pid: progress.on_start(str(pid)),
            # Every local job shares the platform's base-encoder export instead of redoing it.
            extra_env={
                "TENANTML_BASE_MODEL_CACHE": str(Path(settings.VAR_DIR) / "cache" / "base_models")
            },
        )
        ended = {
            "external_id": str(outcome.pid or ""),
            "metrics": metrics_of(outcome),
            "log_tail": outcome.log_tail or "",
        }
        if outcome.status != "succeeded":
            reason = outcome.failure_reason or (
                "Cancelled on request." if outcome.status == "cancelled" else "Failed."
            )
            return TrainingReport(state=outcome.status, failure_reason=reason, **ended)
        model = job.model
        artifact_uri = artifacts.put_directory(
            f"models/{model.tenant.slug}/{model.name}/jobs/{job.pk}", Path(outcome.model_dir)
        )
        return TrainingReport(state="succeeded", artifact_uri=artifact_uri, **ended)

    def follow(self, *, job: TrainingJob) -> None:
        # The worker running the job writes its progress and outcome itself.
        return None

    def stop(self, *, job: TrainingJob) -> None:
        # The runner polls the job's cancel flag (``TrainingProgress.should_cancel``) and stops
        # the process itself; there is nothing to send.
        return None

    def process_lost(self, *, job: TrainingJob) -> bool:
        pid = int(job.external_id) if job.external_id.isdigit() else None
        return not process_alive(pid)

    def release(self, *, job: TrainingJob, keep_uris: frozenset[str], last_of_batch: bool) -> int:
        return 0  # the job directory went with the training process; the artifact is kept


def metrics_of(outcome: TrainingOutcome) -> dict:
    """The figures of a training outcome; the entry point wraps them as ``{"metrics": {...}}``
    beside the kind and its primary metric, which the registry already knows."""
    document = outcome.metrics if isinstance(outcome.metrics, dict) else {}
    inner = document.get("metrics")
    return dict(inner) if isinstance(inner, dict) else dict(document)
