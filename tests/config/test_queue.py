"""Tasks sent by name: after the commit, and only names some app registered."""

from __future__ import annotations

import pytest
from celery.exceptions import NotRegistered

from config.queue import send_task_on_commit

pytestmark = pytest.mark.django_db


def test_a_task_named_by_a_service_is_sent_once_the_transaction_commits(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        send_task_on_commit("models_registry.tasks.reconcile_training_jobs")
    assert len(callbacks) == 1


def test_an_unknown_task_name_fails_in_the_caller():
    with pytest.raises(NotRegistered):
        send_task_on_commit("models_registry.tasks.no_such_task")
