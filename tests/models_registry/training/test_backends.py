"""The training backend interface: every backend a job can name is registered and implements it;
cancelling reaches a job that trains elsewhere; a deferred launch keeps the job queued."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from moto import mock_aws

from config.env import ArtifactStore
from deployments.models import Event
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.exceptions import InvalidTrainingRequest, TrainingLaunchDeferred
from models_registry.models import TrainingJob
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import (
    follow_training_job,
    launch_training_job,
    start_training_job,
)
from models_registry.training.backends.base import (
    TRAINING_BACKENDS,
    TrainingBackend,
    training_backend,
    training_backend_for,
)
from models_registry.training.backends.sagemaker import SageMakerTrainingBackend
from models_registry.training.sagemaker_client import SageMakerTrainingClient
from tests.factories import TrainingJobFactory

REGION = "us-east-1"
BUCKET = "tenantml-test"
JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/tml-acme-intents-42"


def test_every_backend_a_job_can_name_is_registered_and_implements_the_interface():
    assert set(TRAINING_BACKENDS) == set(TrainingJob.Backend.values)
    for name in TRAINING_BACKENDS:
        backend = training_backend(name)
        assert isinstance(backend, TrainingBackend)
        assert backend.name == name
        assert backend.launch_task.startswith("models_registry.tasks.")


def test_an_unknown_backend_name_is_refused_naming_the_field():
    with pytest.raises(InvalidTrainingRequest) as refused:
        training_backend("gpu-farm")
    assert refused.value.field == "backend" and "local, sagemaker" in refused.value.message


@pytest.mark.django_db
def test_a_job_is_served_by_the_backend_it_names():
    job = TrainingJobFactory(backend="sagemaker")
    assert training_backend_for(job).name == "sagemaker"


@pytest.mark.django_db
def test_a_cancelled_sagemaker_job_is_stopped_when_followed(dummy_aws_credentials):
    job = TrainingJobFactory(
        backend="sagemaker",
        status=TrainingJob.Status.RUNNING,
        external_id=JOB_ARN,
        cancel_requested=True,
        attempts=1,
    )
    sagemaker = boto3.client("sagemaker", region_name=REGION)

    def described(status: str, secondary: str) -> dict:
        return {
            "TrainingJobName": "tml-acme-intents-42",
            "TrainingJobArn": JOB_ARN,
            "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/out/model.tar.gz"},
            "TrainingJobStatus": status,
            "SecondaryStatus": secondary,
            "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
            "CreationTime": datetime(2026, 1, 5, tzinfo=UTC),
        }

    with Stubber(sagemaker) as stub:
        stub.add_response("describe_training_job", described("InProgress", "Training"))
        stub.add_response("stop_training_job", {}, {"TrainingJobName": "tml-acme-intents-42"})
        stub.add_response("describe_training_job", described("Stopped", "Stopped"))
        client = SageMakerTrainingClient(client=sagemaker, min_interval_s=0.0)

        job = follow_training_job(job=job, backend=SageMakerTrainingBackend(client=client))

        stub.assert_no_pending_responses()
    assert job.status == TrainingJob.Status.CANCELLED and job.finished_at is not None


@pytest.mark.django_db
def test_a_launch_throttled_past_its_retries_stays_queued_without_using_an_attempt(
    tenant, settings, monkeypatch, dummy_aws_credentials
):
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/tenantml-training"
    # botocore's own backoff pauses, skipped (the client's own loop sleeps through ``sleep``).
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=lambda seconds: None))
    throttled = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()

    def throttle(request, **kwargs):
        return AWSResponse(request.url, 400, {}, SimpleNamespace(stream=lambda **kw: [throttled]))

    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        client = SageMakerTrainingClient(
            region=REGION, min_interval_s=0.0, max_retries=1, sleep=lambda seconds: None
        )
        client.client.meta.events.register_first(
            "before-send.sagemaker.CreateTrainingJob", throttle
        )
        dataset = create_dataset(
            tenant=tenant,
            name="t.csv",
            content=to_csv(generate_tickets("zoomride", rows=60, seed=1)),
            actor="t",
        )
        model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
        job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")

        with pytest.raises(TrainingLaunchDeferred):
            launch_training_job(job_id=job.pk, backend=SageMakerTrainingBackend(client=client))

    job.refresh_from_db()
    assert (job.status, job.attempts) == (TrainingJob.Status.QUEUED, 0)
    assert Event.objects.filter(kind="training.launch_throttled", tenant=tenant).exists()
