"""Sending Celery tasks by their registered name, once the caller's transaction commits.

A service that hands work to a worker names the task (its ``name=`` in the app's ``tasks.py``)
instead of importing the tasks module, which imports the services: dependencies then run one way,
from the entry points to the services. Each app's ``AppConfig.ready`` imports its tasks module, so
every process (web, worker, shell) knows the names before a service sends one.
"""

from __future__ import annotations

from django.db import transaction

from config.celery import app


def send_task_on_commit(task_name: str, *args: object) -> None:
    """Queue the task registered as ``task_name`` with ``args`` once the transaction commits.

    Sent through the registered task (``delay``), so its own options and ``task_always_eager``
    apply exactly as they would to a direct call.
    """
    task = app.tasks[task_name]  # an unknown name fails here, in the caller, not after commit
    transaction.on_commit(lambda: task.delay(*args))
