"""The registry app's configuration: its name, and the Celery tasks it registers on start."""

from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    name = "models_registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        # Registers the registry's Celery tasks in every process, so services can send them by
        # name (config.queue) without importing the tasks module.
        from models_registry import tasks  # noqa: F401
