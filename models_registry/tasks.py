"""Celery tasks for the registry: each loads what it needs and calls one service."""

from celery import shared_task

from models_registry import services
from models_registry.models import ModelVersion


@shared_task(name="models_registry.tasks.package_version")
def package_version(version_id: int) -> str:
    version = ModelVersion.objects.get(pk=version_id)
    return services.package_version(version=version, actor="worker").status
