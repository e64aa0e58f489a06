"""SageMaker training jobs end to end against moto: inputs uploaded, CreateTrainingJob called,
the finished job's ``model.tar.gz`` registered, packaged and promoted as the next version."""

from __future__ import annotations

import io
import tarfile

import boto3
import pytest
from moto import mock_aws

from config.env import ArtifactStore
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.exceptions import TrainingBackendNotConfigured
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import (
    follow_training_job,
    launch_training_job,
    start_training_job,
)
from models_registry.training.backends.sagemaker import SageMakerTrainingBackend
from models_registry.training.sagemaker_client import SageMakerTrainingClient

pytestmark = pytest.mark.django_db

BUCKET = "tenantml-test"
ROLE = "arn:aws:iam::123456789012:role/tenantml-training"


@pytest.fixture
def aws(settings, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield SageMakerTrainingClient(region="us-east-1", sleep=lambda seconds: None)


def model_tarball(artifact_dir) -> bytes:
    """The model directory as SageMaker uploads it: its files at the archive's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(artifact_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def test_a_sagemaker_job_is_launched_followed_and_its_artifact_becomes_the_active_version(
    aws, tenant, intent_artifact
):
    rows = generate_tickets("zoomride", rows=120, seed=3)
    dataset = create_dataset(tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t")
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")

    job = launch_training_job(job_id=job.pk, backend=SageMakerTrainingBackend(client=aws))

    assert job.status == TrainingJob.Status.RUNNING
    assert job.external_id.startswith("arn:aws:sagemaker:us-east-1:")
    s3 = boto3.client("s3", region_name="us-east-1")
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    prefix = f"platform/training/{job.pk}"
    assert {f"{prefix}/train/train.jsonl", f"{prefix}/validation/validation.jsonl"} <= keys
    assert f"{prefix}/code/sourcedir.tar.gz" in keys
    described = aws.client.describe_training_job(TrainingJobName=job.external_id.split("/")[-1])
    assert described["RoleArn"] == ROLE
    assert described["HyperParameters"]["kind"] == "intent-classifier"
    # moto finishes every job at once; put the trained model where SageMaker would.
    artifacts_uri = described["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, _, key = artifacts_uri.removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(intent_artifact))

    job = follow_training_job(job=job, backend=SageMakerTrainingBackend(client=aws))

    assert job.status == TrainingJob.Status.SUCCEEDED
    version = ModelVersion.objects.get(training_job=job)
    assert version.artifact_uri == artifacts_uri
    assert version.status == ModelVersion.Status.READY
    assert version.package_uri.startswith(f"s3://{BUCKET}/platform/packages/")
    model.refresh_from_db()
    assert model.active_version == version


def test_a_launch_without_an_s3_artifact_store_fails_the_job_saying_why(aws, tenant, settings):
    settings.ARTIFACT_STORE = ArtifactStore(kind="local", root="/tmp/unused")
    rows = generate_tickets("zoomride", rows=60, seed=1)
    dataset = create_dataset(tenant=tenant, name="t.csv", content=to_csv(rows), actor="t")
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")

    with pytest.raises(TrainingBackendNotConfigured, match="s3:// ARTIFACT_STORE"):
        launch_training_job(job_id=job.pk, backend=SageMakerTrainingBackend(client=aws))

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED
