"""SageMaker training backend against botocore's Stubber (real API shapes) and moto (real fakes).

No request leaves this machine: Stubber answers before anything is sent, and moto intercepts the
HTTP layer. The backend under test is the real one; only AWS is faked.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from moto import mock_aws

from config.errors import DomainError
from models_registry.training.launch_rate import IntervalRateLimiter
from models_registry.training.sagemaker_client import (
    DEFAULT_METRIC_DEFINITIONS,
    SageMakerTrainingClient,
    TrainingBackendError,
    TrainingImageUnavailable,
    TrainingLaunch,
    TrainingLaunchThrottled,
    default_client,
    training_image_uri,
    training_job_name,
)

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/tenantml-training"
IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "pytorch-training:2.3.0-cpu-py311-ubuntu20.04-sagemaker"
)
JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/tml-acme-intents-42"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fake_aws(dummy_aws_credentials):
    """Every test here talks to moto or a Stubber, never to AWS."""


class FakeTime:
    """A clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sagemaker_client():
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def stubber(sagemaker_client):
    with Stubber(sagemaker_client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def make_backend(client, fake_time: FakeTime, **overrides) -> SageMakerTrainingClient:
    # This process's limiter on the fake clock: the test sees every wait it asks for.
    limiter = IntervalRateLimiter(
        overrides.pop("min_interval_s", 0.0), sleep=fake_time.sleep, clock=fake_time.clock
    )
    options = {"sleep": fake_time.sleep, "launch_limiter": limiter}
    options.update(overrides)
    return SageMakerTrainingClient(client=client, **options)


def make_launch(**overrides) -> TrainingLaunch:
    fields = {
        "tenant_slug": "acme",
        "model_name": "intents",
        "job_id": 42,
        "role_arn": ROLE_ARN,
        "image_uri": IMAGE,
        "train_s3_uri": "s3://tenantml-data/acme/intents/42/train/",
        "validation_s3_uri": "s3://tenantml-data/acme/intents/42/validation/",
        "output_s3_uri": "s3://tenantml-data/acme/intents/42/output/",
        "sourcedir_s3_uri": "s3://tenantml-data/acme/intents/42/code/sourcedir.tar.gz",
        "hyperparameters": {"epochs": 3, "learning_rate": 0.001, "freeze_base": True},
        "max_runtime_s": 7200,
    }
    fields.update(overrides)
    return TrainingLaunch.for_tenant_job(**fields)


def client_error(code: str, message: str = "", http_status: int = 400) -> dict:
    return {
        "service_error_code": code,
        "service_message": message or code,
        "http_status_code": http_status,
    }


def describe_response(status: str, secondary: str, **extra) -> dict:
    response = {
        "TrainingJobName": "tml-acme-intents-42",
        "TrainingJobArn": JOB_ARN,
        "ModelArtifacts": {
            "S3ModelArtifacts": "s3://tenantml-data/acme/intents/42/output/"
            "tml-acme-intents-42/output/model.tar.gz"
        },
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "CreationTime": NOW,
    }
    response.update(extra)
    return response


# --- job names, launch description, images ----------------------------------------------------


def test_job_name_is_valid_for_sagemaker_and_keeps_the_job_id():
    pattern = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    assert training_job_name("acme", "intents", 42) == "tml-acme-intents-42"
    assert training_job_name("Acme Corp!", "support_intents v2", 7) == (
        "tml-acme-corp-support-intents-v2-7"
    )
    job_uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    long_name = training_job_name("t" * 80, "m" * 90, job_uuid)
    assert len(long_name) <= 63
    assert long_name.endswith(job_uuid)
    for name in (long_name, training_job_name("--", "__", "x")):
        assert pattern.match(name), name
    # Long names that differ only past the cut still get different job names, deterministically.
    assert training_job_name("t" * 80, "m" * 90 + "a", 1) != training_job_name(
        "t" * 80, "m" * 90 + "b", 1
    )
    assert training_job_name("t" * 80, "m" * 90, 1) == training_job_name("t" * 80, "m" * 90, 1)


def test_metric_definitions_capture_the_values_the_training_script_prints():
    log = (
        "validation:accuracy=9.5e-01;\nvalidation:macro_f1=0.93;\n"
        "validation:recall_at_5=0.81;\nvalidation:recall_at_5_before=0.4;\n"
    )
    found = {}
    for definition in DEFAULT_METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], log)
        if match:
            found[definition["Name"]] = float(match.group(1))
    assert found == {
        "validation:macro_f1": 0.93,
        "validation:recall_at_5": 0.81,
        "validation:accuracy": 0.95,
    }


def test_training_image_uri_picks_the_processor_from_the_instance_type():
    cpu = training_image_uri(region="us-east-1", instance_type="ml.m5.xlarge")
    gpu = training_image_uri(region="eu-west-1", instance_type="ml.g5.xlarge")
    # Both the SDK's tables (when the ``aws`` extra is installed) and the offline catalog
    # produce these prefixes.
    assert cpu.startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"
    )
    assert gpu.startswith(
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311"
    )
    assert training_image_uri(region="me-south-1", instance_type="ml.c5.2xlarge").startswith(
        "217643126080.dkr.ecr.me-south-1.amazonaws.com/"
    )


def test_training_image_uri_refuses_what_it_cannot_serve():
    with pytest.raises(TrainingImageUnavailable):
        training_image_uri(region="mars-north-1", instance_type="ml.m5.xlarge")
    with pytest.raises(TrainingImageUnavailable):
        training_image_uri(region="us-east-1", instance_type="ml.trn1.2xlarge")


# --- launch -------------------------------------------------------------------------------------


def test_launch_sends_the_exact_create_training_job_request(sagemaker_client, stubber, fake_time):
    expected = {
        "TrainingJobName": "tml-acme-intents-42",
        "AlgorithmSpecification": {
            "TrainingImage": IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(item) for item in DEFAULT_METRIC_DEFINITIONS],
        },
        "RoleArn": ROLE_ARN,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://tenantml-data/acme/intents/42/{channel}/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "application/jsonlines",
                "InputMode": "File",
            }
            for channel in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://tenantml-data/acme/intents/42/output/"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "HyperParameters": {
            "epochs": "3",
            "learning_rate": "0.001",
            "freeze_base": "true",
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": "s3://tenantml-data/acme/intents/42/code/sourcedir.tar.gz",
        },
        "Tags": [
            {"Key": "tenant", "Value": "acme"},
            {"Key": "model", "Value": "intents"},
            {"Key": "job_id", "Value": "42"},
            {"Key": "platform", "Value": "tenantml"},
        ],
    }
    stubber.add_response("create_training_job", {"TrainingJobArn": JOB_ARN}, expected)
    backend = make_backend(sagemaker_client, fake_time)

    assert backend.launch(make_launch()) == JOB_ARN
    assert fake_time.sleeps == []


def test_a_launch_with_a_warm_pool_asks_sagemaker_to_keep_its_instances(
    sagemaker_client, stubber, fake_time
):
    # Stubber checks the request against the real API shape, KeepAlivePeriodInSeconds included.
    stubber.add_response(
        "create_training_job",
        {"TrainingJobArn": JOB_ARN},
        {
            **make_launch().create_request(),
            "ResourceConfig": {
                "InstanceType": "ml.m5.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 30,
                "KeepAlivePeriodInSeconds": 900,
            },
        },
    )
    make_backend(sagemaker_client, fake_time).launch(make_launch(warm_pool_keep_alive_s=900))


def test_every_launch_of_one_configuration_asks_for_the_same_resources():
    # A warm pool is reused only by a job whose ResourceConfig matches the one that left it.
    first = make_launch(job_id=1, warm_pool_keep_alive_s=600).create_request()
    second = make_launch(job_id=2, tenant_slug="globex", warm_pool_keep_alive_s=600)
    assert first["ResourceConfig"] == second.create_request()["ResourceConfig"]
    assert "KeepAlivePeriodInSeconds" not in make_launch().create_request()["ResourceConfig"]


def test_a_keep_alive_beyond_what_aws_allows_is_refused():
    with pytest.raises(ValueError, match="0 to 3600"):
        make_launch(warm_pool_keep_alive_s=3601).create_request()


def test_launch_retries_throttling_with_backoff_then_succeeds(sagemaker_client, stubber, fake_time):
    stubber.add_client_error("create_training_job", **client_error("ThrottlingException"))
    stubber.add_client_error(
        "create_training_job", **client_error("TooManyRequestsException", http_status=429)
    )
    stubber.add_response("create_training_job", {"TrainingJobArn": JOB_ARN})
    # Jitter pinned to its ceiling so the exponential schedule is visible exactly.
    backend = make_backend(sagemaker_client, fake_time, base_backoff_s=0.5, jitter=lambda c: c)

    assert backend.launch(make_launch()) == JOB_ARN
    assert fake_time.sleeps == [0.5, 1.0]


def test_throttling_backoff_uses_full_jitter_below_the_capped_ceiling(
    sagemaker_client, stubber, fake_time
):
    for _ in range(5):
        stubber.add_client_error("create_training_job", **client_error("ThrottlingException"))
    stubber.add_response("create_training_job", {"TrainingJobArn": JOB_ARN})
    backend = make_backend(sagemaker_client, fake_time, base_backoff_s=0.5, max_backoff_s=3.0)

    assert backend.launch(make_launch()) == JOB_ARN
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(fake_time.sleeps) == 5
    assert all(0.0 <= slept <= cap for slept, cap in zip(fake_time.sleeps, ceilings, strict=True))


def test_launch_gives_up_after_max_retries_with_a_domain_error(
    sagemaker_client, stubber, fake_time
):
    for _ in range(3):
        stubber.add_client_error("create_training_job", **client_error("ThrottlingException"))
    backend = make_backend(sagemaker_client, fake_time, max_retries=2, jitter=lambda c: c)

    with pytest.raises(TrainingLaunchThrottled) as raised:
        backend.launch(make_launch())
    assert isinstance(raised.value, DomainError)
    assert raised.value.status_code == 503
    assert len(fake_time.sleeps) == 2


def test_a_launch_survives_a_transient_server_error(fake_time, monkeypatch):
    # botocore's standard retries take a 5xx; the throttling loop above them never runs.
    backend = SageMakerTrainingClient(
        region=REGION,
        sleep=fake_time.sleep,
        launch_limiter=IntervalRateLimiter(0.0, sleep=fake_time.sleep, clock=fake_time.clock),
    )
    answers = iter([500, 200])
    sent: list[int] = []

    def answer(request, **kwargs):
        status = next(answers)
        sent.append(status)
        body = json.dumps(
            {"TrainingJobArn": JOB_ARN} if status == 200 else {"__type": "InternalFailure"}
        ).encode()
        raw = SimpleNamespace(stream=lambda **kw: iter([body]))
        return AWSResponse(request.url, status, {}, raw)

    botocore_pauses: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=botocore_pauses.append))
    backend.client.meta.events.register_first("before-send.sagemaker.CreateTrainingJob", answer)

    assert backend.launch(make_launch()) == JOB_ARN
    assert sent == [500, 200] and len(botocore_pauses) == 1
    assert fake_time.sleeps == []


def test_launch_reports_other_aws_errors_with_aws_message(sagemaker_client, stubber, fake_time):
    message = "Role arn:aws:iam::123456789012:role/tenantml-training cannot be assumed"
    stubber.add_client_error("create_training_job", **client_error("ValidationException", message))
    backend = make_backend(sagemaker_client, fake_time)

    with pytest.raises(TrainingBackendError) as raised:
        backend.launch(make_launch())
    assert raised.value.status_code == 502
    assert message in raised.value.message
    assert fake_time.sleeps == []


@pytest.mark.parametrize(
    "error",
    [
        client_error(
            "ValidationException",
            "Training job names must be unique within an AWS account and region, and a training "
            "job with this name already exists (" + JOB_ARN + ")",
        ),
        client_error("ResourceInUse", "Training job tml-acme-intents-42 is in use"),
    ],
    ids=["validation-already-exists", "resource-in-use"],
)
def test_launching_an_existing_job_returns_its_arn(sagemaker_client, stubber, fake_time, error):
    stubber.add_client_error("create_training_job", **error)
    stubber.add_response(
        "describe_training_job",
        describe_response("InProgress", "Training"),
        {"TrainingJobName": "tml-acme-intents-42"},
    )
    backend = make_backend(sagemaker_client, fake_time)

    assert backend.launch(make_launch()) == JOB_ARN


def test_launches_are_spaced_by_the_rate_limit(sagemaker_client, stubber, fake_time):
    for _ in range(3):
        stubber.add_response("create_training_job", {"TrainingJobArn": JOB_ARN})
    backend = make_backend(sagemaker_client, fake_time, min_interval_s=1.0)

    backend.launch(make_launch(job_id=1))
    backend.launch(make_launch(job_id=2))  # immediately: must wait a full interval
    fake_time.now += 0.4  # some work happens between launches
    backend.launch(make_launch(job_id=3))

    assert fake_time.sleeps == [1.0, pytest.approx(0.6)]


def test_rate_limit_holds_across_threads(sagemaker_client):
    call_times: list[float] = []
    lock = threading.Lock()
    backend = SageMakerTrainingClient(
        client=sagemaker_client, launch_limiter=IntervalRateLimiter(0.05)
    )

    def record(**_kwargs):
        with lock:
            call_times.append(time.monotonic())

    # The Stubber answers in the first before-call handler, so record one step earlier.
    sagemaker_client.meta.events.register(
        "before-parameter-build.sagemaker.CreateTrainingJob", record
    )
    with Stubber(sagemaker_client) as stub:
        for _ in range(4):
            stub.add_response("create_training_job", {"TrainingJobArn": JOB_ARN})
        threads = [
            threading.Thread(target=backend.launch, args=(make_launch(job_id=n),)) for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stub.assert_no_pending_responses()

    call_times.sort()
    gaps = [later - earlier for earlier, later in zip(call_times, call_times[1:], strict=False)]
    assert len(call_times) == 4
    assert all(gap >= 0.045 for gap in gaps), gaps


def test_default_client_is_one_shared_instance():
    assert default_client() is default_client()


# --- describe and stop --------------------------------------------------------------------------


def reused_summary(name: str, reused_by: str | None, status: str = "Reused") -> dict:
    pool = {"Status": status, "ResourceRetainedBillableTimeInSeconds": 42}
    if reused_by:
        pool["ReusedByJob"] = reused_by
    return {
        "TrainingJobName": name,
        "TrainingJobArn": JOB_ARN.replace("tml-acme-intents-42", name),
        "CreationTime": NOW,
        "TrainingJobStatus": "Completed",
        "WarmPoolStatus": pool,
    }


def test_a_job_named_by_a_reused_pool_is_known_to_have_reused_it(
    sagemaker_client, stubber, fake_time
):
    described = describe_response(
        "InProgress",
        "Training",
        ResourceConfig={
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
            "KeepAlivePeriodInSeconds": 600,
        },
    )
    stubber.add_response("describe_training_job", described)
    query = {
        "WarmPoolStatusEquals": "Reused",
        # The pool's first job ran at most MaxRuntime (7200 s) and waited at most the keep-alive.
        "CreationTimeAfter": NOW - timedelta(seconds=7200 + 600 + 60),
        "NameContains": "tml-",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
    }
    stubber.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [reused_summary("tml-acme-intents-40", "tml-globex-faq-41")],
            "NextToken": "page-2",
        },
        query,
    )
    stubber.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": [reused_summary("tml-acme-intents-41", "tml-acme-intents-42")]},
        {**query, "NextToken": "page-2"},
    )
    backend = make_backend(sagemaker_client, fake_time)

    status = backend.describe("tml-acme-intents-42")
    assert status.warm_pool_keep_alive_s == 600
    assert backend.warm_pool_reused(status, "tml-acme-intents-42") is True


def test_a_job_no_pool_names_started_on_new_instances(sagemaker_client, stubber, fake_time):
    stubber.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": [reused_summary("tml-acme-intents-40", "tml-globex-faq-41")]},
    )
    backend = make_backend(sagemaker_client, fake_time)
    assert backend.reused_warm_pool("tml-acme-intents-42", since=NOW) is False


@pytest.mark.parametrize(
    ("keep_alive_s", "aws_status", "secondary"),
    [(0, "InProgress", "Training"), (600, "InProgress", "LaunchingMLInstances")],
    ids=["no-warm-pool-asked-for", "instances-not-provisioned-yet"],
)
def test_reuse_is_not_asked_before_it_can_be_known(
    sagemaker_client, stubber, fake_time, keep_alive_s, aws_status, secondary
):
    resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    if keep_alive_s:
        resources["KeepAlivePeriodInSeconds"] = keep_alive_s
    stubber.add_response(
        "describe_training_job", describe_response(aws_status, secondary, ResourceConfig=resources)
    )
    backend = make_backend(sagemaker_client, fake_time)
    status = backend.describe("tml-acme-intents-42")
    # No ListTrainingJobs: the Stubber would fail a call it was not given.
    assert backend.warm_pool_reused(status, "tml-acme-intents-42") is None


@pytest.mark.parametrize(
    ("aws_status", "secondary", "expected_status", "expected_progress"),
    [
        ("InProgress", "Starting", "queued", 5),
        ("InProgress", "Downloading", "running", 15),
        ("InProgress", "Training", "running", 50),
        ("InProgress", "Uploading", "running", 90),
        ("Stopping", "Stopping", "running", 50),
        ("Stopped", "Stopped", "cancelled", 50),
        ("Stopped", "MaxRuntimeExceeded", "failed", 50),
        ("Failed", "Failed", "failed", 50),
    ],
)
def test_describe_maps_sagemaker_status(
    sagemaker_client, stubber, fake_time, aws_status, secondary, expected_status, expected_progress
):
    extra = {
        "SecondaryStatusTransitions": [
            {"Status": "Starting", "StartTime": NOW},
            {"Status": "Downloading", "StartTime": NOW},
            {"Status": "Training", "StartTime": NOW},
        ]
    }
    if aws_status == "Failed":
        extra["FailureReason"] = "AlgorithmError: CUDA out of memory"
    stubber.add_response(
        "describe_training_job",
        describe_response(aws_status, secondary, **extra),
        {"TrainingJobName": "tml-acme-intents-42"},
    )
    status = make_backend(sagemaker_client, fake_time).describe("tml-acme-intents-42")

    assert status.status == expected_status
    assert status.secondary_status == secondary
    assert status.progress_pct == expected_progress
    assert status.model_artifacts_s3_uri is None  # nothing is there until the job succeeded
    assert status.failure_reason == {
        "Failed": "AlgorithmError: CUDA out of memory",
        "MaxRuntimeExceeded": "Stopped by SageMaker: the job ran past its MaxRuntimeInSeconds.",
    }.get(aws_status if aws_status == "Failed" else secondary, "")
    assert status.is_terminal == (expected_status in ("cancelled", "failed"))


def test_describe_completed_job_reports_artifacts_metrics_and_billing(
    sagemaker_client, stubber, fake_time
):
    stubber.add_response(
        "describe_training_job",
        describe_response(
            "Completed",
            "Completed",
            FinalMetricDataList=[
                {"MetricName": "validation:macro_f1", "Value": 0.93, "Timestamp": NOW},
                {"MetricName": "validation:recall_at_5", "Value": 0.81, "Timestamp": NOW},
            ],
            BillableTimeInSeconds=412,
        ),
        {"TrainingJobName": "tml-acme-intents-42"},
    )
    status = make_backend(sagemaker_client, fake_time).describe("tml-acme-intents-42")

    assert status.status == "succeeded"
    assert status.progress_pct == 100
    assert status.model_artifacts_s3_uri == (
        "s3://tenantml-data/acme/intents/42/output/tml-acme-intents-42/output/model.tar.gz"
    )
    assert status.final_metrics == pytest.approx(
        {"validation:macro_f1": 0.93, "validation:recall_at_5": 0.81}
    )
    assert status.billable_seconds == 412


def test_describe_retries_throttling(sagemaker_client, stubber, fake_time):
    stubber.add_client_error("describe_training_job", **client_error("ThrottlingException"))
    stubber.add_response("describe_training_job", describe_response("InProgress", "Training"))
    backend = make_backend(sagemaker_client, fake_time, jitter=lambda c: c)

    assert backend.describe("tml-acme-intents-42").status == "running"
    assert fake_time.sleeps == [0.5]


def test_describe_unknown_job_is_a_backend_error(sagemaker_client, stubber, fake_time):
    stubber.add_client_error(
        "describe_training_job",
        **client_error("ValidationException", "Requested resource not found."),
    )
    with pytest.raises(TrainingBackendError, match="Requested resource not found"):
        make_backend(sagemaker_client, fake_time).describe("tml-nope-1")


def test_stop_asks_sagemaker_to_stop_a_job_in_progress(sagemaker_client, stubber, fake_time):
    stubber.add_response("describe_training_job", describe_response("InProgress", "Training"))
    stubber.add_response("stop_training_job", {}, {"TrainingJobName": "tml-acme-intents-42"})
    make_backend(sagemaker_client, fake_time).stop("tml-acme-intents-42")


@pytest.mark.parametrize("aws_status", ["Stopping", "Stopped", "Completed", "Failed"])
def test_stop_leaves_a_job_already_stopping_or_ended_alone(
    sagemaker_client, stubber, fake_time, aws_status
):
    # The follower asks again every pass until the job has stopped: no StopTrainingJob is sent
    # (the Stubber fails any call it was not given).
    stubber.add_response("describe_training_job", describe_response(aws_status, aws_status))
    described = make_backend(sagemaker_client, fake_time).stop("tml-acme-intents-42")
    assert described.aws_status == aws_status


def test_a_job_that_ended_just_before_the_stop_is_fine(sagemaker_client, stubber, fake_time):
    stubber.add_response("describe_training_job", describe_response("InProgress", "Uploading"))
    stubber.add_client_error(
        "stop_training_job",
        **client_error(
            "ValidationException",
            "The request was rejected because the training job is in status Completed.",
        ),
    )
    stubber.add_response("describe_training_job", describe_response("Completed", "Completed"))
    make_backend(sagemaker_client, fake_time).stop("tml-acme-intents-42")


def test_stop_failure_on_a_running_job_is_reported(sagemaker_client, stubber, fake_time):
    stubber.add_response("describe_training_job", describe_response("InProgress", "Training"))
    stubber.add_client_error(
        "stop_training_job", **client_error("ValidationException", "Something else went wrong")
    )
    stubber.add_response("describe_training_job", describe_response("InProgress", "Training"))
    with pytest.raises(TrainingBackendError, match="Something else went wrong"):
        make_backend(sagemaker_client, fake_time).stop("tml-acme-intents-42")


# --- moto ---------------------------------------------------------------------------------------


@pytest.fixture
def training_code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "__pycache__").mkdir(parents=True)
    (code / "train.py").write_text("print('validation:macro_f1=0.93;')\n")
    (code / "requirements.txt").write_text("")
    (code / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    return code


def test_upload_training_inputs_puts_datasets_and_code_in_s3(training_code):
    train = b'{"text": "refund please", "label": "billing"}\n'
    validation = b'{"text": "app crashes", "label": "bug"}\n'
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="tenantml-data")
        backend = SageMakerTrainingClient(region=REGION, min_interval_s=0.0)

        uris = backend.upload_training_inputs(
            bucket="tenantml-data",
            prefix="/acme/intents/42/",
            train_jsonl=train,
            validation_jsonl=validation,
            sourcedir=training_code,
        )

        assert uris == {
            "train": "s3://tenantml-data/acme/intents/42/train/",
            "validation": "s3://tenantml-data/acme/intents/42/validation/",
            "sourcedir": "s3://tenantml-data/acme/intents/42/code/sourcedir.tar.gz",
            "output": "s3://tenantml-data/acme/intents/42/output/",
        }
        stored = s3.get_object(Bucket="tenantml-data", Key="acme/intents/42/train/train.jsonl")
        assert stored["Body"].read() == train
        stored = s3.get_object(
            Bucket="tenantml-data", Key="acme/intents/42/validation/validation.jsonl"
        )
        assert stored["Body"].read() == validation
        archive = s3.get_object(
            Bucket="tenantml-data", Key="acme/intents/42/code/sourcedir.tar.gz"
        )["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        # The container runs sagemaker_program from the archive root.
        assert sorted(tar.getnames()) == ["requirements.txt", "train.py"]


def test_upload_to_a_missing_bucket_is_a_backend_error(training_code):
    with mock_aws():
        backend = SageMakerTrainingClient(region=REGION)
        with pytest.raises(TrainingBackendError, match="NoSuchBucket"):
            backend.upload_training_inputs(
                bucket="no-such-bucket",
                prefix="acme",
                train_jsonl=b"",
                validation_jsonl=b"",
                sourcedir=training_code,
            )


def test_launch_and_describe_through_moto(training_code):
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="tenantml-data")
        backend = SageMakerTrainingClient(region=REGION, min_interval_s=0.0)
        uris = backend.upload_training_inputs(
            bucket="tenantml-data",
            prefix="acme/intents/42",
            train_jsonl=b"{}\n",
            validation_jsonl=b"{}\n",
            sourcedir=training_code,
        )
        launch = make_launch(
            train_s3_uri=uris["train"],
            validation_s3_uri=uris["validation"],
            output_s3_uri=uris["output"],
            sourcedir_s3_uri=uris["sourcedir"],
        )

        arn = backend.launch(launch)
        status = backend.describe(launch.job_name)
        described = backend.client.describe_training_job(TrainingJobName=launch.job_name)

    assert arn.endswith(":training-job/tml-acme-intents-42")
    # moto finishes every job at once; the mapping must read that as a success with artifacts.
    assert status.status == "succeeded"
    assert status.progress_pct == 100
    assert status.model_artifacts_s3_uri == (
        "s3://tenantml-data/acme/intents/42/output/tml-acme-intents-42/output/model.tar.gz"
    )
    assert status.final_metrics == {"train:progress": 100.0}
    assert described["HyperParameters"]["sagemaker_program"] == "train.py"
