"""Training jobs, the quality gate, promotion, rollback and the training reconciler."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from config.celery import app
from deployments.models import Event
from models_registry.demo.tickets import generate_pairs, generate_tickets, to_csv
from models_registry.exceptions import (
    IdempotencyKeyReused,
    InvalidDataset,
    InvalidTrainingRequest,
    InvalidVersion,
    JobNotCancellable,
    NothingToRollBack,
    QualityGateFailed,
    TrainingBackendNotConfigured,
)
from models_registry.models import Dataset, ModelVersion, TrainingJob
from models_registry.quality_gate import evaluate_gate
from models_registry.services.datasets import create_dataset
from models_registry.services.promotion import apply_quality_gate, promote_version, rollback_model
from models_registry.services.training import (
    launch_training_job,
    package_trained_version,
    reconcile_training_jobs,
    request_training_cancel,
    start_training_job,
)
from models_registry.signals import version_activated
from models_registry.training.runner import ENTRYPOINT_MODULE
from tests.factories import (
    DatasetFactory,
    ModelVersionFactory,
    TenantModelFactory,
    TrainingJobFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(tenant):
    return TenantModelFactory(tenant=tenant, name="intents")


@pytest.fixture
def dataset(tenant):
    content = to_csv(generate_tickets("zoomride", rows=60, seed=0))
    return create_dataset(tenant=tenant, name="tickets.csv", content=content, actor="t")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- The quality gate (pure) ---


def test_gate_promotes_the_first_version():
    decision = evaluate_gate(
        candidate_metrics={"macro_f1": 0.5},
        active_metrics=None,
        primary_metric="macro_f1",
        tolerance=0.01,
    )
    assert decision.promote and "No active version" in decision.reason


@pytest.mark.parametrize(
    ("candidate", "active", "promote"),
    [(0.90, 0.85, True), (0.845, 0.85, True), (0.84, 0.85, True), (0.83, 0.85, False)],
)
def test_gate_allows_a_candidate_worse_only_within_the_tolerance(candidate, active, promote):
    decision = evaluate_gate(
        candidate_metrics={"macro_f1": candidate},
        active_metrics={"macro_f1": active},
        primary_metric="macro_f1",
        tolerance=0.01,
    )
    assert decision.promote is promote
    assert "macro_f1" in decision.reason


def test_gate_reads_lower_is_better_metrics_the_other_way():
    def decide(candidate: float) -> bool:
        return evaluate_gate(
            candidate_metrics={"loss": candidate},
            active_metrics={"loss": 0.30},
            primary_metric="loss",
            tolerance=0.01,
            higher_is_better=False,
        ).promote

    assert decide(0.25) and decide(0.305) and not decide(0.35)


def test_gate_holds_a_candidate_without_the_metric():
    decision = evaluate_gate(
        candidate_metrics={"accuracy": 0.99},
        active_metrics={"macro_f1": 0.8},
        primary_metric="macro_f1",
        tolerance=0.01,
    )
    assert not decision.promote and "no macro_f1" in decision.reason


# --- Starting jobs ---


def test_starting_a_job_queues_it_records_an_event_and_sends_the_task_on_commit(
    model, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job, created = start_training_job(
            model=model, dataset=dataset, actor="t", hyperparameters={"epochs": 3}
        )
    assert created and job.status == TrainingJob.Status.QUEUED
    assert job.hyperparameters == {"epochs": 3}
    assert len(callbacks) == 1
    assert Event.objects.filter(kind="training.queued", tenant=model.tenant).count() == 1


def test_a_double_click_gets_the_same_job(model, dataset):
    first, created = start_training_job(model=model, dataset=dataset, actor="t")
    again, created_again = start_training_job(model=model, dataset=dataset, actor="t")
    assert created and not created_again
    assert again.pk == first.pk
    other, created_other = start_training_job(
        model=model, dataset=dataset, actor="t", hyperparameters={"epochs": 9}
    )
    assert created_other and other.pk != first.pk


def test_a_failed_job_is_retried_by_the_same_request(model, dataset):
    first, _ = start_training_job(model=model, dataset=dataset, actor="t")
    TrainingJob.objects.filter(pk=first.pk).update(status=TrainingJob.Status.FAILED)
    retry, created = start_training_job(model=model, dataset=dataset, actor="t")
    assert created and retry.pk != first.pk
    assert start_training_job(model=model, dataset=dataset, actor="t")[0].pk == retry.pk


def test_a_client_key_always_names_one_job(model, dataset):
    first, _ = start_training_job(model=model, dataset=dataset, actor="t", idempotency_key="abc")
    TrainingJob.objects.filter(pk=first.pk).update(status=TrainingJob.Status.FAILED)
    again, created = start_training_job(
        model=model, dataset=dataset, actor="t", idempotency_key="abc"
    )
    assert not created and again.pk == first.pk
    with pytest.raises(IdempotencyKeyReused) as reused:
        start_training_job(
            model=model,
            dataset=dataset,
            actor="t",
            idempotency_key="abc",
            hyperparameters={"epochs": 2},
        )
    assert reused.value.status_code == 409 and reused.value.field == "idempotency_key"


@pytest.mark.parametrize(
    ("hyperparameters", "fragment"),
    [
        ([1, 2], "JSON object"),
        ({"layers": [1, 2]}, "hyperparameters.layers"),
        ({"opts": {"a": 1}}, "hyperparameters.opts"),
        ({"kind": "embedding"}, "hyperparameters.kind"),
        ({"lr": float("nan")}, "finite"),
    ],
)
def test_hyperparameters_must_be_scalars(model, dataset, hyperparameters, fragment):
    with pytest.raises(InvalidTrainingRequest) as invalid:
        start_training_job(model=model, dataset=dataset, actor="t", hyperparameters=hyperparameters)
    assert invalid.value.field == "hyperparameters"
    assert fragment in invalid.value.message
    assert not TrainingJob.objects.exists()


def test_another_tenants_dataset_is_refused_naming_dataset(model, other_tenant):
    foreign = DatasetFactory(tenant=other_tenant)
    with pytest.raises(InvalidDataset) as invalid:
        start_training_job(model=model, dataset=foreign, actor="t")
    assert invalid.value.field == "dataset"
    assert other_tenant.slug not in invalid.value.message


def test_an_invalid_dataset_is_refused(model, tenant):
    bad = DatasetFactory(tenant=tenant, status=Dataset.Status.INVALID)
    with pytest.raises(InvalidDataset) as invalid:
        start_training_job(model=model, dataset=bad, actor="t")
    assert invalid.value.field == "dataset"


def test_an_embedding_model_needs_a_dataset_with_groups(tenant, dataset):
    embeddings = TenantModelFactory(tenant=tenant, name="embeddings", kind="embedding")
    with pytest.raises(InvalidDataset) as invalid:
        start_training_job(model=embeddings, dataset=dataset, actor="t")
    assert invalid.value.field == "dataset" and "group" in invalid.value.message
    pairs = create_dataset(
        tenant=tenant,
        name="pairs.csv",
        content=to_csv(generate_pairs("northbank", groups=10)),
        actor="t",
    )
    job, created = start_training_job(model=embeddings, dataset=pairs, actor="t")
    assert created and job.dataset == pairs


def test_an_unknown_backend_is_refused_naming_backend(model, dataset):
    with pytest.raises(InvalidTrainingRequest) as invalid:
        start_training_job(model=model, dataset=dataset, actor="t", backend="gpu-farm")
    assert invalid.value.field == "backend"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_make_one_job():
    job_model = TenantModelFactory()
    dataset = DatasetFactory(tenant=job_model.tenant)
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start():
        try:
            barrier.wait()
            job, _ = start_training_job(
                model=job_model, dataset=dataset, actor="t", idempotency_key="same"
            )
            results.append(job.pk)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert TrainingJob.objects.filter(model=job_model).count() == 1


# --- Running jobs ---


def test_a_finished_job_is_returned_as_is(model, dataset):
    job = TrainingJobFactory(model=model, dataset=dataset, status=TrainingJob.Status.SUCCEEDED)
    assert launch_training_job(job_id=job.pk).status == TrainingJob.Status.SUCCEEDED
    job.refresh_from_db()
    assert job.attempts == 0


def test_a_redelivered_message_leaves_a_running_job_alone(model, dataset):
    job = TrainingJobFactory(
        model=model,
        dataset=dataset,
        status=TrainingJob.Status.RUNNING,
        attempts=1,
        heartbeat_at=timezone.now(),
    )
    launch_training_job(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (TrainingJob.Status.RUNNING, 1)


def test_a_job_cancelled_while_queued_never_runs(model, dataset):
    job, _ = start_training_job(model=model, dataset=dataset, actor="t")
    request_training_cancel(job=job, actor="t")
    job = launch_training_job(job_id=job.pk)
    assert job.status == TrainingJob.Status.CANCELLED and job.attempts == 0
    assert job.finished_at is not None


def test_training_end_to_end_registers_packages_and_promotes_the_first_version(
    model, dataset, settings, tmp_path
):
    settings.VAR_DIR = tmp_path / "var"
    job, _ = start_training_job(
        model=model, dataset=dataset, actor="t", hyperparameters={"epochs": 5}
    )
    job = launch_training_job(job_id=job.pk)
    assert job.status == TrainingJob.Status.SUCCEEDED, (job.failure_reason, job.log_tail)
    assert job.progress_pct == 100 and job.attempts == 1
    version = job.version
    assert version.status == ModelVersion.Status.READY
    assert "macro_f1" in version.metrics and version.sha256
    model.refresh_from_db()
    assert model.active_version == version
    assert job.gate_outcome == TrainingJob.GateOutcome.PROMOTED
    assert job.gate_reason.startswith("No active version")
    # Succeeded is said last: after the version was registered, packaged and promoted.
    kinds = list(
        Event.objects.filter(
            kind__in=[
                "training.trained",
                "version.packaged",
                "version.promoted",
                "training.succeeded",
            ]
        )
        .order_by("pk")
        .values_list("kind", flat=True)
    )
    assert kinds == [
        "training.trained",
        "version.packaged",
        "version.promoted",
        "training.succeeded",
    ]


# --- Packaging and gating a trained version ---


@pytest.fixture
def tasks_run_inline():
    """The worker's part, run in the test: a task sent on commit executes there."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def trained_job(model, dataset, artifact_dir, *, minutes_since_heartbeat=15, **version_fields):
    """A job its worker left in packaging: trained, its version registered, no package yet."""
    job = TrainingJobFactory(
        model=model,
        dataset=dataset,
        status=TrainingJob.Status.PACKAGING,
        attempts=1,
        packaging_attempts=1,
        progress_pct=100,
        external_id=str(dead_pid()),
        heartbeat_at=timezone.now() - timedelta(minutes=minutes_since_heartbeat),
    )
    fields = {"number": 1, "metrics": {"macro_f1": 0.9}, **version_fields}
    ModelVersionFactory(
        model=model,
        training_job=job,
        status=ModelVersion.Status.PACKAGING,
        artifact_uri=str(artifact_dir),
        host_memory_mb=None,
        **fields,
    )
    return job


def test_reconcile_resumes_packaging_of_a_job_whose_worker_was_lost_without_training_again(
    model, dataset, intent_artifact, tasks_run_inline, django_capture_on_commit_callbacks
):
    job = trained_job(model, dataset, intent_artifact)
    with django_capture_on_commit_callbacks(execute=True):
        changed = reconcile_training_jobs()
    assert changed == [job]
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, job.failure_reason
    assert job.gate_outcome == TrainingJob.GateOutcome.PROMOTED
    assert job.attempts == 1 and job.packaging_attempts == 2
    assert ModelVersion.objects.filter(model=model).count() == 1
    model.refresh_from_db()
    assert model.active_version == job.version and job.version.status == ModelVersion.Status.READY
    assert Event.objects.filter(kind="training.packaging_resumed").count() == 1
    assert not Event.objects.filter(kind="training.started").exists()


def test_reconcile_fails_a_job_that_lost_its_worker_while_packaging_twice(
    model, dataset, intent_artifact, django_capture_on_commit_callbacks
):
    job = trained_job(model, dataset, intent_artifact)
    TrainingJob.objects.filter(pk=job.pk).update(packaging_attempts=2)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert reconcile_training_jobs() == [job]
    assert callbacks == []
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED and job.gate_outcome == ""
    assert job.failure_reason.startswith("Packaging failed: worker stopped while packaging")
    version = ModelVersion.objects.get(training_job=job)
    assert version.status == ModelVersion.Status.FAILED
    assert version.status_reason.startswith("Packaging failed")


def test_reconcile_leaves_a_job_packaging_with_a_recent_heartbeat(model, dataset, intent_artifact):
    trained_job(model, dataset, intent_artifact, minutes_since_heartbeat=1)
    assert reconcile_training_jobs() == []


def test_a_redelivered_launch_never_trains_a_job_that_is_packaging(model, dataset, intent_artifact):
    job = trained_job(model, dataset, intent_artifact)
    job = launch_training_job(job_id=job.pk)
    assert job.status == TrainingJob.Status.PACKAGING and job.attempts == 1
    assert not Event.objects.filter(kind="training.started").exists()


def test_a_version_held_by_the_gate_ends_the_job_succeeded_and_held_with_the_reason(
    model, dataset, intent_artifact
):
    active = ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.95})
    promote_version(version=active, actor="t")
    job = trained_job(model, dataset, intent_artifact, number=2, metrics={"macro_f1": 0.5})
    job = package_trained_version(job_id=job.pk)
    assert job.status == TrainingJob.Status.SUCCEEDED
    assert job.gate_outcome == TrainingJob.GateOutcome.HELD
    assert "0.5000 is worse than the active version's 0.9500" in job.gate_reason
    model.refresh_from_db()
    assert model.active_version == active
    assert job.version.status == ModelVersion.Status.READY


def test_a_version_that_cannot_be_packaged_fails_its_job_saying_so(model, dataset, tmp_path):
    job = trained_job(model, dataset, tmp_path / "no-artifact-here")
    job = package_trained_version(job_id=job.pk)
    assert job.status == TrainingJob.Status.FAILED
    assert job.failure_reason.startswith("Packaging failed: ")
    assert job.gate_outcome == "" and job.finished_at is not None
    assert ModelVersion.objects.get(training_job=job).status == ModelVersion.Status.FAILED
    model.refresh_from_db()
    assert model.active_version is None


def test_a_job_packaging_its_version_cannot_be_cancelled(model, dataset, intent_artifact):
    job = trained_job(model, dataset, intent_artifact, minutes_since_heartbeat=0)
    with pytest.raises(JobNotCancellable) as refused:
        request_training_cancel(job=job, actor="t")
    assert refused.value.status_code == 409 and "being packaged" in refused.value.message
    job.refresh_from_db()
    assert not job.cancel_requested


# --- Promotion and rollback ---


def test_promoting_sets_the_active_version_and_hands_it_to_deployment(model):
    handed: list = []

    def listener(sender, *, version, actor, **kwargs):
        handed.append(version.number)

    version_activated.connect(listener, weak=False, dispatch_uid="test-listener")
    try:
        version = ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.8})
        promoted = promote_version(version=version, actor="t")
    finally:
        version_activated.disconnect(dispatch_uid="test-listener")
    model.refresh_from_db()
    assert model.active_version == promoted and promoted.promoted_at is not None
    assert handed == [1]
    assert Event.objects.filter(kind="version.promoted", version=version).exists()


def test_only_ready_versions_are_promoted(model):
    version = ModelVersionFactory(model=model, number=1, status=ModelVersion.Status.PACKAGING)
    with pytest.raises(InvalidVersion):
        promote_version(version=version, actor="t")


def test_a_worse_version_is_held_back_with_the_reason_unless_forced(model):
    good = ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.9})
    promote_version(version=good, actor="t")
    worse = ModelVersionFactory(model=model, number=2, metrics={"macro_f1": 0.7})
    with pytest.raises(QualityGateFailed) as held:
        promote_version(version=worse, actor="t")
    assert held.value.status_code == 409
    worse.refresh_from_db()
    model.refresh_from_db()
    assert model.active_version == good
    assert "quality gate" in worse.status_reason and "0.7000" in worse.status_reason
    assert Event.objects.filter(kind="version.held", version=worse).exists()
    promote_version(version=worse, actor="ops", force=True)
    model.refresh_from_db()
    worse.refresh_from_db()
    assert model.active_version == worse
    assert "over the quality gate" in worse.status_reason


def test_apply_quality_gate_promotes_a_version_within_tolerance(model, settings):
    settings.TENANTML_QUALITY_GATE_TOLERANCE = 0.05
    promote_version(
        version=ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.9}), actor="t"
    )
    candidate = ModelVersionFactory(model=model, number=2, metrics={"macro_f1": 0.86})
    assert apply_quality_gate(version=candidate, actor="t").promote
    model.refresh_from_db()
    assert model.active_version == candidate


def test_rollback_reactivates_the_previously_promoted_version(model):
    first = ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.8})
    second = ModelVersionFactory(model=model, number=2, metrics={"macro_f1": 0.85})
    promote_version(version=first, actor="t")
    promote_version(version=second, actor="t")
    restored = rollback_model(model=model, actor="t")
    model.refresh_from_db()
    second.refresh_from_db()
    assert restored == first and model.active_version == first
    assert second.promoted_at is None and "Rolled back" in second.status_reason
    with pytest.raises(NothingToRollBack):
        rollback_model(model=model, actor="t")
    assert Event.objects.filter(kind="model.rolled_back").count() == 1


def test_rollback_without_an_active_version_is_a_conflict(model):
    with pytest.raises(NothingToRollBack) as nothing:
        rollback_model(model=model, actor="t")
    assert nothing.value.status_code == 409


# --- Reconciling ---


def stale_running_job(model, dataset, **fields) -> TrainingJob:
    return TrainingJobFactory(
        model=model,
        dataset=dataset,
        status=TrainingJob.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(minutes=5),
        **fields,
    )


def test_reconcile_fails_a_job_whose_process_died_on_its_last_attempt(model, dataset):
    job = stale_running_job(model, dataset, attempts=2, external_id=str(dead_pid()))
    changed = reconcile_training_jobs()
    job.refresh_from_db()
    assert changed == [job]
    assert job.status == TrainingJob.Status.FAILED
    assert job.failure_reason.startswith("worker stopped while the job was running")
    assert "last heartbeat" in job.failure_reason and job.finished_at is not None


def test_reconcile_queues_a_lost_job_again_once(model, dataset, django_capture_on_commit_callbacks):
    job = stale_running_job(model, dataset, attempts=1, external_id=str(dead_pid()))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        reconcile_training_jobs()
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.QUEUED
    assert len(callbacks) == 1
    assert Event.objects.filter(kind="training.requeued").exists()


def test_reconcile_keeps_following_a_live_training_process(model, dataset):
    # Named like the training entry point, which is what the reconciler recognises.
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", ENTRYPOINT_MODULE]
    )
    try:
        job = stale_running_job(model, dataset, attempts=2, external_id=str(process.pid))
        assert reconcile_training_jobs() == []
        job.refresh_from_db()
        assert job.status == TrainingJob.Status.RUNNING
    finally:
        process.kill()
        process.wait()


def test_reconcile_leaves_jobs_with_a_fresh_heartbeat(model, dataset):
    TrainingJobFactory(
        model=model, dataset=dataset, status="running", attempts=1, heartbeat_at=timezone.now()
    )
    assert reconcile_training_jobs() == []


def test_reconcile_resends_a_queued_job_no_worker_picked_up(
    model, dataset, django_capture_on_commit_callbacks
):
    job = TrainingJobFactory(model=model, dataset=dataset)
    TrainingJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert reconcile_training_jobs() == [job]
    assert len(callbacks) == 1
    # Sent once; the next pass within STALE_QUEUED leaves it alone.
    assert reconcile_training_jobs() == []


# --- SageMaker jobs ---


def test_a_sagemaker_job_without_a_role_fails_saying_so(model, dataset, settings):
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ""
    job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")
    with pytest.raises(TrainingBackendNotConfigured):
        launch_training_job(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED
    assert "SageMaker training is not configured" in job.failure_reason
