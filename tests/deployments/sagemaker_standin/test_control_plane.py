"""The stand-in's control plane: plain boto3 reaches it, shapes parse, bad requests are survived."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
import pytest

from tests.deployments.sagemaker_standin.helpers import (
    ROLE_ARN,
    UPPER_CASE_ECHO,
    create_component_endpoint,
    create_model,
    make_bucket,
    upload_package,
    wait_component,
    wait_endpoint,
)


def test_plain_boto3_clients_find_the_standin_through_the_standard_variables(
    clean_sagemaker_standin,
):
    # No endpoint_url anywhere: boto3 reads AWS_ENDPOINT_URL_<SERVICE> itself.
    for service in ("sagemaker", "sagemaker-runtime", "s3", "application-autoscaling"):
        assert boto3.client(service).meta.endpoint_url == clean_sagemaker_standin.base_url
    assert boto3.client("cloudwatch").meta.endpoint_url == clean_sagemaker_standin.base_url
    assert boto3.client("sagemaker").list_endpoints()["Endpoints"] == []


def test_an_inference_component_config_keeps_its_role_and_routing(clean_sagemaker_standin):
    sagemaker = clean_sagemaker_standin.client("sagemaker")
    create_component_endpoint(sagemaker, "ic", max_instances=2)

    config = sagemaker.describe_endpoint_config(EndpointConfigName="ic-config")

    assert config["ExecutionRoleArn"] == ROLE_ARN
    variant = config["ProductionVariants"][0]
    assert "ModelName" not in variant
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert variant["ManagedInstanceScaling"]["MaxInstanceCount"] == 2
    assert wait_endpoint(sagemaker, "ic")["EndpointStatus"] == "InService"


def test_components_are_listed_by_endpoint_in_pages(clean_sagemaker_standin, tmp_path):
    standin = clean_sagemaker_standin
    sagemaker, s3 = standin.client("sagemaker"), standin.client("s3")
    make_bucket(s3)
    create_model(sagemaker, "m", upload_package(s3, tmp_path, "m.tar.gz", "m", UPPER_CASE_ECHO))
    create_component_endpoint(sagemaker, "ic")
    for index in range(3):
        sagemaker.create_inference_component(
            InferenceComponentName=f"c{index}",
            EndpointName="ic",
            VariantName="AllTraffic",
            Specification={
                "ModelName": "m",
                "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 512},
            },
            RuntimeConfig={"CopyCount": 1},
        )
    for index in range(3):
        wait_component(sagemaker, f"c{index}", "InService")

    first = sagemaker.list_inference_components(EndpointNameEquals="ic", MaxResults=2)
    second = sagemaker.list_inference_components(
        EndpointNameEquals="ic", MaxResults=2, NextToken=first["NextToken"]
    )
    names = [c["InferenceComponentName"] for c in first["InferenceComponents"]]
    names += [c["InferenceComponentName"] for c in second["InferenceComponents"]]

    assert sorted(names) == ["c0", "c1", "c2"]
    assert "NextToken" not in second
    assert (
        sagemaker.list_inference_components(EndpointNameEquals="other")["InferenceComponents"] == []
    )


def test_a_malformed_request_is_answered_and_the_standin_keeps_serving(clean_sagemaker_standin):
    request = urllib.request.Request(
        clean_sagemaker_standin.base_url,
        data=b"{not json",
        headers={
            "X-Amz-Target": "SageMaker.CreateInferenceComponent",
            "Content-Type": "application/x-amz-json-1.1",
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["__type"] == "ValidationException"

    sagemaker = clean_sagemaker_standin.client("sagemaker")
    with pytest.raises(botocore.exceptions.ClientError) as unknown:
        sagemaker.describe_inference_component(InferenceComponentName="missing")
    assert "Could not find inference component" in unknown.value.response["Error"]["Message"]
    assert sagemaker.list_models()["Models"] == []
