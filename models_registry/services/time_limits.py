"""Writes for work stopped by its task's time limit: a training job or a version's packaging that
ran past the limit is failed with the reason, never left looking as if it still ran.

The soft time limit interrupts a task wherever it is, a database call included; what follows
starts on a connection that is known to work.
"""

from __future__ import annotations

from django.db import connection, transaction

from config.events import record_event
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.training import finish_job

# The states of a job whose training has not ended: the ones a time limit can interrupt.
TRAINING_STATES = (
    TrainingJob.Status.QUEUED,
    TrainingJob.Status.LAUNCHING,
    TrainingJob.Status.RUNNING,
)


def fail_training_over_time_limit(*, job_id: int, limit_s: float) -> TrainingJob:
    """Fail a job still training when its task reached its soft time limit, ``limit_s`` (the
    training process has been stopped by then); a job that finished training, or ended, is left
    as it is."""
    _ensure_usable_connection()
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=job_id)
        )
        if job.status not in TRAINING_STATES:
            return job
        reason = (
            f"Stopped after {limit_s:g} s, the time limit of a training task "
            "(TRAINING_TASK_TIME_LIMIT_S); raise it for longer trainings."
        )
        job = finish_job(
            job, status=TrainingJob.Status.FAILED, reason=reason, data={"time_limit_s": limit_s}
        )
    return job


def fail_packaging_over_time_limit(*, version_id: int, limit_s: float) -> ModelVersion:
    """Fail a version still packaging when its task reached its soft time limit, ``limit_s``; a
    version packaged (or failed) meanwhile is left as it is."""
    _ensure_usable_connection()
    with transaction.atomic():
        version = (
            ModelVersion.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=version_id)
        )
        if version.status != ModelVersion.Status.PACKAGING:
            return version
        reason = (
            f"Packaging stopped after {limit_s:g} s, the time limit of a packaging task "
            "(PACKAGING_TASK_TIME_LIMIT_S)."
        )
        version.status = ModelVersion.Status.FAILED
        version.status_reason = reason
        version.save(update_fields=["status", "status_reason", "updated_at"])
        record_event(
            kind="version.packaging_failed",
            severity="error",
            message=f"{version} could not be packaged for Triton: {reason}",
            actor="worker",
            version=version,
            data={"time_limit_s": limit_s},
        )
    return version


def _ensure_usable_connection() -> None:
    # Interrupted in the middle of a query, a connection can be left mid-protocol; a fresh one
    # is opened on the next query.
    if not connection.in_atomic_block and (
        connection.connection is not None and not connection.is_usable()
    ):
        connection.close()
