"""SageMaker training jobs end to end against moto and botocore's Stubber: inputs uploaded,
CreateTrainingJob called, the finished job's ``model.tar.gz`` registered, packaged and promoted as
the next version; a cancelled job stopped and never registered; warm-pool reuse recorded."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from django.utils import timezone
from moto import mock_aws

from config.env import ArtifactStore
from deployments.models import Event
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.exceptions import TrainingBackendNotConfigured
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import (
    follow_training_job,
    launch_training_job,
    reconcile_training_jobs,
    request_training_cancel,
    start_training_job,
    stop_cancelled_training_job,
)
from models_registry.services.training_cleanup import release_ended_jobs
from models_registry.training.backends.sagemaker import SageMakerTrainingBackend
from models_registry.training.launch_rate import IntervalRateLimiter
from models_registry.training.sagemaker_client import SageMakerTrainingClient
from tests.factories import TrainingJobFactory

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

    # Once the job has ended, its uploaded split and code go; the artifact the version uses stays.
    released = release_ended_jobs(
        now=job.finished_at + timedelta(minutes=3), backend=SageMakerTrainingBackend(client=aws)
    )
    assert released == [job.pk]
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert keys == {key}
    assert release_ended_jobs(now=job.finished_at + timedelta(minutes=3)) == []


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


# --- Cancel: StopTrainingJob, followed to Stopped, never registered ---------------------------

JOB_NAME = "tml-acme-intents-42"
JOB_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{JOB_NAME}"
CREATED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def described(status: str, secondary: str, **extra) -> dict:
    """A DescribeTrainingJob answer in the API's real shape."""
    return {
        "TrainingJobName": JOB_NAME,
        "TrainingJobArn": JOB_ARN,
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/out/{JOB_NAME}/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
        "CreationTime": CREATED,
        **extra,
    }


@pytest.fixture
def stubbed(dummy_aws_credentials):
    """A SageMaker backend whose every AWS answer the test gives, in order (Stubber)."""
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    client = SageMakerTrainingClient(client=sagemaker, launch_limiter=IntervalRateLimiter(0.0))
    with Stubber(sagemaker) as stub:
        yield stub, SageMakerTrainingBackend(client=client)
        stub.assert_no_pending_responses()


def test_cancelling_a_running_job_stops_it_on_sagemaker_and_it_ends_cancelled(
    stubbed, tenant, django_capture_on_commit_callbacks
):
    stub, backend = stubbed
    job = TrainingJobFactory(
        model__tenant=tenant,
        backend="sagemaker",
        status=TrainingJob.Status.RUNNING,
        external_id=JOB_ARN,
        attempts=1,
        heartbeat_at=timezone.now(),
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        request_training_cancel(job=job, actor="t")
    assert len(sent) == 1  # the stop goes to a worker as soon as the cancel commits

    # The stop task: the job is in progress, so StopTrainingJob; SageMaker says Stopping.
    stub.add_response("describe_training_job", described("InProgress", "Training"))
    stub.add_response("stop_training_job", {}, {"TrainingJobName": JOB_NAME})
    stub.add_response("describe_training_job", described("Stopping", "Stopping"))
    job = stop_cancelled_training_job(job_id=job.pk, backend=backend)
    assert job.status == TrainingJob.Status.RUNNING and job.cancel_requested

    # The next follow pass: still stopping (no second StopTrainingJob), then stopped.
    stub.add_response("describe_training_job", described("Stopping", "Stopping"))
    stub.add_response("describe_training_job", described("Stopped", "Stopped"))
    job = follow_training_job(job=job, backend=backend)

    assert job.status == TrainingJob.Status.CANCELLED
    assert job.failure_reason == (
        "Cancelled on request: the training was stopped before it finished."
    )
    assert not ModelVersion.objects.filter(training_job=job).exists()
    assert Event.objects.filter(kind="training.cancelled", tenant=tenant).exists()


def test_a_job_that_finished_before_its_stop_took_effect_is_cancelled_and_never_registered(
    aws, tenant, intent_artifact
):
    rows = generate_tickets("zoomride", rows=120, seed=3)
    dataset = create_dataset(tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t")
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")
    job = launch_training_job(job_id=job.pk, backend=SageMakerTrainingBackend(client=aws))
    # moto completes every job at once: a trained model is there, ready to be registered.
    artifacts_uri = aws.client.describe_training_job(
        TrainingJobName=job.external_id.rsplit("/", 1)[-1]
    )["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, _, key = artifacts_uri.removeprefix("s3://").partition("/")
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=bucket, Key=key, Body=model_tarball(intent_artifact)
    )
    request_training_cancel(job=job, actor="t")

    # The worker passing the cancel on died before it recorded anything; the reconciler, a
    # heartbeat later, carries the cancellation on (the flag is in the database).
    changed = reconcile_training_jobs(now=timezone.now() + timedelta(minutes=3))

    job.refresh_from_db()
    assert [item.pk for item in changed] == [job.pk]
    assert job.status == TrainingJob.Status.CANCELLED
    assert "finished before the stop took effect" in job.failure_reason
    assert not ModelVersion.objects.filter(model=model).exists()
    model.refresh_from_db()
    assert model.active_version is None
    event = Event.objects.get(kind="training.cancelled", tenant=tenant)
    assert event.data["training_ended"] == "succeeded"

    # Nothing registered took the trained model: it goes with the job's inputs.
    release_ended_jobs(
        now=job.finished_at + timedelta(minutes=3), backend=SageMakerTrainingBackend(client=aws)
    )
    listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(
        Bucket=bucket, Prefix=f"platform/training/{job.pk}/"
    )
    assert listed.get("Contents", []) == []


# --- Warm pools ------------------------------------------------------------------------------


def test_a_launch_asks_for_the_operators_warm_pool(aws, tenant, settings):
    settings.TENANTML_SAGEMAKER_TRAINING_WARM_POOL_S = 600
    rows = generate_tickets("zoomride", rows=60, seed=2)
    dataset = create_dataset(tenant=tenant, name="t.csv", content=to_csv(rows), actor="t")
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")

    job = launch_training_job(job_id=job.pk, backend=SageMakerTrainingBackend(client=aws))

    resources = aws.client.describe_training_job(
        TrainingJobName=job.external_id.rsplit("/", 1)[-1]
    )["ResourceConfig"]
    assert resources["KeepAlivePeriodInSeconds"] == 600


def test_a_job_that_reused_a_warm_pool_says_so_in_its_api_answer(stubbed, tenant, tenant_client):
    stub, backend = stubbed
    job = TrainingJobFactory(
        model__tenant=tenant,
        backend="sagemaker",
        status=TrainingJob.Status.LAUNCHING,
        external_id=JOB_ARN,
        attempts=1,
    )
    resources = {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
        "KeepAlivePeriodInSeconds": 600,
    }
    # Still provisioning: whether a pool was reused is not known yet, and not asked.
    stub.add_response(
        "describe_training_job",
        described("InProgress", "Starting", ResourceConfig=resources),
    )
    job = follow_training_job(job=job, backend=backend)
    assert job.warm_pool_reused is None

    # Training: the job that left the pool names this one as the job that reused it.
    stub.add_response(
        "describe_training_job", described("InProgress", "Training", ResourceConfig=resources)
    )
    stub.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "tml-acme-intents-41",
                    "TrainingJobArn": JOB_ARN.replace("42", "41"),
                    "CreationTime": CREATED - timedelta(minutes=20),
                    "TrainingJobStatus": "Completed",
                    "WarmPoolStatus": {
                        "Status": "Reused",
                        "ResourceRetainedBillableTimeInSeconds": 95,
                        "ReusedByJob": JOB_NAME,
                    },
                }
            ]
        },
    )
    job = follow_training_job(job=job, backend=backend)
    assert job.warm_pool_reused is True

    # Recorded once: later passes only describe the job.
    stub.add_response(
        "describe_training_job", described("InProgress", "Uploading", ResourceConfig=resources)
    )
    follow_training_job(job=job, backend=backend)

    answer = tenant_client.get(f"/api/v1/training-jobs/{job.pk}/").json()
    assert answer["warm_pool_reused"] is True
