"""A Celery worker killed with SIGKILL mid-work, with real processes: the training job and the
deployment it was running complete exactly once after a new worker starts (the reconcilers
re-queue what the dead worker held; re-delivered messages find the work done)."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from config.celery import app
from deployments.backends.local import runtime
from deployments.models import Deployment, Event, Instance, Placement
from deployments.services import reconciler, rollouts
from models_registry import tasks
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.training import STALE_HEARTBEAT, reconcile_training_jobs
from tests.factories import TenantFactory, TenantModelFactory
from tests.reliability.support import (
    Worker,
    finished_job_under_a_new_worker,
    queued_training_job,
    wait_for,
)
from tests.serving_fixtures import packaged_version

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_log(tmp_path):
    app.control.purge()  # messages other tests sent and no worker took
    return tmp_path / "worker.log"


def test_a_training_job_whose_worker_is_killed_completes_exactly_once(tmp_path, worker_log):
    model, job = queued_training_job(seed=1)

    first = Worker(worker_log)
    try:
        running = wait_for(
            "the first worker did not start training",
            lambda: (
                TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING)
                .exclude(external_id="")
                .first()
            ),
            120,
            worker_log,
        )
        training_pid = int(running.external_id)
    finally:
        first.kill_hard()
    if psutil.pid_exists(training_pid):  # its own session: the lost machine took it too
        os.kill(training_pid, signal.SIGKILL)

    # Two minutes later the training reconciler sees the heartbeat stale and the process gone.
    later = timezone.now() + STALE_HEARTBEAT + timedelta(seconds=5)
    requeued = [changed.pk for changed in reconcile_training_jobs(now=later)]
    assert requeued == [job.pk]
    done = finished_job_under_a_new_worker(job, worker_log)

    assert done.status == TrainingJob.Status.SUCCEEDED, done.failure_reason
    assert ModelVersion.objects.filter(model=model).count() == 1
    # The dead worker's message, delivered again later, finds the job done.
    tasks.run_training_job.apply(args=[job.pk])
    assert ModelVersion.objects.filter(model=model).count() == 1
    assert TrainingJob.objects.get(pk=job.pk).attempts == 2


def test_a_deployment_whose_worker_is_killed_completes_exactly_once(intent_artifact, worker_log):
    model = TenantModelFactory(tenant=TenantFactory(slug="threadline"), name="intents")
    version = packaged_version(model, intent_artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")

    first = Worker(worker_log)
    try:
        wait_for(
            "the first worker did not start loading",
            lambda: Placement.objects.filter(version=version).exists(),
            120,
            worker_log,
        )
    finally:
        first.kill_hard()
    try:
        # Five minutes later the reconciler finds the rollout stalled and queues it again.
        report = reconciler.reconcile_fleet(now=timezone.now() + timedelta(seconds=301))
        assert deployment.pk in report.rollouts_requeued or (
            Deployment.objects.get(pk=deployment.pk).status == Deployment.Status.LIVE
        )
        second = Worker(worker_log)
        try:
            live = wait_for(
                "the second worker did not finish the rollout",
                lambda: Deployment.objects.filter(
                    pk=deployment.pk,
                    status__in=[Deployment.Status.LIVE, Deployment.Status.FAILED],
                ).first(),
                180,
                worker_log,
            )
        finally:
            second.stop()
        assert live.status == Deployment.Status.LIVE, live.status_reason
        assert live.live_version == version
        assert Placement.objects.filter(version=version).count() == 1
        assert Event.objects.filter(kind="deployment.switched", version=version).count() == 1
        # A late re-delivery of the first message changes nothing.
        rollouts.run_rollout(deployment_id=deployment.pk)
        assert Event.objects.filter(kind="deployment.switched", version=version).count() == 1
    finally:
        for instance in Instance.objects.exclude(status=Instance.Status.STOPPED).exclude(pid=None):
            runtime.stop_local_instance(instance=instance, actor="test", reason="test finished")
