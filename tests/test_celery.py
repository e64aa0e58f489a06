"""Celery on the configured broker (Redis in CI, the file-system transport embedded): a task
sent by the web side is executed by a live worker and its effect lands in the database."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from config.celery import app
from deployments.models import InstanceUsageMinute
from deployments.tasks import sample_fleet_utilization
from tests.factories import PlacementFactory


def test_a_process_that_never_imported_the_task_modules_still_finds_a_task_by_name():
    # A web server queues rollouts by task name without importing deployments.tasks.
    script = (
        "import django, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "django.setup(); from config.queue import registered_task; "
        "assert 'deployments.tasks' not in sys.modules; "
        "print(registered_task('deployments.tasks.run_rollout').name)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "deployments.tasks.run_rollout"


def test_task_routes_are_registered():
    app.loader.import_default_modules()
    assert "deployments.tasks.sample_fleet_utilization" in app.tasks


@pytest.mark.django_db(transaction=True)
def test_a_sent_task_is_executed_by_a_live_worker():
    placement = PlacementFactory(host_memory_mb=123)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        sample_fleet_utilization.delay()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = InstanceUsageMinute.objects.filter(instance=placement.instance).first()
            if row is not None:
                break
            time.sleep(0.2)
    assert row is not None, "the worker did not run the task within 20 s"
    assert row.host_memory_used_mb == 123
