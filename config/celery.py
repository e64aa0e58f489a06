"""The Celery application: configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tenantml")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def registered_task(name: str):
    """The task registered as ``name``, discovering the apps' task modules first in a process
    that has not imported them (a web server)."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


def queue_task(name: str, *args) -> None:
    """Send the registered task ``name`` to a worker (inline where tasks run eagerly), without
    importing the module that defines it (services queue tasks that call them)."""
    registered_task(name).delay(*args)
