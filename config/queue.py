"""Sending Celery tasks by their registered name, so services never import the tasks that call
them.

A service that hands work to a worker names the task (its ``name=`` in the app's ``tasks.py``)
instead of importing the tasks module, which imports the services: dependencies then run one way,
from the entry points to the services. A process that has not imported the apps' task modules (a
web server) discovers them on its first send.
"""

from __future__ import annotations

from django.db import transaction

from config.celery import app


def registered_task(name: str):
    """The task registered as ``name``; the apps' task modules are discovered first where this
    process has not imported them. An unknown name raises ``NotRegistered``."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


def queue_task(name: str, *args: object) -> None:
    """Send the task registered as ``name`` to a worker now (inline where tasks run eagerly)."""
    registered_task(name).delay(*args)


def send_task_on_commit(task_name: str, *args: object) -> None:
    """Queue the task registered as ``task_name`` with ``args`` once the transaction commits.

    Sent through the registered task (``delay``), so its own options and ``task_always_eager``
    apply exactly as they would to a direct call.
    """
    task = registered_task(task_name)  # an unknown name fails here, in the caller
    transaction.on_commit(lambda: task.delay(*args))
