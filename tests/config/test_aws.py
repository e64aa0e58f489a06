"""The shared AWS module: clients retry transient errors, errors read the same everywhere.

Nothing leaves this machine: a ``before-send`` handler answers in place of AWS, after botocore
has signed the request and before it would open a connection, so botocore's own retry loop runs
exactly as it would against the real endpoint.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError

from config import aws

JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/tml-acme-intents-42"


class Answers:
    """Plays AWS for one client: each call takes the next scripted answer."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.calls = 0

    def __call__(self, request, **kwargs):
        self.calls += 1
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        raw = SimpleNamespace(stream=lambda **kw: iter([json.dumps(body).encode()]))
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, raw)


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """botocore's backoff pauses, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=slept.append))
    return slept


def sagemaker_answering(answers: Answers):
    client = aws.client("sagemaker", region="us-east-1")
    client.meta.events.register_first("before-send.sagemaker.DescribeTrainingJob", answers)
    return client


def server_error() -> tuple[int, dict]:
    return 500, {"__type": "InternalFailure", "message": "We encountered an internal error."}


def described() -> tuple[int, dict]:
    return 200, {"TrainingJobName": "tml-acme-intents-42", "TrainingJobArn": JOB_ARN}


def test_a_server_error_is_retried_and_the_call_then_succeeds(dummy_aws_credentials, pauses):
    answers = Answers(server_error(), described())
    client = sagemaker_answering(answers)

    response = client.describe_training_job(TrainingJobName="tml-acme-intents-42")

    assert response["TrainingJobArn"] == JOB_ARN
    assert answers.calls == 2 and len(pauses) == 1


def test_a_connection_error_is_retried(dummy_aws_credentials, pauses):
    answers = Answers(
        EndpointConnectionError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com"),
        described(),
    )
    client = sagemaker_answering(answers)

    response = client.describe_training_job(TrainingJobName="tml-acme-intents-42")

    assert response["TrainingJobArn"] == JOB_ARN
    assert answers.calls == 2


def test_a_server_error_that_lasts_surfaces_after_max_attempts(dummy_aws_credentials, pauses):
    answers = Answers(*[server_error()] * aws.MAX_ATTEMPTS)
    client = sagemaker_answering(answers)

    with pytest.raises(ClientError) as raised:
        client.describe_training_job(TrainingJobName="tml-acme-intents-42")

    assert aws.error_code(raised.value) == "InternalFailure"
    assert answers.calls == aws.MAX_ATTEMPTS


def test_a_refusal_is_not_retried(dummy_aws_credentials, pauses):
    answers = Answers((400, {"__type": "ValidationException", "message": "Requested resource"}))
    client = sagemaker_answering(answers)

    with pytest.raises(ClientError) as raised:
        client.describe_training_job(TrainingJobName="tml-acme-intents-42")

    assert aws.error_code(raised.value) == "ValidationException"
    assert aws.error_message(raised.value) == "Requested resource"
    assert not aws.is_throttling(raised.value)
    assert answers.calls == 1 and pauses == []


@pytest.mark.parametrize(
    ("code", "status", "throttling"),
    [
        ("ThrottlingException", 400, True),
        ("SlowDown", 503, True),
        ("Whatever", 429, True),
        ("ValidationException", 400, False),
    ],
)
def test_throttling_is_read_from_the_code_or_a_429(code, status, throttling):
    error = ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateTrainingJob",
    )
    assert aws.is_throttling(error) is throttling
    # Without a message of AWS's own, the exception's text stands in.
    assert code in aws.error_message(error)


def test_full_jitter_stays_between_zero_and_the_ceiling():
    pauses = [aws.full_jitter(2.0) for _ in range(200)]
    assert all(0.0 <= pause <= 2.0 for pause in pauses)
    assert max(pauses) > 1.0 > min(pauses)


def test_image_uris_use_the_china_domain_in_china_regions():
    assert aws.ecr_image_uri(
        account="727897471807", region="cn-north-1", repository="pytorch-training", tag="2.3"
    ) == ("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.3")
    assert aws.ecr_image_uri(
        account="763104351884", region="us-east-1", repository="pytorch-training", tag="2.3"
    ).endswith(".amazonaws.com/pytorch-training:2.3")


def test_each_image_table_lists_only_regions_its_image_is_published_in():
    assert "ca-west-1" in aws.TRITON_INFERENCE_ACCOUNTS
    assert "ca-west-1" not in aws.PYTORCH_TRAINING_ACCOUNTS
    assert "us-gov-west-1" in aws.PYTORCH_TRAINING_ACCOUNTS
    assert "us-gov-west-1" not in aws.TRITON_INFERENCE_ACCOUNTS
