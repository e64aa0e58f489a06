"""Dedicated endpoints on the stand-in: real single-model Tritons behind boto3's calls."""

from __future__ import annotations

import pytest

from tests.deployments.sagemaker_standin.helpers import (
    NEEDS_ONNXRUNTIME,
    UPPER_CASE_ECHO,
    create_model,
    create_model_endpoint,
    invoke_text,
    make_bucket,
    upload_package,
    wait_endpoint,
    wait_for,
)


@pytest.fixture
def clients(clean_sagemaker_standin):
    standin = clean_sagemaker_standin
    s3 = standin.client("s3")
    make_bucket(s3)
    return standin, standin.client("sagemaker"), standin.client("sagemaker-runtime"), s3


def test_dedicated_endpoint_goes_creating_then_in_service_and_answers_at_invocations(
    clients, tmp_path
):
    standin, sagemaker, runtime, s3 = clients
    url = upload_package(s3, tmp_path, "upper/model.tar.gz", "upper", UPPER_CASE_ECHO)
    create_model(sagemaker, "upper-model", url)
    create_model_endpoint(sagemaker, "upper", "upper-model")

    assert sagemaker.describe_endpoint(EndpointName="upper")["EndpointStatus"] == "Creating"
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName="upper", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    described = sagemaker.describe_endpoint(EndpointName="upper")
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert invoke_text(runtime, "upper", "hello") == "HELLO"
    assert len(standin.tritons()) == 1


def test_dedicated_endpoint_whose_model_imports_onnxruntime_fails_with_the_reason(
    clients, tmp_path
):
    standin, sagemaker, _, s3 = clients
    url = upload_package(s3, tmp_path, "onnx/model.tar.gz", "needs_onnx", NEEDS_ONNXRUNTIME)
    create_model(sagemaker, "onnx-model", url)
    create_model_endpoint(sagemaker, "onnx", "onnx-model")

    described = wait_endpoint(sagemaker, "onnx")

    assert described["EndpointStatus"] == "Failed"
    reason = described["FailureReason"]
    assert "did not pass the ping health check" in reason
    assert "ModuleNotFoundError: No module named 'onnxruntime'" in reason
    assert standin.tritons() == []


def test_scaling_to_two_instances_runs_two_tritons_and_delete_stops_them(clients, tmp_path):
    standin, sagemaker, runtime, s3 = clients
    url = upload_package(s3, tmp_path, "upper/model.tar.gz", "upper", UPPER_CASE_ECHO)
    create_model(sagemaker, "upper-model", url)
    create_model_endpoint(sagemaker, "upper", "upper-model")
    wait_endpoint(sagemaker, "upper", "InService")

    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="upper",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}],
    )
    described = wait_endpoint(sagemaker, "upper", "InService")

    variant = described["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (2, 2)
    assert len(standin.tritons()) == 2
    assert {invoke_text(runtime, "upper", "a") for _ in range(4)} == {"A"}

    sagemaker.delete_endpoint(EndpointName="upper")
    wait_for(lambda: not standin.tritons(), what="the endpoint's Tritons to stop")
    sagemaker.delete_endpoint_config(EndpointConfigName="upper-config")
    sagemaker.delete_model(ModelName="upper-model")
    s3.delete_object(Bucket="standin-models", Key="upper/model.tar.gz")
    wait_for(lambda: not sagemaker.list_endpoints()["Endpoints"], what="the endpoint to be gone")
    assert standin.resources() == {
        "models": [],
        "endpoint_configs": [],
        "endpoints": [],
        "inference_components": [],
        "s3_objects": [],
        "scalable_targets": [],
        "alarms": [],
    }
