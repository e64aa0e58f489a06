"""Multi-model endpoints on the stand-in: TargetModel loads on first call, LRU unloads."""

from __future__ import annotations

import botocore.exceptions
import pytest

from deployments.backends.sagemaker.client import EndpointRequest, SageMakerEndpointBackend
from deployments.sagemaker_standin.fleet import MAX_MODELS_ENV
from tests.deployments.sagemaker_standin.helpers import (
    BUCKET,
    DOUBLING_ECHO,
    IMAGE,
    NEEDS_ONNXRUNTIME,
    ROLE_ARN,
    UPPER_CASE_ECHO,
    create_model,
    create_model_endpoint,
    invoke_text,
    make_bucket,
    upload_package,
    wait_endpoint,
)
from tests.triton_support import build_package


@pytest.fixture
def mme(clean_sagemaker_standin, tmp_path):
    """An in-service MME whose instance holds two models at most."""
    standin = clean_sagemaker_standin
    s3, sagemaker = standin.client("s3"), standin.client("sagemaker")
    make_bucket(s3)
    for key, name, source in [
        ("acme/upper.tar.gz", "upper", UPPER_CASE_ECHO),
        ("acme/double.tar.gz", "double", DOUBLING_ECHO),
        ("acme/upper-again.tar.gz", "upper_again", UPPER_CASE_ECHO),
        ("acme/onnx.tar.gz", "onnx", NEEDS_ONNXRUNTIME),
    ]:
        upload_package(s3, tmp_path, key, name, source)
    create_model(
        sagemaker,
        "mme-model",
        f"s3://{BUCKET}/acme/",
        mode="MultiModel",
        environment={MAX_MODELS_ENV: "2"},
    )
    create_model_endpoint(sagemaker, "mme", "mme-model")
    assert wait_endpoint(sagemaker, "mme")["EndpointStatus"] == "InService"
    return standin, standin.client("sagemaker-runtime")


def _loaded(standin) -> list[str]:
    return [model for process in standin.processes() for model in process["models"]]


def test_first_call_loads_the_target_model_and_later_calls_reuse_it(mme):
    standin, runtime = mme
    assert _loaded(standin) == []

    assert invoke_text(runtime, "mme", "hi", TargetModel="upper.tar.gz") == "HI"
    assert invoke_text(runtime, "mme", "ho", TargetModel="double.tar.gz") == "hoho"
    assert invoke_text(runtime, "mme", "again", TargetModel="upper.tar.gz") == "AGAIN"

    assert sorted(_loaded(standin)) == ["double.tar.gz", "upper.tar.gz"]
    assert len(standin.tritons()) == 1


def test_a_model_over_the_instance_limit_unloads_the_least_recently_used(mme):
    standin, runtime = mme
    invoke_text(runtime, "mme", "a", TargetModel="upper.tar.gz")
    invoke_text(runtime, "mme", "b", TargetModel="double.tar.gz")
    invoke_text(runtime, "mme", "c", TargetModel="upper.tar.gz")  # double is now the LRU

    assert invoke_text(runtime, "mme", "d", TargetModel="upper-again.tar.gz") == "D"

    assert sorted(_loaded(standin)) == ["upper-again.tar.gz", "upper.tar.gz"]
    # Unloaded, not gone: the next call loads it again.
    assert invoke_text(runtime, "mme", "e", TargetModel="double.tar.gz") == "ee"


def test_a_target_model_missing_from_s3_is_a_validation_error(mme):
    _, runtime = mme
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        invoke_text(runtime, "mme", "x", TargetModel="nope.tar.gz")
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "Failed to download model data" in refused.value.response["Error"]["Message"]


def test_a_model_that_cannot_load_is_a_model_error_with_tritons_reason(mme):
    _, runtime = mme
    with pytest.raises(botocore.exceptions.ClientError) as failed:
        invoke_text(runtime, "mme", "x", TargetModel="onnx.tar.gz")
    response = failed.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == 500
    assert "No module named 'onnxruntime'" in response["OriginalMessage"]
    assert response["LogStreamArn"].endswith("/aws/sagemaker/Endpoints/mme")


def test_an_unknown_endpoint_is_a_validation_error(clean_sagemaker_standin):
    runtime = clean_sagemaker_standin.client("sagemaker-runtime")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        invoke_text(runtime, "nowhere", "x")
    assert refused.value.response["Error"]["Code"] == "ValidationError"


def test_the_platforms_backend_deploys_invokes_and_retires_an_mme_unchanged(
    clean_sagemaker_standin, tmp_path
):
    standin = clean_sagemaker_standin
    make_bucket(standin.client("s3"))
    package = build_package(tmp_path, "upper", UPPER_CASE_ECHO)
    backend = SageMakerEndpointBackend(region=standin.region)
    backend.ensure_endpoint(
        EndpointRequest(
            name="tenant-mme",
            mode="mme",
            instance_type="ml.m5.large",
            role_arn=ROLE_ARN,
            image_uri=IMAGE,
            model_data_prefix=f"s3://{BUCKET}/tenant-mme/",
        )
    )
    backend.wait_in_service("tenant-mme", delay_s=0.2, max_attempts=300)
    target = backend.add_model(
        endpoint_prefix=f"s3://{BUCKET}/tenant-mme/",
        package_s3_uri=str(package.path),
        target_model="acme/upper/v1.tar.gz",
    )
    answer = backend.invoke(
        endpoint_name="tenant-mme",
        body={"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]},
        target_model=target,
    )
    assert answer["outputs"][0]["data"] == ["X"]

    backend.remove_model(endpoint_prefix=f"s3://{BUCKET}/tenant-mme/", target_model=target)
    retired = backend.retire_endpoint("tenant-mme", delay_s=0.2)

    assert retired.endpoint == "tenant-mme"
    assert standin.resources()["models"] == []
    assert standin.resources()["endpoint_configs"] == []
