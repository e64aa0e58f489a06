"""Celery tasks for the registry: each loads what it needs and calls one service."""

from celery import shared_task

from models_registry.models import ModelVersion, TrainingJob
from models_registry.services import packaging, training


@shared_task(name="models_registry.tasks.package_version")
def package_version(version_id: int) -> str:
    version = ModelVersion.objects.get(pk=version_id)
    return packaging.package_version(version=version, actor="worker").status


@shared_task(name="models_registry.tasks.run_training_job")
def run_training_job(job_id: int) -> str:
    return training.run_training_job(job_id=job_id).status


@shared_task(name="models_registry.tasks.launch_sagemaker_training")
def launch_sagemaker_training(job_id: int) -> str:
    job = TrainingJob.objects.get(pk=job_id)
    return training.launch_sagemaker_job(job=job).status


@shared_task(name="models_registry.tasks.reconcile_training_jobs")
def reconcile_training_jobs() -> int:
    return len(training.reconcile_training_jobs())


@shared_task(name="models_registry.tasks.follow_sagemaker_jobs")
def follow_sagemaker_jobs() -> int:
    return training.follow_sagemaker_jobs()
