"""SageMaker serving backend against moto (real fakes) and botocore's Stubber (real API shapes).

No request leaves this machine: moto intercepts the HTTP layer, and Stubber answers before
anything is sent while checking every request against the service's own API model. The backend
under test is the real one; only AWS is faked.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from deployments.backends.sagemaker.client import (
    EndpointBackendError,
    EndpointFailed,
    EndpointRequest,
    EndpointThrottled,
    InvalidEndpointRequest,
    InvocationRejected,
    SageMakerEndpointBackend,
    TritonImageUnavailable,
    triton_image_uri,
)
from deployments.exceptions import InvalidInferenceInput, UpstreamError

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/tenantml-serving"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PLATFORM_TAGS = [{"Key": "platform", "Value": "tenantml"}]


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}"


@pytest.fixture(autouse=True)
def _fake_aws(dummy_aws_credentials):
    """Every test here talks to moto or a Stubber, never to AWS."""


class Sleeps:
    """Records every pause the backend asks for instead of pausing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def sagemaker_stub():
    client = boto3.client("sagemaker", region_name=REGION)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def runtime_stub():
    client = boto3.client("sagemaker-runtime", region_name=REGION)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def autoscaling_stub():
    client = boto3.client("application-autoscaling", region_name=REGION)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def cloudwatch_stub():
    client = boto3.client("cloudwatch", region_name=REGION)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def stubbed_backend(sagemaker_stub, runtime_stub, autoscaling_stub, cloudwatch_stub, sleeps):
    return SageMakerEndpointBackend(
        sagemaker_client=sagemaker_stub.client,
        runtime_client=runtime_stub.client,
        autoscaling_client=autoscaling_stub.client,
        cloudwatch_client=cloudwatch_stub.client,
        sleep=sleeps,
    )


def client_error(code: str, message: str = "", http_status: int = 400, **modeled) -> dict:
    error = {
        "service_error_code": code,
        "service_message": message or code,
        "http_status_code": http_status,
    }
    if modeled:
        error["modeled_fields"] = modeled
    return error


def endpoint_description(name: str, status: str, **extra) -> dict:
    return {
        "EndpointName": name,
        "EndpointArn": arn("endpoint", name),
        "EndpointConfigName": f"{name}-config-1",
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        **extra,
    }


def not_found(kind: str, name: str) -> dict:
    return client_error("ValidationException", f"Could not find {kind} '{arn(kind, name)}'.")


def json_body(payload: dict) -> StreamingBody:
    raw = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


# ---------------------------------------------------------------------------------------------
# Triton image URIs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "region",
    ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1"],
)
def test_triton_image_comes_from_the_deep_learning_containers_account(region):
    assert triton_image_uri(region, "24.09") == (
        f"763104351884.dkr.ecr.{region}.amazonaws.com/sagemaker-tritonserver:24.09-py3"
    )


def test_triton_image_uses_the_regional_account_and_china_domain():
    assert triton_image_uri("ap-northeast-1") == (
        "763104351884.dkr.ecr.ap-northeast-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
    )
    assert triton_image_uri("af-south-1", "24.05-py3").startswith("626614931356.dkr.ecr.")
    assert triton_image_uri("cn-north-1").startswith(
        "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/"
    )


def test_triton_image_for_an_unknown_region_names_the_region():
    with pytest.raises(TritonImageUnavailable, match="mars-east-1"):
        triton_image_uri("mars-east-1")


def test_triton_image_refuses_versions_from_before_the_shared_registry():
    with pytest.raises(TritonImageUnavailable, match="23.12"):
        triton_image_uri("us-east-1", "22.07")


# ---------------------------------------------------------------------------------------------
# Multi-model endpoint end to end (moto)
# ---------------------------------------------------------------------------------------------


@mock_aws
def test_multi_model_endpoint_lifecycle_end_to_end(sleeps, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="tenantml-models")
    s3.create_bucket(Bucket="tenantml-artifacts")
    s3.put_object(
        Bucket="tenantml-artifacts", Key="acme/intents/3/model.tar.gz", Body=b"triton package"
    )
    backend = SageMakerEndpointBackend(region=REGION, sleep=sleeps)
    request = EndpointRequest(
        name="tml-mme-g4dn",
        mode="mme",
        instance_type="ml.g4dn.xlarge",
        instance_count=2,
        role_arn=ROLE_ARN,
        image_uri=IMAGE,
        model_data_prefix="s3://tenantml-models/endpoints/tml-mme-g4dn/",
        environment={"SAGEMAKER_TRITON_LOG_INFO": "false"},
    )

    created = backend.ensure_endpoint(request)
    again = backend.ensure_endpoint(request)

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    model = sagemaker.describe_model(ModelName="tml-mme-g4dn-model")
    assert model["PrimaryContainer"]["Mode"] == "MultiModel"
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == (
        "s3://tenantml-models/endpoints/tml-mme-g4dn/"
    )
    config = sagemaker.describe_endpoint_config(EndpointConfigName="tml-mme-g4dn-config-1")
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == "tml-mme-g4dn-model"
    assert variant["InstanceType"] == "ml.g4dn.xlarge"
    assert variant["InitialInstanceCount"] == 2
    assert created.arn == again.arn
    assert again.config_name == "tml-mme-g4dn-config-1"
    assert len(sagemaker.list_endpoints()["Endpoints"]) == 1

    ready = backend.wait_in_service("tml-mme-g4dn", delay_s=0, max_attempts=3)
    assert ready.is_in_service

    # A version copied server-side, and a locally built package uploaded, both under the prefix.
    target = backend.add_model(
        endpoint_prefix=request.model_data_prefix,
        package_s3_uri="s3://tenantml-artifacts/acme/intents/3/model.tar.gz",
        target_model="acme/intents/v3.tar.gz",
    )
    local_package = tmp_path / "model.tar.gz"
    local_package.write_bytes(b"local triton package")
    local_target = backend.add_model(
        endpoint_prefix=request.model_data_prefix,
        package_s3_uri=str(local_package),
        target_model="globex/embed/v1.tar.gz",
    )
    assert (target, local_target) == ("acme/intents/v3.tar.gz", "globex/embed/v1.tar.gz")
    copied = s3.get_object(
        Bucket="tenantml-models", Key="endpoints/tml-mme-g4dn/acme/intents/v3.tar.gz"
    )
    assert copied["Body"].read() == b"triton package"
    uploaded = s3.get_object(
        Bucket="tenantml-models", Key="endpoints/tml-mme-g4dn/globex/embed/v1.tar.gz"
    )
    assert uploaded["Body"].read() == b"local triton package"

    backend.remove_model(endpoint_prefix=request.model_data_prefix, target_model=target)
    remaining = s3.list_objects_v2(Bucket="tenantml-models", Prefix="endpoints/tml-mme-g4dn/")
    assert [item["Key"] for item in remaining["Contents"]] == [
        "endpoints/tml-mme-g4dn/globex/embed/v1.tar.gz"
    ]

    backend.configure_variant_autoscaling("tml-mme-g4dn", min_instances=1, max_instances=4)
    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    [target_row] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert target_row["ResourceId"] == "endpoint/tml-mme-g4dn/variant/AllTraffic"
    assert (target_row["MinCapacity"], target_row["MaxCapacity"]) == (1, 4)
    [policy] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"
    ]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetValue"] == 225
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )

    retired = backend.retire_endpoint("tml-mme-g4dn", delay_s=0)

    assert retired.endpoint == "tml-mme-g4dn"
    assert retired.endpoint_configs == ("tml-mme-g4dn-config-1",)
    assert retired.models == ("tml-mme-g4dn-model",)
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_models()["Models"] == []
    assert (
        autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    )
    # Retiring twice finds nothing left and does not fail.
    assert backend.retire_endpoint("tml-mme-g4dn", delay_s=0).endpoint is None


@mock_aws
def test_dedicated_endpoint_serves_one_single_model_package(sleeps):
    backend = SageMakerEndpointBackend(region=REGION, sleep=sleeps)
    backend.ensure_endpoint(
        EndpointRequest(
            name="tml-acme-llm",
            mode="dedicated",
            instance_type="ml.g4dn.2xlarge",
            role_arn=ROLE_ARN,
            image_uri=IMAGE,
            model_data_url="s3://tenantml-artifacts/acme/llm/7/model.tar.gz",
            environment={"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "llm"},
        )
    )
    model = boto3.client("sagemaker", region_name=REGION).describe_model(
        ModelName="tml-acme-llm-model"
    )
    assert model["PrimaryContainer"]["Mode"] == "SingleModel"
    assert model["PrimaryContainer"]["ModelDataUrl"] == (
        "s3://tenantml-artifacts/acme/llm/7/model.tar.gz"
    )
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "llm"
    }


def test_target_model_outside_the_prefix_is_refused(sleeps):
    backend = SageMakerEndpointBackend(region=REGION, sleep=sleeps)
    with pytest.raises(InvalidEndpointRequest, match="relative key"):
        backend.add_model(
            endpoint_prefix="s3://tenantml-models/endpoints/e/",
            package_s3_uri="s3://tenantml-artifacts/a/model.tar.gz",
            target_model="../other-endpoint/v1.tar.gz",
        )


def test_multi_model_request_without_prefix_is_refused_before_any_call(stubbed_backend):
    request = EndpointRequest(
        name="e", mode="mme", instance_type="ml.g4dn.xlarge", role_arn=ROLE_ARN, image_uri=IMAGE
    )
    with pytest.raises(InvalidEndpointRequest, match="model_data_prefix") as raised:
        stubbed_backend.ensure_endpoint(request)
    assert raised.value.field == "model_data_prefix"


# ---------------------------------------------------------------------------------------------
# Inference components (Stubber)
# ---------------------------------------------------------------------------------------------


def component_description(name: str, status: str = "Creating", copies: int = 2) -> dict:
    return {
        "InferenceComponentName": name,
        "InferenceComponentArn": arn("inference-component", name),
        "EndpointName": "tml-ic-g5",
        "EndpointArn": arn("endpoint", "tml-ic-g5"),
        "VariantName": "AllTraffic",
        "Specification": {
            "ModelName": f"{name}-model",
            "ComputeResourceRequirements": {
                "NumberOfAcceleratorDevicesRequired": 1,
                "MinMemoryRequiredInMb": 20480,
                "NumberOfCpuCoresRequired": 2,
            },
        },
        "RuntimeConfig": {"DesiredCopyCount": copies, "CurrentCopyCount": 0},
        "InferenceComponentStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }


def test_inference_component_reserves_memory_accelerators_and_copies(
    stubbed_backend, sagemaker_stub
):
    sagemaker_stub.add_response(
        "create_model",
        {"ModelArn": arn("model", "acme-llm-v7-model")},
        {
            "ModelName": "acme-llm-v7-model",
            "ExecutionRoleArn": ROLE_ARN,
            "PrimaryContainer": {
                "Image": IMAGE,
                "Mode": "SingleModel",
                "ModelDataUrl": "s3://tenantml-artifacts/acme/llm/7/model.tar.gz",
            },
            "Tags": PLATFORM_TAGS,
        },
    )
    sagemaker_stub.add_response(
        "create_inference_component",
        {"InferenceComponentArn": arn("inference-component", "acme-llm-v7")},
        {
            "InferenceComponentName": "acme-llm-v7",
            "EndpointName": "tml-ic-g5",
            "VariantName": "AllTraffic",
            "Specification": {
                "ModelName": "acme-llm-v7-model",
                "ComputeResourceRequirements": {
                    "MinMemoryRequiredInMb": 20480,
                    "NumberOfAcceleratorDevicesRequired": 1,
                    "NumberOfCpuCoresRequired": 2,
                },
            },
            "RuntimeConfig": {"CopyCount": 2},
            "Tags": PLATFORM_TAGS,
        },
    )
    sagemaker_stub.add_response(
        "describe_inference_component",
        component_description("acme-llm-v7"),
        {"InferenceComponentName": "acme-llm-v7"},
    )

    state = stubbed_backend.create_inference_component(
        name="acme-llm-v7",
        endpoint_name="tml-ic-g5",
        image_uri=IMAGE,
        model_data_url="s3://tenantml-artifacts/acme/llm/7/model.tar.gz",
        role_arn=ROLE_ARN,
        memory_mb=20480,
        accelerators=1,
        cpu_cores=2,
        copies=2,
    )

    assert state.model_name == "acme-llm-v7-model"
    assert (state.status, state.desired_copies) == ("Creating", 2)


def test_cpu_component_leaves_out_the_accelerator_count(stubbed_backend, sagemaker_stub):
    sagemaker_stub.add_response("create_model", {"ModelArn": arn("model", "small-model")})
    sagemaker_stub.add_response(
        "create_inference_component",
        {"InferenceComponentArn": arn("inference-component", "small")},
        {
            "InferenceComponentName": "small",
            "EndpointName": "tml-ic-g5",
            "VariantName": "AllTraffic",
            "Specification": {
                "ModelName": "small-model",
                "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 512},
            },
            "RuntimeConfig": {"CopyCount": 1},
            "Tags": PLATFORM_TAGS,
        },
    )
    sagemaker_stub.add_response(
        "describe_inference_component",
        component_description("small", copies=1),
        {"InferenceComponentName": "small"},
    )
    stubbed_backend.create_inference_component(
        name="small",
        endpoint_name="tml-ic-g5",
        image_uri=IMAGE,
        model_data_url="s3://b/small/model.tar.gz",
        role_arn=ROLE_ARN,
        memory_mb=512,
    )


def test_component_scaled_to_zero_copies(stubbed_backend, sagemaker_stub):
    sagemaker_stub.add_response(
        "update_inference_component_runtime_config",
        {"InferenceComponentArn": arn("inference-component", "acme-llm-v7")},
        {"InferenceComponentName": "acme-llm-v7", "DesiredRuntimeConfig": {"CopyCount": 0}},
    )
    stubbed_backend.set_component_copies("acme-llm-v7", 0)


def test_component_autoscaling_tracks_invocations_per_copy(stubbed_backend, autoscaling_stub):
    autoscaling_stub.add_response(
        "register_scalable_target",
        {},
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": "inference-component/acme-llm-v7",
            "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
            "MinCapacity": 1,
            "MaxCapacity": 4,
        },
    )
    policy_arn = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:1:resource/x"
    autoscaling_stub.add_response(
        "put_scaling_policy",
        {"PolicyARN": policy_arn, "Alarms": []},
        {
            "PolicyName": "acme-llm-v7-invocations-per-copy",
            "ServiceNamespace": "sagemaker",
            "ResourceId": "inference-component/acme-llm-v7",
            "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 5.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
                },
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        },
    )
    assert (
        stubbed_backend.configure_component_autoscaling(
            "acme-llm-v7", min_copies=1, max_copies=4, invocations_per_copy=5
        )
        == policy_arn
    )


def test_inference_component_endpoint_config_has_no_model(stubbed_backend, sagemaker_stub):
    sagemaker_stub.add_client_error(
        "describe_endpoint", **not_found("endpoint", "tml-ic-g5"), expected_params=None
    )
    sagemaker_stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": arn("endpoint-config", "tml-ic-g5-config-1")},
        {
            "EndpointConfigName": "tml-ic-g5-config-1",
            "ExecutionRoleArn": ROLE_ARN,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "InstanceType": "ml.g5.12xlarge",
                    "InitialInstanceCount": 1,
                    "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
                    "ManagedInstanceScaling": {
                        "Status": "ENABLED",
                        "MinInstanceCount": 1,
                        "MaxInstanceCount": 3,
                    },
                }
            ],
            "Tags": PLATFORM_TAGS,
        },
    )
    sagemaker_stub.add_response(
        "create_endpoint",
        {"EndpointArn": arn("endpoint", "tml-ic-g5")},
        {
            "EndpointName": "tml-ic-g5",
            "EndpointConfigName": "tml-ic-g5-config-1",
            "Tags": PLATFORM_TAGS,
        },
    )

    state = stubbed_backend.ensure_endpoint(
        EndpointRequest(
            name="tml-ic-g5",
            mode="inference-component",
            instance_type="ml.g5.12xlarge",
            role_arn=ROLE_ARN,
            min_instances=1,
            max_instances=3,
        )
    )

    assert (state.status, state.config_name) == ("Creating", "tml-ic-g5-config-1")


def test_update_endpoint_rolls_onto_a_new_config(stubbed_backend, sagemaker_stub):
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "tml-mme-g4dn-model",
        "InitialInstanceCount": 1,
        "InstanceType": "ml.g4dn.xlarge",
        "InitialVariantWeight": 1.0,
    }
    sagemaker_stub.add_response(
        "describe_endpoint",
        endpoint_description("tml-mme-g4dn", "InService"),
        {"EndpointName": "tml-mme-g4dn"},
    )
    sagemaker_stub.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": "tml-mme-g4dn-config-1",
            "EndpointConfigArn": arn("endpoint-config", "tml-mme-g4dn-config-1"),
            "ProductionVariants": [variant],
            "CreationTime": NOW,
        },
        {"EndpointConfigName": "tml-mme-g4dn-config-1"},
    )
    sagemaker_stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": arn("endpoint-config", "tml-mme-g4dn-config-2")},
        {
            "EndpointConfigName": "tml-mme-g4dn-config-2",
            "ProductionVariants": [{**variant, "InitialInstanceCount": 3}],
            "Tags": PLATFORM_TAGS,
        },
    )
    sagemaker_stub.add_response(
        "update_endpoint",
        {"EndpointArn": arn("endpoint", "tml-mme-g4dn")},
        {"EndpointName": "tml-mme-g4dn", "EndpointConfigName": "tml-mme-g4dn-config-2"},
    )
    for status in ("Updating", "InService", "InService"):
        sagemaker_stub.add_response(
            "describe_endpoint",
            endpoint_description(
                "tml-mme-g4dn",
                status,
                EndpointConfigName="tml-mme-g4dn-config-2",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "CurrentInstanceCount": 3,
                        "DesiredInstanceCount": 3,
                    }
                ],
            ),
            {"EndpointName": "tml-mme-g4dn"},
        )

    state = stubbed_backend.update_instance_count("tml-mme-g4dn", 3, delay_s=0, max_attempts=5)

    assert state.config_name == "tml-mme-g4dn-config-2"
    assert state.variants[0].current_instance_count == 3


# ---------------------------------------------------------------------------------------------
# Invocations (Stubber)
# ---------------------------------------------------------------------------------------------

V2_REQUEST = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]}
V2_ANSWER = {"model_name": "intents", "outputs": [{"name": "LABEL", "data": ["greeting"]}]}


def test_invoke_multi_model_endpoint_with_target_model(stubbed_backend, runtime_stub):
    runtime_stub.add_response(
        "invoke_endpoint",
        {"Body": json_body(V2_ANSWER), "ContentType": "application/json"},
        {
            "EndpointName": "tml-mme-g4dn",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(V2_REQUEST).encode(),
            "TargetModel": "acme/intents/v3.tar.gz",
        },
    )
    answer = stubbed_backend.invoke(
        endpoint_name="tml-mme-g4dn", body=V2_REQUEST, target_model="acme/intents/v3.tar.gz"
    )
    assert answer == V2_ANSWER


def test_invoke_inference_component_by_name(stubbed_backend, runtime_stub):
    runtime_stub.add_response(
        "invoke_endpoint",
        {"Body": json_body(V2_ANSWER)},
        {
            "EndpointName": "tml-ic-g5",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(V2_REQUEST).encode(),
            "InferenceComponentName": "acme-llm-v7",
        },
    )
    answer = stubbed_backend.invoke(
        endpoint_name="tml-ic-g5", body=V2_REQUEST, inference_component="acme-llm-v7"
    )
    assert answer == V2_ANSWER


def test_model_error_carries_tritons_message(stubbed_backend, runtime_stub):
    runtime_stub.add_client_error(
        "invoke_endpoint",
        **client_error(
            "ModelError",
            "Received server error (500) from primary",
            424,
            OriginalStatusCode=500,
            OriginalMessage="python backend: CUDA out of memory",
        ),
    )
    with pytest.raises(UpstreamError, match="CUDA out of memory"):
        stubbed_backend.invoke(
            endpoint_name="tml-mme-g4dn", body=V2_REQUEST, target_model="acme/intents/v3.tar.gz"
        )


def test_model_rejecting_the_body_is_an_input_error(stubbed_backend, runtime_stub):
    runtime_stub.add_client_error(
        "invoke_endpoint",
        **client_error(
            "ModelError",
            "Received client error (400) from primary",
            424,
            OriginalStatusCode=400,
            OriginalMessage="unexpected inference input 'TXT'",
        ),
    )
    with pytest.raises(InvalidInferenceInput, match="unexpected inference input 'TXT'"):
        stubbed_backend.invoke(
            endpoint_name="tml-mme-g4dn", body=V2_REQUEST, target_model="acme/intents/v3.tar.gz"
        )


def test_missing_model_package_is_a_rejected_invocation(stubbed_backend, runtime_stub):
    message = "Failed to download model data(bucket: tenantml-models, key: acme/v9.tar.gz)."
    runtime_stub.add_client_error("invoke_endpoint", **client_error("ValidationError", message))
    with pytest.raises(InvocationRejected, match="Failed to download model data"):
        stubbed_backend.invoke(
            endpoint_name="tml-mme-g4dn", body=V2_REQUEST, target_model="acme/v9.tar.gz"
        )


# ---------------------------------------------------------------------------------------------
# Retries, existing resources and failures (Stubber)
# ---------------------------------------------------------------------------------------------


def test_throttling_is_retried_with_bounded_full_jitter(stubbed_backend, sagemaker_stub, sleeps):
    for _ in range(3):
        sagemaker_stub.add_client_error(
            "update_inference_component_runtime_config",
            **client_error("ThrottlingException", "Rate exceeded", 400),
        )
    sagemaker_stub.add_response(
        "update_inference_component_runtime_config",
        {"InferenceComponentArn": arn("inference-component", "acme-llm-v7")},
    )

    stubbed_backend.set_component_copies("acme-llm-v7", 3)

    assert len(sleeps.calls) == 3
    # Full jitter: each pause is anywhere from 0 up to the doubling ceiling 0.5, 1, 2 s.
    for attempt, pause in enumerate(sleeps.calls):
        assert 0.0 <= pause <= 0.5 * 2**attempt


def test_throttling_that_never_ends_becomes_a_retry_later_error(sagemaker_stub, sleeps):
    backend = SageMakerEndpointBackend(
        sagemaker_client=sagemaker_stub.client, sleep=sleeps, max_retries=2, jitter=lambda c: c
    )
    for _ in range(3):
        sagemaker_stub.add_client_error(
            "update_inference_component_runtime_config",
            **client_error("ThrottlingException", "Rate exceeded", 400),
        )
    with pytest.raises(EndpointThrottled, match="tried 3 times"):
        backend.set_component_copies("acme-llm-v7", 3)
    assert sleeps.calls == [0.5, 1.0]


def test_non_throttling_error_surfaces_awss_message_without_retrying(
    stubbed_backend, sagemaker_stub, sleeps
):
    sagemaker_stub.add_client_error(
        "update_inference_component_runtime_config",
        **client_error(
            "ValidationException", "Inference component acme-llm-v7 is in Updating state."
        ),
    )
    with pytest.raises(
        EndpointBackendError, match=r"UpdateInferenceComponentRuntimeConfig .*Updating state"
    ):
        stubbed_backend.set_component_copies("acme-llm-v7", 1)
    assert sleeps.calls == []


def test_existing_model_and_endpoint_are_described_not_duplicated(stubbed_backend, sagemaker_stub):
    sagemaker_stub.add_client_error("describe_endpoint", **not_found("endpoint", "tml-mme"))
    sagemaker_stub.add_client_error(
        "create_model",
        **client_error(
            "ValidationException",
            f'Cannot create already existing model "{arn("model", "tml-mme-model")}".',
        ),
    )
    sagemaker_stub.add_response(
        "create_endpoint_config", {"EndpointConfigArn": arn("endpoint-config", "tml-mme-config-1")}
    )
    sagemaker_stub.add_client_error(
        "create_endpoint",
        **client_error(
            "ValidationException",
            f'Cannot create already existing endpoint "{arn("endpoint", "tml-mme")}".',
        ),
    )
    sagemaker_stub.add_response(
        "describe_endpoint",
        endpoint_description("tml-mme", "Creating"),
        {"EndpointName": "tml-mme"},
    )

    state = stubbed_backend.ensure_endpoint(
        EndpointRequest(
            name="tml-mme",
            mode="mme",
            instance_type="ml.g4dn.xlarge",
            role_arn=ROLE_ARN,
            image_uri=IMAGE,
            model_data_prefix="s3://tenantml-models/endpoints/tml-mme",
        )
    )

    assert (state.arn, state.status) == (arn("endpoint", "tml-mme"), "Creating")


def test_failed_endpoint_surfaces_its_failure_reason(stubbed_backend, sagemaker_stub):
    reason = "The primary container for production variant AllTraffic did not pass the ping."
    sagemaker_stub.add_response("describe_endpoint", endpoint_description("tml-mme", "Creating"))
    sagemaker_stub.add_response(
        "describe_endpoint", endpoint_description("tml-mme", "Failed", FailureReason=reason)
    )
    with pytest.raises(EndpointFailed, match="did not pass the ping") as raised:
        stubbed_backend.wait_in_service("tml-mme", delay_s=0, max_attempts=5)
    assert raised.value.failure_reason == reason


def test_throttled_status_check_restarts_the_wait(stubbed_backend, sagemaker_stub, sleeps):
    sagemaker_stub.add_client_error(
        "describe_endpoint", **client_error("ThrottlingException", "Rate exceeded")
    )
    sagemaker_stub.add_response("describe_endpoint", endpoint_description("tml-mme", "InService"))
    sagemaker_stub.add_response("describe_endpoint", endpoint_description("tml-mme", "InService"))
    assert stubbed_backend.wait_in_service("tml-mme", delay_s=0, max_attempts=5).is_in_service
    assert len(sleeps.calls) == 1


def test_retire_removes_components_before_the_endpoint(
    stubbed_backend, sagemaker_stub, autoscaling_stub, cloudwatch_stub, sleeps
):
    sagemaker_stub.add_response(
        "describe_endpoint",
        endpoint_description(
            "tml-ic-g5",
            "InService",
            ProductionVariants=[{"VariantName": "AllTraffic", "CurrentInstanceCount": 1}],
        ),
        {"EndpointName": "tml-ic-g5"},
    )
    sagemaker_stub.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": "tml-ic-g5-config-1",
            "EndpointConfigArn": arn("endpoint-config", "tml-ic-g5-config-1"),
            "ProductionVariants": [{"VariantName": "AllTraffic", "InstanceType": "ml.g5.12xlarge"}],
            "ExecutionRoleArn": ROLE_ARN,
            "CreationTime": NOW,
        },
        {"EndpointConfigName": "tml-ic-g5-config-1"},
    )
    sagemaker_stub.add_response(
        "list_inference_components",
        {
            "InferenceComponents": [
                {
                    "InferenceComponentName": "acme-llm-v7",
                    "InferenceComponentArn": arn("inference-component", "acme-llm-v7"),
                    "EndpointName": "tml-ic-g5",
                    "EndpointArn": arn("endpoint", "tml-ic-g5"),
                    "VariantName": "AllTraffic",
                    "CreationTime": NOW,
                    "LastModifiedTime": NOW,
                }
            ]
        },
        {"EndpointNameEquals": "tml-ic-g5"},
    )
    sagemaker_stub.add_response(
        "describe_inference_component", component_description("acme-llm-v7", "InService")
    )
    autoscaling_stub.add_client_error(
        "deregister_scalable_target",
        **client_error("ObjectNotFoundException", "No scalable target registered"),
        expected_params={
            "ServiceNamespace": "sagemaker",
            "ResourceId": "inference-component/acme-llm-v7",
            "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
        },
    )
    sagemaker_stub.add_response(
        "delete_inference_component", {}, {"InferenceComponentName": "acme-llm-v7"}
    )
    # Its alarms go with it: the 5xx alarm exists, the no-capacity one (a pinned model's
    # component has none) does not.
    cloudwatch_stub.add_response(
        "describe_alarms",
        {"MetricAlarms": [{"AlarmName": "acme-llm-v7-invocation-5xx"}]},
        {"AlarmNames": ["acme-llm-v7-invocation-5xx"]},
    )
    cloudwatch_stub.add_response(
        "delete_alarms", {}, {"AlarmNames": ["acme-llm-v7-invocation-5xx"]}
    )
    cloudwatch_stub.add_response(
        "describe_alarms", {"MetricAlarms": []}, {"AlarmNames": ["acme-llm-v7-no-capacity"]}
    )
    sagemaker_stub.add_response(
        "describe_inference_component", component_description("acme-llm-v7", "Deleting")
    )
    sagemaker_stub.add_client_error(
        "describe_inference_component", **not_found("inference-component", "acme-llm-v7")
    )
    autoscaling_stub.add_response(
        "deregister_scalable_target",
        {},
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/tml-ic-g5/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        },
    )
    sagemaker_stub.add_response("delete_endpoint", {}, {"EndpointName": "tml-ic-g5"})
    # Retired means gone: the deletion is waited for.
    sagemaker_stub.add_response(
        "describe_endpoint",
        endpoint_description("tml-ic-g5", "Deleting"),
        {"EndpointName": "tml-ic-g5"},
    )
    sagemaker_stub.add_client_error("describe_endpoint", **not_found("endpoint", "tml-ic-g5"))
    sagemaker_stub.add_response(
        "list_endpoint_configs",
        {
            "EndpointConfigs": [
                {
                    "EndpointConfigName": name,
                    "EndpointConfigArn": arn("endpoint-config", name),
                    "CreationTime": NOW,
                }
                # Another endpoint whose name ends in this one's is left alone.
                for name in ("tml-ic-g5-config-1", "old-tml-ic-g5-config-1")
            ]
        },
        {"NameContains": "tml-ic-g5-config-"},
    )
    sagemaker_stub.add_response(
        "delete_endpoint_config", {}, {"EndpointConfigName": "tml-ic-g5-config-1"}
    )
    sagemaker_stub.add_response("delete_model", {}, {"ModelName": "acme-llm-v7-model"})
    sagemaker_stub.add_client_error("delete_model", **not_found("model", "tml-ic-g5-model"))

    retired = stubbed_backend.retire_endpoint("tml-ic-g5", delay_s=7)

    assert retired.inference_components == ("acme-llm-v7",)
    assert retired.alarms == ("acme-llm-v7-invocation-5xx",)
    assert retired.endpoint == "tml-ic-g5"
    assert retired.endpoint_configs == ("tml-ic-g5-config-1",)
    assert retired.models == ("acme-llm-v7-model",)
    assert sleeps.calls == [7, 7]
