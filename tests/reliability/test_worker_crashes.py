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
    with_log,
)
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_log(tmp_path):
    app.control.purge()  # messages other tests sent and no worker took
    return tmp_path / "worker.log"


def test_a_training_job_whose_worker_is_killed_completes_exactly_once(tmp_path, worker_log):
    model, job = queued_training_job(seed=1)

    first = Worker(worker_log)
    try:
        running = wait_until(
            lambda: (
                TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING)
                .exclude(external_id="")
                .first()
            ),
            120,
            with_log("the first worker did not start training", worker_log),
            interval_s=0.2,
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
        # Placed: the rollout has started, and loading and probing the version still lie ahead.
        wait_until(
            lambda: Placement.objects.filter(version=version).exists(),
            120,
            with_log("the first worker did not start loading", worker_log),
        )
    finally:
        first.kill_hard()
    try:
        # The worker is dead, so this is the state it left: killed mid-rollout, before the switch.
        at_kill = Deployment.objects.get(pk=deployment.pk)
        assert (at_kill.status, at_kill.target_version_id, at_kill.live_version_id) == (
            Deployment.Status.ROLLING_OUT,
            version.pk,
            None,
        ), f"the rollout was not in progress when its worker was killed: {at_kill.status}"
        assert not Event.objects.filter(kind="deployment.switched", version=version).exists()
        # Five minutes later the reconciler finds the rollout stalled and queues it again.
        report = reconciler.reconcile_fleet(now=timezone.now() + timedelta(seconds=301))
        assert report.rollouts_requeued == [deployment.pk]
        second = Worker(worker_log)
        try:
            live = wait_until(
                lambda: Deployment.objects.filter(
                    pk=deployment.pk,
                    status__in=[Deployment.Status.LIVE, Deployment.Status.FAILED],
                ).first(),
                180,
                with_log("the second worker did not finish the rollout", worker_log),
                interval_s=0.2,
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
