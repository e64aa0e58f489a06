"""Celery tasks for the registry: each loads what it needs and calls one service.

The names are the wire contract (beat schedules and queued messages use them), so they stay as
they are: both launch tasks hand a queued job to its backend, whichever that is.
"""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from models_registry.models import ModelVersion
from models_registry.services import (
    batch_training,
    packaging,
    time_limits,
    training,
    training_cleanup,
)


@shared_task(bind=True, name="models_registry.tasks.package_version")
def package_version(self, version_id: int) -> str:
    version = ModelVersion.objects.get(pk=version_id)
    try:
        return packaging.package_version(version=version, actor="worker").status
    except SoftTimeLimitExceeded:
        return time_limits.fail_packaging_over_time_limit(
            version_id=version_id, limit_s=soft_time_limit(self)
        ).status


@shared_task(bind=True, name="models_registry.tasks.run_training_job")
def run_training_job(self, job_id: int) -> str:
    try:
        return training.launch_training_job(job_id=job_id).status
    except SoftTimeLimitExceeded:
        # The runner has stopped the training process on its way out.
        return time_limits.fail_training_over_time_limit(
            job_id=job_id, limit_s=soft_time_limit(self)
        ).status


@shared_task(name="models_registry.tasks.launch_sagemaker_training")
def launch_sagemaker_training(job_id: int) -> str:
    # In a batch with the other queued jobs of its kind when enough wait, else on its own.
    return batch_training.launch_training_job(job_id=job_id).status


@shared_task(name="models_registry.tasks.stop_training_job")
def stop_training_job(job_id: int) -> str:
    return training.stop_cancelled_training_job(job_id=job_id).status


@shared_task(name="models_registry.tasks.package_trained_version")
def package_trained_version(job_id: int) -> str:
    return training.package_trained_version(job_id=job_id).status


@shared_task(name="models_registry.tasks.reconcile_training_jobs")
def reconcile_training_jobs() -> int:
    return (
        len(training.reconcile_training_jobs())
        + len(batch_training.reconcile_training_batches())
        + len(training_cleanup.release_ended_jobs())
    )


@shared_task(name="models_registry.tasks.follow_sagemaker_jobs")
def follow_sagemaker_jobs() -> int:
    return training.follow_training_jobs() + batch_training.follow_training_batches()


def soft_time_limit(task) -> float:
    """The soft time limit this run of ``task`` had: its message's, else the task's own."""
    _hard, soft = task.request.timelimit or (None, None)
    return soft or task.soft_time_limit
