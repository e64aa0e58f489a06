"""Batch training through the service on the local backend, with real training: queued tenant
jobs train in one batch of host processes, each tenant gets its own version (registered,
packaged and gated on its own), and a task refused as it trains fails only its tenant's job."""

from __future__ import annotations

import pytest

from config.celery import app
from deployments.models import Event
from models_registry import artifacts
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.batch_training import launch_in_batch
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import start_training_job
from models_registry.training.backends.local_batch import LocalBatchBackend
from tests.factories import DatasetFactory, TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def batching_here(settings, base_encoder_files, base_encoder_cache_dir):
    """Batches of three on two local host processes, sharing the session's base-encoder export;
    the tasks a batch sends (packaging) run inline."""
    settings.TENANTML_TRAINING_BATCH_MIN_JOBS = 3
    settings.TENANTML_TRAINING_BATCH_MAX_INSTANCES = 2
    settings.TENANTML_TRAINING_BATCH_TASKS_PER_INSTANCE = 2
    settings.VAR_DIR = base_encoder_cache_dir.parent.parent  # <var>/cache/base_models
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def onboard(slug: str, rows: list[dict], *, split: dict | None = None) -> TrainingJob:
    """A new tenant's first training job, queued (its launch message is not delivered here);
    ``split`` stores the dataset as one uploaded with that split."""
    tenant = TenantFactory(slug=slug)
    if split is None:
        dataset = create_dataset(tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t")
    else:
        stored = artifacts.put_bytes(f"datasets/{slug}/tickets.csv", to_csv(rows))
        dataset = DatasetFactory(
            tenant=tenant, storage_uri=stored.uri, sha256=stored.sha256, rows=len(rows), split=split
        )
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    job, _ = start_training_job(
        model=model, dataset=dataset, actor="t", hyperparameters={"epochs": 50}
    )
    return job


def test_a_batch_gives_each_tenant_its_own_version_and_a_refused_task_fails_only_its_job(
    batching_here, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        acme = onboard("acme", generate_tickets("zoomride", rows=40, seed=1))
        globex = onboard("globex", generate_tickets("zoomride", rows=40, seed=2))
        # Stored with a split that left no validation rows: its task is refused as it starts.
        rows = generate_tickets("zoomride", rows=40, seed=3)
        solo = onboard("solo", rows, split={"train": list(range(40)), "validation": []})

    with django_capture_on_commit_callbacks(execute=True):
        launched = launch_in_batch(job_id=acme.pk, backend=LocalBatchBackend())

    assert launched is not None
    jobs = {
        job.model.tenant.slug: job for job in TrainingJob.objects.select_related("model__tenant")
    }
    assert len({job.batch_name for job in jobs.values()}) == 1 and launched.batch_name
    assert {job.batch_host for job in jobs.values()} == {"algo-1", "algo-2"}
    for slug in ("acme", "globex"):
        job = jobs[slug]
        assert job.status == TrainingJob.Status.SUCCEEDED, job.failure_reason
        version = ModelVersion.objects.get(training_job=job)
        assert version.model == job.model and version.status == ModelVersion.Status.READY
        assert version.package_uri and "macro_f1" in version.metrics
        assert job.gate_outcome == TrainingJob.GateOutcome.PROMOTED
        job.model.refresh_from_db()
        assert job.model.active_version == version
    assert jobs["solo"].status == TrainingJob.Status.FAILED
    assert jobs["solo"].failure_reason == "The validation channel (validation.jsonl) has no rows."
    assert not ModelVersion.objects.filter(model=jobs["solo"].model).exists()
    # Each tenant's event log tells its own story: started in the batch, then its outcome.
    assert Event.objects.filter(tenant=solo.model.tenant, kind="training.failed").exists()
    started = Event.objects.get(tenant=globex.model.tenant, kind="training.started")
    assert launched.batch_name in started.message
