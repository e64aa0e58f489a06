"""The reconciler and the warm-ups on real local Triton processes: a killed instance is restarted
and its hot and pinned models come back within two minutes, drift (a model missing, an orphan
loaded) is repaired, retries are bounded, and warm-ups skip recently used models and report their
cost."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from deployments import usage
from deployments.backends.local import reconcile as local_reconcile
from deployments.backends.local import runtime
from deployments.models import Deployment, Endpoint, Event, Instance, Placement
from deployments.services import reconciler, warmups
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version
from tests.triton_support import UPPER_CASE_ECHO, write_model

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

TICKET = ["Where is my refund?"]


def deployed_model(artifact, *, slug: str, name: str = "intents", tier: str = "standard"):
    model = TenantModelFactory(tenant=TenantFactory(slug=slug, tier=tier), name=name)
    packaged_version(model, artifact, 1, promote=True)
    secret = issue_token(tenant=model.tenant, name="t", actor="test").secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    url = f"/api/v1/tenants/{slug}/models/{name}/"
    assert client.post(url + "deployments/", {}, format="json").status_code == 202
    model.refresh_from_db()
    return model, client, url + "invoke"


def kill_hard(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(timeout=10) if psutil.pid_exists(pid) else None


def test_the_reconciler_runs_every_minute():
    task = PeriodicTask.objects.get(task="deployments.tasks.reconcile_fleet")
    assert task.enabled and task.interval.every == 60 and task.interval.period == "seconds"


def test_a_killed_instance_is_restarted_with_its_hot_model_within_two_minutes(intent_artifact):
    model, client, invoke_url = deployed_model(intent_artifact, slug="acme")
    assert client.post(invoke_url, {"inputs": TICKET}, format="json").status_code == 200
    usage.flush_usage()  # what the web process's flusher does every few seconds
    instance = Instance.objects.get(endpoint__name="local-intent-classifier")
    old_pid = instance.pid

    kill_hard(old_pid)
    started = time.monotonic()
    # Meanwhile a request gets a clear, retryable answer, never a 500.
    during = client.post(invoke_url, {"inputs": TICKET}, format="json")
    assert during.status_code in (502, 503), during.content
    report = reconciler.reconcile_fleet()
    repaired_in_s = time.monotonic() - started

    assert repaired_in_s < 120
    assert report.instances_restarted == [str(instance)]
    instance.refresh_from_db()
    assert instance.status == Instance.Status.HEALTHY and instance.pid != old_pid
    assert instance.restarts == 1
    placement = Placement.objects.get(version=model.active_version, instance=instance)
    assert placement.actual_state == Placement.ActualState.LOADED
    answer = client.post(invoke_url, {"inputs": TICKET}, format="json")
    assert answer.status_code == 200 and answer.json()["cold_start"] is False
    assert Event.objects.filter(kind="instance.restarted", actor="reconciler").exists()
    assert Event.objects.filter(kind="placement.reloaded", version=model.active_version).exists()


def test_after_a_restart_pinned_models_return_and_cold_unpinned_ones_wait(intent_artifact):
    premium, _, _ = deployed_model(intent_artifact, slug="premium", tier="premium")
    idle, _, _ = deployed_model(intent_artifact, slug="idle")
    instance = Instance.objects.get(endpoint__name="local-intent-classifier")
    Placement.objects.filter(version=idle.active_version).update(
        last_invoked_at=timezone.now() - timedelta(hours=2)
    )
    kill_hard(instance.pid)

    reconciler.reconcile_fleet()

    pinned = Placement.objects.get(version=premium.active_version)
    cold = Placement.objects.get(version=idle.active_version)
    assert pinned.is_pinned and pinned.actual_state == Placement.ActualState.LOADED
    # Idle for two hours: it loads again on its next request rather than taking memory now.
    assert cold.actual_state == Placement.ActualState.UNLOADED


def test_drift_is_repaired_missing_models_reloaded_and_orphans_unloaded(intent_artifact, tmp_path):
    model, client, invoke_url = deployed_model(intent_artifact, slug="acme", tier="premium")
    instance = Instance.objects.get(endpoint__name="local-intent-classifier")
    triton = runtime.client_for(instance)
    name = model.active_version.triton_model_name
    triton.unload_model(name)  # behind the platform's back
    placement = Placement.objects.get(version=model.active_version)
    stray_repository = tmp_path / "stray"
    write_model(stray_repository, "stray", UPPER_CASE_ECHO)
    triton.load_model("stray-model", str(stray_repository), timeout_s=60)

    report = reconciler.reconcile_fleet()

    assert report.marked_missing and report.reloaded
    assert report.orphans_unloaded == [f"stray-model on {instance}"]
    loaded = {m.name for m in triton.list_models()}
    assert name in loaded and "stray-model" not in loaded
    placement.refresh_from_db()
    assert placement.actual_state == Placement.ActualState.LOADED
    assert Event.objects.filter(kind="placement.orphan_unloaded").exists()
    assert Event.objects.filter(kind="placement.missing", version=model.active_version).exists()


def test_a_placement_that_keeps_failing_is_retried_a_bounded_number_of_times(intent_artifact):
    model, _, _ = deployed_model(intent_artifact, slug="acme", tier="premium")
    placement = Placement.objects.get(version=model.active_version)
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.FAILED, retries=local_reconcile.MAX_LOAD_RETRIES
    )

    report = reconciler.reconcile_fleet()

    placement.refresh_from_db()
    assert placement.actual_state == Placement.ActualState.FAILED
    assert report.reloaded == []


def test_an_instance_that_cannot_be_restarted_is_given_up_after_bounded_attempts(
    intent_artifact,
):
    deployed_model(intent_artifact, slug="acme")
    instance = Instance.objects.get(endpoint__name="local-intent-classifier")
    kill_hard(instance.pid)
    Instance.objects.filter(pk=instance.pk).update(failed_restarts=local_reconcile.MAX_RESTARTS)

    report = reconciler.reconcile_fleet()

    instance.refresh_from_db()
    assert instance.status == Instance.Status.STOPPED
    assert report.instances_given_up == [str(instance)]
    # The endpoint's minimum is met again with a fresh instance.
    endpoint = Endpoint.objects.get(name="local-intent-classifier")
    assert endpoint.instances.filter(status=Instance.Status.HEALTHY).count() == 1


def test_a_stalled_rollout_is_queued_again(intent_artifact):
    model, _, _ = deployed_model(intent_artifact, slug="acme")
    deployment = Deployment.objects.get(model=model)
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Deployment.Status.ROLLING_OUT,
        target_version=model.active_version,
        live_version=None,
        attempts=1,
    )
    Deployment.objects.filter(pk=deployment.pk).update(
        updated_at=timezone.now() - timedelta(minutes=10)
    )

    report = reconciler.reconcile_fleet()

    assert report.rollouts_requeued == [deployment.pk]
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.LIVE
    assert deployment.live_version == model.active_version


def test_warm_up_skips_recent_models_warms_the_rest_and_reports_its_cost(intent_artifact):
    busy, client, busy_url = deployed_model(intent_artifact, slug="busy")
    quiet, _, _ = deployed_model(intent_artifact, slug="quiet")
    Placement.objects.filter(version=quiet.active_version).update(
        last_invoked_at=timezone.now() - timedelta(hours=2)
    )
    assert client.post(busy_url, {"inputs": TICKET}, format="json").status_code == 200
    usage.flush_usage()

    report = warmups.warm_up_fleet(skip_recent_s=600, policy="hourly-skip-recent")

    assert report.skipped_recent == 1 and report.warmed == 1 and report.failed == 0
    assert report.seconds > 0 and report.usd > 0
    warmed = Placement.objects.get(version=quiet.active_version)
    assert warmed.last_warmed_at is not None and warmed.warmup_latency_ms > 0
    event = Event.objects.filter(kind="warmup.completed").latest("id")
    assert event.data["warmed"] == 1 and event.data["skipped_recent"] == 1
    assert event.data["usd"] > 0
    assert PeriodicTask.objects.get(task="deployments.tasks.warm_up_fleet").interval.every == 3600


def test_warm_up_reloads_a_live_model_only_when_it_fits_without_evicting(intent_artifact):
    model, _, _ = deployed_model(intent_artifact, slug="acme")
    placement = Placement.objects.get(version=model.active_version)
    runtime.unload_placement(placement=placement, actor="test", reason="test")
    instance = placement.instance
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=1)

    tight = warmups.warm_up_fleet(skip_recent_s=0, policy="hourly-skip-recent")

    assert tight.skipped_no_room == 1 and tight.warmed == 0
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=4000)
    roomy = warmups.warm_up_fleet(skip_recent_s=0, policy="hourly-skip-recent")
    assert roomy.warmed == 1 and roomy.cold_starts == 1
    placement.refresh_from_db()
    assert placement.actual_state == Placement.ActualState.LOADED


def test_an_instance_over_a_lowered_budget_is_trimmed_keeping_pinned_models(intent_artifact):
    pinned, _, _ = deployed_model(intent_artifact, slug="premium", tier="premium")
    other, _, _ = deployed_model(intent_artifact, slug="standard")
    instance = Instance.objects.get(endpoint__name="local-intent-classifier")
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=150)  # room for one

    report = reconciler.reconcile_fleet()

    assert report.trimmed == [f"{other.active_version.triton_model_name} on {instance}"]
    loaded = {m.name for m in runtime.client_for(instance).list_models()}
    assert loaded == {pinned.active_version.triton_model_name}
    evicted = Placement.objects.get(version=other.active_version)
    assert evicted.actual_state == Placement.ActualState.EVICTED
    event = Event.objects.filter(kind="placement.evicted", version=other.active_version).get()
    assert "memory budget" in event.message


def test_an_instance_marked_unhealthy_that_answers_is_routed_to_again(intent_artifact):
    model, client, invoke_url = deployed_model(intent_artifact, slug="acme")
    instance = Instance.objects.get(endpoint__name="local-intent-classifier")
    Instance.objects.filter(pk=instance.pk).update(status=Instance.Status.UNHEALTHY)
    assert client.post(invoke_url, {"inputs": TICKET}, format="json").status_code == 503

    report = reconciler.reconcile_fleet()

    assert report.instances_recovered == [str(instance)] and report.instances_restarted == []
    instance.refresh_from_db()
    assert instance.status == Instance.Status.HEALTHY
    assert client.post(invoke_url, {"inputs": TICKET}, format="json").status_code == 200
