"""Celery on the configured broker (Redis in CI, the file-system transport embedded): a task
sent by the web side is executed by a live worker and its effect lands in the database; training
and packaging have their own queue and worker, so a long training never delays the periodic
passes; every task has a time limit, and a training stopped by its limit fails with the reason;
a periodic pass left queued past its expiry is dropped instead of run late."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from amqp.exceptions import ChannelError
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from config.celery import app
from config.queue import registered_task
from deployments.models import InstanceUsageMinute
from deployments.services.fleet import sync_periodic_tasks
from deployments.tasks import sample_fleet_utilization
from models_registry.models import TrainingJob
from models_registry.services.training import request_training_cancel
from tests.factories import PlacementFactory
from tests.reliability.support import database_url, queued_training_job, with_log
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
TRAINING_QUEUE_TASKS = (
    "models_registry.tasks.run_training_job",
    "models_registry.tasks.package_version",
)
PERIODIC_TASKS = [spec["task"] for spec in settings.TENANTML_PERIODIC_TASKS]


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
        cwd=REPO,
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


# --- Queues ----------------------------------------------------------------------------------


def queued_on(queue: str) -> int:
    """How many messages wait on ``queue`` in the configured broker."""
    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:  # Redis: a queue with no message has no key
            return 0


@pytest.fixture
def empty_queues():
    app.control.purge()  # messages other tests sent and no worker took
    yield
    app.control.purge()


def test_training_and_packaging_land_on_the_training_queue_and_periodic_passes_on_the_default(
    empty_queues,
):
    for name in TRAINING_QUEUE_TASKS:
        registered_task(name).delay(0)
    assert queued_on(settings.TENANTML_TRAINING_QUEUE) == len(TRAINING_QUEUE_TASKS)
    assert queued_on(settings.TENANTML_DEFAULT_QUEUE) == 0
    for name in PERIODIC_TASKS:
        registered_task(name).delay()
    assert queued_on(settings.TENANTML_DEFAULT_QUEUE) == len(PERIODIC_TASKS)
    assert queued_on(settings.TENANTML_TRAINING_QUEUE) == len(TRAINING_QUEUE_TASKS)


def test_a_worker_started_without_queues_consumes_both():
    # Someone running one plain `celery -A config worker` still gets training done.
    consumed = {queue.name for queue in app.amqp.queues.consume_from.values()}
    assert consumed == {settings.TENANTML_DEFAULT_QUEUE, settings.TENANTML_TRAINING_QUEUE}


class QueueWorker:
    """``celery -A config worker -Q <queue>`` (prefork, as deployed) on the test database."""

    def __init__(self, queue: str, log: Path, **env: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                f"--queues={queue}",
                f"--hostname={queue}@%h",
                "--concurrency=1",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            cwd=REPO,
            env={
                **os.environ,
                "DATABASE_URL": database_url(),
                "TENANTML_VAR_DIR": str(settings.VAR_DIR),
                "ARTIFACT_STORE": settings.ARTIFACT_STORE.uri,
                **env,
            },
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def running_job(job, log: Path) -> TrainingJob:
    return wait_until(
        lambda: (
            TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING)
            .exclude(external_id="")
            .first()
        ),
        120,
        with_log("the training worker did not start training", log),
        interval_s=0.2,
    )


def send_as_beat(task_name: str) -> None:
    """Send a periodic task exactly as beat's database scheduler sends its row's entry."""
    entry = ModelEntry(PeriodicTask.objects.get(task=task_name), app=app)
    registered_task(entry.task).apply_async(entry.args, entry.kwargs, **entry.options)


@pytest.mark.django_db(transaction=True)
def test_a_long_training_does_not_delay_the_periodic_passes(tmp_path, empty_queues):
    sync_periodic_tasks()  # a transactional test starts from flushed tables
    placement = PlacementFactory(host_memory_mb=77)
    _, job = queued_training_job(seed=3, rows=1500)
    TrainingJob.objects.filter(pk=job.pk).update(hyperparameters={"epochs": 100_000})
    training_log, default_log = tmp_path / "training.log", tmp_path / "default.log"
    training = QueueWorker(settings.TENANTML_TRAINING_QUEUE, training_log)
    default = QueueWorker(settings.TENANTML_DEFAULT_QUEUE, default_log)
    try:
        running_job(job, training_log)
        send_as_beat("deployments.tasks.sample_fleet_utilization")
        wait_until(
            lambda: InstanceUsageMinute.objects.filter(instance=placement.instance).exists(),
            30,
            with_log("the sampler did not run while a training was", default_log),
            interval_s=0.2,
        )
        # The pass ran while the training still held its worker.
        assert TrainingJob.objects.get(pk=job.pk).status == TrainingJob.Status.RUNNING
        request_training_cancel(job=TrainingJob.objects.get(pk=job.pk), actor="test")
        wait_until(
            lambda: TrainingJob.objects.get(pk=job.pk).is_terminal,
            60,
            with_log("the cancelled training did not stop", training_log),
            interval_s=0.2,
        )
    finally:
        training.stop()
        default.stop()


# --- Time limits -----------------------------------------------------------------------------


def test_every_task_carries_its_familys_time_limits():
    app.loader.import_default_modules()
    grace = settings.TENANTML_TASK_TIME_LIMIT_GRACE_S
    families = {
        "models_registry.tasks.run_training_job": settings.TENANTML_TRAINING_TASK_TIME_LIMIT_S,
        "models_registry.tasks.package_version": settings.TENANTML_PACKAGING_TASK_TIME_LIMIT_S,
        "deployments.tasks.reconcile_fleet": settings.TENANTML_PERIODIC_TASK_TIME_LIMIT_S,
        "deployments.tasks.sample_fleet_utilization": settings.TENANTML_PERIODIC_TASK_TIME_LIMIT_S,
        "models_registry.tasks.reconcile_training_jobs": (
            settings.TENANTML_PERIODIC_TASK_TIME_LIMIT_S
        ),
        "deployments.tasks.warm_up_fleet": settings.TENANTML_WARMUP_TASK_TIME_LIMIT_S,
        "deployments.tasks.run_rollout": settings.TENANTML_TASK_TIME_LIMIT_S,
    }
    for name, soft in families.items():
        task = app.tasks[name]
        assert (task.soft_time_limit, task.time_limit) == (soft, soft + grace), name
    # Training is long, packaging medium, the minute passes short.
    assert (
        settings.TENANTML_TRAINING_TASK_TIME_LIMIT_S
        > settings.TENANTML_TRAINING_TIMEOUT_S
        > settings.TENANTML_PACKAGING_TASK_TIME_LIMIT_S
        > settings.TENANTML_PERIODIC_TASK_TIME_LIMIT_S
    )
    # Every other task has the platform-wide limits.
    ours = {name for name in app.tasks if not name.startswith("celery.")}
    assert all(app.tasks[name].soft_time_limit for name in ours)


@pytest.mark.django_db(transaction=True)
def test_a_training_stopped_by_its_soft_time_limit_fails_with_the_reason(tmp_path, empty_queues):
    _, job = queued_training_job(seed=4, rows=1500)
    TrainingJob.objects.filter(pk=job.pk).update(hyperparameters={"epochs": 100_000})
    # The limits a message carries are the sender's (TRAINING_TASK_TIME_LIMIT_S where the web
    # runs); this one is sent with limits short enough to reach.
    app.control.purge()
    registered_task("models_registry.tasks.run_training_job").apply_async(
        args=[job.pk], soft_time_limit=8, time_limit=38
    )
    log = tmp_path / "training.log"
    worker = QueueWorker(settings.TENANTML_TRAINING_QUEUE, log)
    try:
        training_pid = int(running_job(job, log).external_id)
        failed = wait_until(
            lambda: TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.FAILED).first(),
            60,
            with_log("the job did not fail at its time limit", log),
            interval_s=0.2,
        )
    finally:
        worker.stop()
    assert failed.failure_reason == (
        "Stopped after 8 s, the time limit of a training task (TRAINING_TASK_TIME_LIMIT_S); "
        "raise it for longer trainings."
    )
    assert failed.finished_at is not None
    # The training process went with it, not left to finish unobserved.
    assert not psutil.pid_exists(training_pid) or psutil.Process(training_pid).status() == (
        psutil.STATUS_ZOMBIE
    )


# --- Periodic passes expire ------------------------------------------------------------------


@pytest.mark.django_db
def test_every_periodic_pass_expires_before_its_next_one_is_due():
    sync_periodic_tasks()  # what migrate runs; a transactional test before may have flushed them
    for spec in settings.TENANTML_PERIODIC_TASKS:
        task = PeriodicTask.objects.get(name=spec["name"])
        assert 0 < task.expire_seconds < task.interval.every, spec["name"]
        # What beat sends carries it.
        assert ModelEntry(task, app=app).options["expires"] == task.expire_seconds


@pytest.mark.django_db
def test_a_schedule_written_before_passes_expired_gets_its_expiry_and_an_operators_is_kept():
    sync_periodic_tasks()
    PeriodicTask.objects.filter(name="Reconcile deployments").update(expire_seconds=None)
    PeriodicTask.objects.filter(name="Warm up placed models").update(expire_seconds=600)
    assert sync_periodic_tasks() == []
    assert PeriodicTask.objects.get(name="Reconcile deployments").expire_seconds == 50
    assert PeriodicTask.objects.get(name="Warm up placed models").expire_seconds == 600


@pytest.mark.django_db(transaction=True)
def test_a_pass_left_queued_past_its_expiry_is_dropped_not_run_late(empty_queues):
    sync_periodic_tasks()
    placement = PlacementFactory(host_memory_mb=55)
    PeriodicTask.objects.filter(task="deployments.tasks.sample_fleet_utilization").update(
        expire_seconds=1
    )
    send_as_beat("deployments.tasks.sample_fleet_utilization")  # no worker: an outage
    time.sleep(1.5)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        wait_until(
            lambda: queued_on(settings.TENANTML_DEFAULT_QUEUE) == 0,
            20,
            "the worker did not take the queued pass",
            interval_s=0.1,
        )
        time.sleep(1)  # what the worker would have done with it, it has done by now
        assert not InstanceUsageMinute.objects.filter(instance=placement.instance).exists()
        # A pass sent on time runs.
        PeriodicTask.objects.filter(task="deployments.tasks.sample_fleet_utilization").update(
            expire_seconds=50
        )
        send_as_beat("deployments.tasks.sample_fleet_utilization")
        wait_until(
            lambda: InstanceUsageMinute.objects.filter(instance=placement.instance).exists(),
            20,
            "the worker did not run the pass sent on time",
            interval_s=0.2,
        )
