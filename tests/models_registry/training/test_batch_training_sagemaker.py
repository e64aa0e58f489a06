"""Batch training on SageMaker's API (moto, and botocore's Stubber where a job must stay in
progress): queued jobs of a kind are claimed into one multi-instance training job, each job's
outcome comes from its own task's result, a cancelled job's result is discarded while the batch
trains on, and a worker lost around the launch neither loses the jobs nor launches twice."""

from __future__ import annotations

import functools
import io
import json
import tarfile
import threading
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from django.db import connection
from django.utils import timezone
from moto import mock_aws

from config.celery import app
from config.env import ArtifactStore
from deployments.models import Event
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services import batch_training
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from models_registry.services.training import request_training_cancel, start_training_job
from models_registry.services.training_cleanup import release_ended_jobs
from models_registry.training import batching
from models_registry.training.backends.sagemaker import SageMakerTrainingBackend
from models_registry.training.backends.sagemaker_batch import BatchLocation, SageMakerBatchBackend
from models_registry.training.sagemaker_client import SageMakerTrainingClient
from tests.factories import TenantFactory, TrainingJobFactory

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
BUCKET = "tenantml-test"
ROLE = "arn:aws:iam::123456789012:role/tenantml-training"


@pytest.fixture
def sagemaker(settings, dummy_aws_credentials):
    """Batches of up to four jobs on two instances, on moto; the backends share one client."""
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE
    settings.TENANTML_AWS_REGION = REGION
    settings.TENANTML_TRAINING_BATCH_MIN_JOBS = 3
    settings.TENANTML_TRAINING_BATCH_MAX_INSTANCES = 2
    settings.TENANTML_TRAINING_BATCH_TASKS_PER_INSTANCE = 2
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        client = SageMakerTrainingClient(
            region=REGION, min_interval_s=0.0, sleep=lambda seconds: None
        )
        yield client


@pytest.fixture
def tasks_run_inline():
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def onboard(slug: str, *, seed: int = 1, hyperparameters: dict | None = None) -> TrainingJob:
    tenant = TenantFactory(slug=slug)
    rows = generate_tickets("zoomride", rows=40, seed=seed)
    dataset = create_dataset(tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t")
    model = create_model(tenant=tenant, name="m", kind="intent-classifier", actor="t")
    job, _ = start_training_job(
        model=model,
        dataset=dataset,
        actor="t",
        backend="sagemaker",
        hyperparameters=hyperparameters,
    )
    return job


@functools.cache
def model_tarball(artifact_dir) -> bytes:
    """The artifact as a host uploads it (its files at the root), packed once per session."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(artifact_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def host_writes(name: str, job: TrainingJob, *, artifact_dir=None, reason: str = "") -> None:
    """What the host that trained ``job`` writes as its task ends (batch_entrypoint)."""
    where = BatchLocation.for_batch(name)
    s3 = boto3.client("s3", region_name=REGION)
    result = {"job": job.pk, "host": job.batch_host, "status": "failed", "reason": reason}
    if artifact_dir is not None:
        s3.put_object(
            Bucket=BUCKET,
            Key=where.key("output", str(job.pk), batching.MODEL_ARCHIVE),
            Body=model_tarball(artifact_dir),
        )
        result.update(
            status="succeeded",
            metrics={"kind": "intent-classifier", "metrics": {"macro_f1": 0.9, "accuracy": 0.9}},
        )
    s3.put_object(
        Bucket=BUCKET,
        Key=where.key("output", str(job.pk), batching.RESULT_FILE),
        Body=json.dumps(result).encode(),
    )


def test_queued_jobs_of_a_kind_launch_as_one_multi_instance_job_and_end_each_on_its_own(
    sagemaker,
    intent_artifact,
    tasks_run_inline,
    django_capture_on_commit_callbacks,
    platform_client,
):
    with django_capture_on_commit_callbacks(execute=False):
        jobs = [onboard(slug, seed=seed) for seed, slug in enumerate(["a", "b", "c"], 1)]
        # Other hyperparameters: not trained the same way, so not in the same batch.
        alone = onboard("e", hyperparameters={"epochs": 10})
    backend = SageMakerBatchBackend(client=sagemaker)

    first = batch_training.launch_in_batch(job_id=jobs[0].pk, backend=backend)
    # The other jobs' own launch messages find them already in the batch.
    again = [batch_training.launch_in_batch(job_id=job.pk, backend=backend) for job in jobs[1:]]

    assert first.status == TrainingJob.Status.RUNNING and first.batch_name
    assert all(job.batch_name == first.batch_name for job in again)
    assert batch_training.launch_in_batch(job_id=alone.pk, backend=backend) is None
    listed = sagemaker.client.list_training_jobs()["TrainingJobSummaries"]
    assert [summary["TrainingJobName"] for summary in listed] == [first.batch_name]
    described = sagemaker.client.describe_training_job(TrainingJobName=first.batch_name)
    assert described["ResourceConfig"]["InstanceCount"] == 2
    assert [channel["ChannelName"] for channel in described["InputDataConfig"]] == ["batch"]
    assert described["HyperParameters"]["sagemaker_program"] == "train_batch.py"
    where = BatchLocation.for_batch(first.batch_name)
    manifest = json.loads(
        boto3.client("s3", region_name=REGION)
        .get_object(Bucket=BUCKET, Key=where.key("input", batching.MANIFEST_FILE))["Body"]
        .read()
    )
    for job in TrainingJob.objects.filter(batch_name=first.batch_name):
        index = int(job.batch_host.removeprefix("algo-")) - 1
        assert job.pk in [task["job"] for task in manifest["hosts"][index]]
        assert job.external_id == described["TrainingJobArn"]
        shown = platform_client.get(f"/api/v1/training-jobs/{job.pk}/").json()
        assert (shown["status"], shown["batch_name"], shown["batch_host"]) == (
            "running",
            first.batch_name,
            job.batch_host,
        )

    # moto ends the job at once; the hosts wrote what they trained (one task failed, and the
    # host of the last one never got to it).
    a, b, c = TrainingJob.objects.filter(pk__in=[job.pk for job in jobs]).order_by("pk")
    host_writes(first.batch_name, a, artifact_dir=intent_artifact)
    host_writes(first.batch_name, b, reason="The validation channel has no rows.")
    with django_capture_on_commit_callbacks(execute=True):
        assert batch_training.follow_training_batches(backend=backend) == 1

    for job in (a, b, c):
        job.refresh_from_db()
    assert a.status == TrainingJob.Status.SUCCEEDED, a.failure_reason
    version = ModelVersion.objects.get(training_job=a)
    assert version.model == a.model and version.status == ModelVersion.Status.READY
    assert version.artifact_uri == where.uri("output", str(a.pk), "model.tar.gz")
    assert version.metrics["macro_f1"] == 0.9
    assert (b.status, b.failure_reason) == (
        TrainingJob.Status.FAILED,
        "The validation channel has no rows.",
    )
    assert c.status == TrainingJob.Status.FAILED
    assert c.failure_reason.startswith(f"Batch {first.batch_name} succeeded without a result")
    assert not ModelVersion.objects.filter(training_job__in=[b, c]).exists()

    # Once all three have ended, the batch's prefix keeps only the artifact a version uses.
    released = release_ended_jobs(
        now=timezone.now() + timedelta(minutes=3),
        backend=SageMakerTrainingBackend(client=sagemaker),
    )
    assert sorted(released) == sorted(job.pk for job in (a, b, c))
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket=BUCKET, Prefix=where.key("")
    )
    assert [f"s3://{BUCKET}/{item['Key']}" for item in listed["Contents"]] == [version.artifact_uri]


def running_batch(*slugs: str) -> list[TrainingJob]:
    name = batch_training.batch_name(range(1, len(slugs) + 1))
    return [
        TrainingJobFactory(
            model__tenant=TenantFactory(slug=slug),
            backend="sagemaker",
            status=TrainingJob.Status.RUNNING,
            attempts=1,
            batch_name=name,
            batch_host=f"algo-{index}",
            external_id=f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
            heartbeat_at=timezone.now(),
        )
        for index, slug in enumerate(slugs, 1)
    ]


def in_progress(name: str) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/out/model.tar.gz"},
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "CreationTime": datetime(2026, 1, 5, tzinfo=UTC),
    }


def test_cancelling_one_job_discards_its_result_while_the_batch_trains_on_for_the_others(
    settings, dummy_aws_credentials
):
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    cancelled, other = running_batch("acme", "globex")
    name = cancelled.batch_name
    request_training_cancel(job=cancelled, actor="t")
    where = BatchLocation.for_batch(name)
    sagemaker_api = boto3.client("sagemaker", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    result_key = where.key("output", str(cancelled.pk), batching.RESULT_FILE)
    # Its task had finished: the result is there, and still never registered.
    trained = json.dumps({"job": cancelled.pk, "status": "succeeded", "metrics": {}}).encode()
    with Stubber(sagemaker_api) as api, Stubber(s3) as storage:
        api.add_response("describe_training_job", in_progress(name), {"TrainingJobName": name})
        storage.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": result_key}], "IsTruncated": False},
            {"Bucket": BUCKET, "Prefix": where.key("output") + "/"},
        )
        storage.add_response(
            "get_object",
            {"Body": io.BytesIO(trained)},
            {"Bucket": BUCKET, "Key": result_key},
        )
        backend = SageMakerBatchBackend(
            client=SageMakerTrainingClient(client=sagemaker_api, s3_client=s3, min_interval_s=0)
        )
        # The single-job follower leaves batched jobs to the batch's (no per-job describe).
        assert SageMakerTrainingBackend(client=backend.client).follow(job=cancelled) is None

        assert batch_training.follow_training_batches(backend=backend) == 1

        api.assert_no_pending_responses()  # described once, and no StopTrainingJob
    cancelled.refresh_from_db()
    other.refresh_from_db()
    assert cancelled.status == TrainingJob.Status.CANCELLED
    assert "result is discarded" in cancelled.failure_reason
    assert not ModelVersion.objects.filter(training_job=cancelled).exists()
    assert other.status == TrainingJob.Status.RUNNING

    # Once nobody waits on the batch any more, it is stopped.
    request_training_cancel(job=other, actor="t")
    with Stubber(sagemaker_api) as api, Stubber(s3) as storage:
        api.add_response("describe_training_job", in_progress(name), {"TrainingJobName": name})
        storage.add_response(
            "list_objects_v2",
            {"IsTruncated": False},
            {"Bucket": BUCKET, "Prefix": where.key("output") + "/"},
        )
        # The client checks the job is still in progress before it sends the stop.
        api.add_response("describe_training_job", in_progress(name), {"TrainingJobName": name})
        api.add_response("stop_training_job", {}, {"TrainingJobName": name})

        assert batch_training.follow_training_batches(backend=backend) == 1

        api.assert_no_pending_responses()
    other.refresh_from_db()
    assert other.status == TrainingJob.Status.CANCELLED


def test_a_batch_lost_before_its_launch_is_queued_again_and_one_launched_is_followed_not_relaunched(
    sagemaker, intent_artifact, tasks_run_inline, django_capture_on_commit_callbacks
):
    backend = SageMakerBatchBackend(client=sagemaker)
    long_ago = timezone.now() - timedelta(minutes=30)
    with django_capture_on_commit_callbacks(execute=False):
        never = [onboard(slug, seed=seed) for seed, slug in enumerate(["a", "b", "c"], 1)]
    # A worker claimed these, then died before CreateTrainingJob.
    lost_name = batch_training.batch_name(job.pk for job in never)
    TrainingJob.objects.filter(pk__in=[job.pk for job in never]).update(
        status=TrainingJob.Status.LAUNCHING,
        attempts=1,
        batch_name=lost_name,
        batch_host="algo-1",
        heartbeat_at=long_ago,
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        changed = batch_training.reconcile_training_batches(backend=backend)

    assert {job.pk for job in changed} == {job.pk for job in never}
    for job in TrainingJob.objects.filter(pk__in=[job.pk for job in never]):
        assert (job.status, job.batch_name, job.attempts) == (TrainingJob.Status.QUEUED, "", 1)
    assert len(sent) == 3  # their launch messages, sent again

    # This time the worker died just after CreateTrainingJob, before recording it.
    with django_capture_on_commit_callbacks(execute=False):
        first = batch_training.launch_in_batch(job_id=never[0].pk, backend=backend)
    TrainingJob.objects.filter(batch_name=first.batch_name).update(
        status=TrainingJob.Status.LAUNCHING, external_id="", heartbeat_at=long_ago
    )
    trained, *refused = TrainingJob.objects.filter(batch_name=first.batch_name).order_by("pk")
    host_writes(first.batch_name, trained, artifact_dir=intent_artifact)
    for job in refused:
        host_writes(first.batch_name, job, reason=f"Job {job.pk} refused.")
    with django_capture_on_commit_callbacks(execute=True):
        batch_training.reconcile_training_batches(backend=backend)

    # Followed to its end from what its hosts wrote; never launched a second time.
    assert len(sagemaker.client.list_training_jobs()["TrainingJobSummaries"]) == 1
    trained.refresh_from_db()
    assert trained.status == TrainingJob.Status.SUCCEEDED, trained.failure_reason
    assert trained.version.status == ModelVersion.Status.READY
    for job in refused:
        job.refresh_from_db()
        assert (job.status, job.failure_reason) == ("failed", f"Job {job.pk} refused.")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_launching_at_once_never_claim_the_same_job(sagemaker):
    backend = SageMakerBatchBackend(client=sagemaker)
    jobs = [onboard(f"t{index}", seed=index) for index in range(1, 9)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def launch(job_id: int) -> None:
        try:
            barrier.wait()
            batch_training.launch_in_batch(job_id=job_id, backend=backend)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch, args=(job.pk,)) for job in jobs[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    claimed = TrainingJob.objects.exclude(batch_name="")
    names = set(claimed.values_list("batch_name", flat=True))
    assert claimed.count() >= 2
    for job in claimed:  # claimed once: one start, one attempt
        assert job.attempts == 1
        assert Event.objects.filter(kind="training.started", data__job=job.pk).count() == 1
    listed = sagemaker.client.list_training_jobs()["TrainingJobSummaries"]
    assert sorted(summary["TrainingJobName"] for summary in listed) == sorted(names)
    for name in names:
        # Each batch's manifest holds exactly the jobs that record it: none is in two.
        where = BatchLocation.for_batch(name)
        manifest = json.loads(
            boto3.client("s3", region_name=REGION)
            .get_object(Bucket=BUCKET, Key=where.key("input", batching.MANIFEST_FILE))["Body"]
            .read()
        )
        planned = sorted(task["job"] for host in manifest["hosts"] for task in host)
        assert planned == sorted(claimed.filter(batch_name=name).values_list("pk", flat=True))
