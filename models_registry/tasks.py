"""Celery tasks for the registry: each loads what it needs and calls one service.

The names are the wire contract (beat schedules and queued messages use them), so they stay as
they are: both launch tasks hand a queued job to its backend, whichever that is.
"""

from celery import shared_task

from models_registry.models import ModelVersion
from models_registry.services import packaging, training


@shared_task(name="models_registry.tasks.package_version")
def package_version(version_id: int) -> str:
    version = ModelVersion.objects.get(pk=version_id)
    return packaging.package_version(version=version, actor="worker").status


@shared_task(name="models_registry.tasks.run_training_job")
def run_training_job(job_id: int) -> str:
    return training.launch_training_job(job_id=job_id).status


@shared_task(name="models_registry.tasks.launch_sagemaker_training")
def launch_sagemaker_training(job_id: int) -> str:
    return training.launch_training_job(job_id=job_id).status


@shared_task(name="models_registry.tasks.reconcile_training_jobs")
def reconcile_training_jobs() -> int:
    return len(training.reconcile_training_jobs())


@shared_task(name="models_registry.tasks.follow_sagemaker_jobs")
def follow_sagemaker_jobs() -> int:
    return training.follow_training_jobs()
