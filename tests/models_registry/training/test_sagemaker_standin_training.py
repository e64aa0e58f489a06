"""On the SageMaker stand-in, where a training job's entry point runs for real: a cancelled job is
stopped (StopTrainingJob, Stopping, Stopped) and never registered, and the next launch starts on
the warm pool it left, which the job records."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from config.env import ArtifactStore
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import (
    follow_training_job,
    launch_training_job,
    request_training_cancel,
    start_training_job,
    stop_cancelled_training_job,
)
from models_registry.training.backends.sagemaker import SageMakerTrainingBackend
from models_registry.training.sagemaker_client import SageMakerTrainingClient

pytestmark = pytest.mark.django_db

BUCKET = "tenantml-training"
ROLE_ARN = "arn:aws:iam::123456789012:role/tenantml-training"
FOLLOW_TIMEOUT_S = 90.0


def follow_until(
    job: TrainingJob, backend: SageMakerTrainingBackend, done: Callable[[TrainingJob], bool]
) -> TrainingJob:
    """Follow the job as the periodic pass does, a few times a second, until ``done``."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    while not done(job):
        assert time.monotonic() < deadline, f"job {job.pk} stayed {job.status}"
        time.sleep(0.1)
        job = follow_training_job(job=job, backend=backend)
    return job


def cancel(job: TrainingJob, backend: SageMakerTrainingBackend) -> TrainingJob:
    """Cancel as the API does, pass it on as the stop task does, then follow it to its end."""
    request_training_cancel(job=job, actor="t")
    job = stop_cancelled_training_job(job_id=job.pk, backend=backend)
    return follow_until(job, backend, lambda current: current.is_terminal)


def test_a_cancelled_job_is_stopped_never_registered_and_the_next_launch_reuses_its_warm_pool(
    clean_sagemaker_standin, settings, tenant, base_encoder_files, base_encoder_cache_dir
):
    standin = clean_sagemaker_standin
    standin.client("s3").create_bucket(Bucket=BUCKET)
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE_ARN
    settings.TENANTML_AWS_REGION = standin.region
    settings.TENANTML_SAGEMAKER_TRAINING_WARM_POOL_S = 300
    # Short provisioning and stop grace keep the test short; the entry point trains for real on
    # the session's exported base encoder.
    standin.configure_training(
        provisioning_s=0.2,
        stop_grace_s=2.0,
        environment={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
    )
    backend = SageMakerTrainingBackend(client=SageMakerTrainingClient(region=standin.region))
    rows = generate_tickets("zoomride", rows=120, seed=3)
    dataset = create_dataset(tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t")

    def launched(model_name: str) -> TrainingJob:
        model = create_model(tenant=tenant, name=model_name, kind="intent-classifier", actor="t")
        job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")
        return launch_training_job(job_id=job.pk, backend=backend)

    # Cancelled once its entry point runs (SageMaker's Training, 50 %): its instances started,
    # so they stay as a warm pool when it stops.
    first = follow_until(launched("intents"), backend, lambda job: job.progress_pct >= 50)
    first = cancel(first, backend)

    sagemaker = standin.client("sagemaker")
    first_aws = sagemaker.describe_training_job(TrainingJobName=first.external_id.split("/")[-1])
    assert first.status == TrainingJob.Status.CANCELLED, first.failure_reason
    assert first_aws["TrainingJobStatus"] == "Stopped"
    assert first.failure_reason == (
        "Cancelled on request: the training was stopped before it finished."
    )
    assert first.warm_pool_reused is False  # the first job provisioned its own instances

    second = follow_until(launched("faq"), backend, lambda job: job.warm_pool_reused is not None)
    left = sagemaker.describe_training_job(TrainingJobName=first_aws["TrainingJobName"])
    assert second.warm_pool_reused is True, left.get("WarmPoolStatus")
    second = cancel(second, backend)

    assert second.status == TrainingJob.Status.CANCELLED
    assert not ModelVersion.objects.filter(model__tenant=tenant).exists()
    standin.assert_no_training_processes()
