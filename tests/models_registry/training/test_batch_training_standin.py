"""On the SageMaker stand-in, where training jobs run for real: twenty tenants onboarding faster
than one launch a second train in fewer training jobs than there are tenants, and every tenant
gets its own version, registered from its own task's artifact and handed to packaging and the
quality gate on its own."""

from __future__ import annotations

import time

import pytest

from config.celery import app
from config.env import ArtifactStore
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services import batch_training
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import package_trained_version, start_training_job
from models_registry.training.backends.sagemaker_batch import SageMakerBatchBackend
from models_registry.training.sagemaker_client import SageMakerTrainingClient
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

BUCKET = "tenantml-batches"
ROLE_ARN = "arn:aws:iam::123456789012:role/tenantml-training"
TENANTS = 20
FOLLOW_TIMEOUT_S = 240.0


@pytest.fixture
def tasks_run_inline():
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_twenty_queued_onboardings_launch_fewer_jobs_and_every_tenant_gets_its_own_version(
    clean_sagemaker_standin,
    settings,
    base_encoder_files,
    base_encoder_cache_dir,
    tasks_run_inline,
    django_capture_on_commit_callbacks,
):
    standin = clean_sagemaker_standin
    standin.client("s3").create_bucket(Bucket=BUCKET)
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE_ARN
    settings.TENANTML_AWS_REGION = standin.region
    # The defaults: batches from four waiting jobs, four jobs an instance, four instances at most.
    assert settings.TENANTML_TRAINING_BATCH_MIN_JOBS == 4
    standin.configure_training(
        provisioning_s=0.2,
        stop_grace_s=2.0,
        environment={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
    )
    backend = SageMakerBatchBackend(client=SageMakerTrainingClient(region=standin.region))
    started = time.monotonic()

    # Twenty onboardings arrive while the worker is busy: their launch messages queue up.
    with django_capture_on_commit_callbacks(execute=False) as queued:
        for index in range(TENANTS):
            tenant = TenantFactory(slug=f"tenant-{index:02d}")
            rows = generate_tickets("zoomride", rows=40, seed=index)
            dataset = create_dataset(
                tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t"
            )
            model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
            start_training_job(
                model=model,
                dataset=dataset,
                actor="t",
                backend="sagemaker",
                hyperparameters={"epochs": 50},
            )
    assert len(queued) == TENANTS
    # The worker takes its queue in order: each launch trains its job in a batch (the first of
    # each batch launches it, the others find their job in it already).
    for job_id in TrainingJob.objects.order_by("pk").values_list("pk", flat=True):
        assert batch_training.launch_in_batch(job_id=job_id, backend=backend) is not None

    launched = standin.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert 1 <= len(launched) < TENANTS
    assert not TrainingJob.objects.filter(status=TrainingJob.Status.QUEUED).exists()
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    # The periodic follower's pass, a few times a second, until every task has reported; the
    # packaging messages it sends are kept.
    sent: list = []
    while TrainingJob.objects.filter(status__in=["launching", "running"]).exists():
        assert time.monotonic() < deadline, list(TrainingJob.objects.values("pk", "status"))
        time.sleep(0.2)
        with django_capture_on_commit_callbacks(execute=False) as sent_now:
            batch_training.follow_training_batches(backend=backend)
        sent += sent_now

    jobs = list(TrainingJob.objects.select_related("model__tenant").order_by("pk"))
    assert [job.failure_reason for job in jobs if job.status != "packaging"] == []
    assert len({job.batch_name for job in jobs}) == len(launched)
    assert len(sent) == TENANTS  # every version handed to the packaging task
    s3 = standin.client("s3")
    artifacts = set()
    for job in jobs:
        version = job.version
        assert version.model == job.model and version.metrics["macro_f1"] >= 0
        assert version.artifact_uri.endswith(f"/output/{job.pk}/model.tar.gz")
        key = version.artifact_uri.removeprefix(f"s3://{BUCKET}/")
        artifacts.add(s3.head_object(Bucket=BUCKET, Key=key)["ETag"])
    assert len(artifacts) == TENANTS  # each tenant's own trained model
    # Packaging and the gate are the same per version as for a job trained alone; run them for
    # the first job of each batch, as the packaging worker would.
    for name in sorted({job.batch_name for job in jobs}):
        first = next(job for job in jobs if job.batch_name == name)
        with django_capture_on_commit_callbacks(execute=True):
            packaged = package_trained_version(job_id=first.pk)
        assert packaged.status == TrainingJob.Status.SUCCEEDED, packaged.failure_reason
        assert packaged.gate_outcome == TrainingJob.GateOutcome.PROMOTED
        assert packaged.version.status == ModelVersion.Status.READY
    standin.assert_no_training_processes()
    print(f"twenty onboardings, {len(launched)} launches: {time.monotonic() - started:.1f} s")
