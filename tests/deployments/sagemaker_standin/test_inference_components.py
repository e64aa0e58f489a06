"""Inference components on the stand-in: copies are real Tritons placed by reserved memory."""

from __future__ import annotations

import threading

import botocore.exceptions
import pytest

from tests.deployments.sagemaker_standin.helpers import (
    DOUBLING_ECHO,
    UPPER_CASE_ECHO,
    create_component_endpoint,
    create_model,
    create_model_endpoint,
    invoke_text,
    make_bucket,
    upload_package,
    wait_component,
    wait_endpoint,
)


@pytest.fixture
def models(clean_sagemaker_standin, tmp_path):
    """Two SageMaker models (upper-casing and doubling) for components to serve."""
    standin = clean_sagemaker_standin
    s3, sagemaker = standin.client("s3"), standin.client("sagemaker")
    make_bucket(s3)
    upper = upload_package(s3, tmp_path, "ic/upper/model.tar.gz", "upper", UPPER_CASE_ECHO)
    double = upload_package(s3, tmp_path, "ic/double/model.tar.gz", "double", DOUBLING_ECHO)
    create_model(sagemaker, "upper-model", upper)
    create_model(sagemaker, "double-model", double)
    return standin, sagemaker, standin.client("sagemaker-runtime")


def _specification(model: str, memory_mb: int = 1024) -> dict:
    return {"ModelName": model, "ComputeResourceRequirements": {"MinMemoryRequiredInMb": memory_mb}}


def _create_component(sagemaker, name, endpoint, model, *, copies=1, memory_mb=1024):
    sagemaker.create_inference_component(
        InferenceComponentName=name,
        EndpointName=endpoint,
        VariantName="AllTraffic",
        Specification=_specification(model, memory_mb),
        RuntimeConfig={"CopyCount": copies},
    )
    return wait_component(sagemaker, name)


def test_component_is_created_invoked_scaled_and_deleted(models):
    standin, sagemaker, runtime = models
    create_component_endpoint(sagemaker, "ic")
    wait_endpoint(sagemaker, "ic", "InService")

    described = _create_component(sagemaker, "upper-ic", "ic", "upper-model")
    assert described["InferenceComponentStatus"] == "InService"
    assert described["RuntimeConfig"] == {"DesiredCopyCount": 1, "CurrentCopyCount": 1}
    assert described["Specification"]["ModelName"] == "upper-model"
    assert invoke_text(runtime, "ic", "hi", InferenceComponentName="upper-ic") == "HI"

    sagemaker.update_inference_component_runtime_config(
        InferenceComponentName="upper-ic", DesiredRuntimeConfig={"CopyCount": 3}
    )
    scaled = wait_component(sagemaker, "upper-ic", "InService")
    assert scaled["RuntimeConfig"]["CurrentCopyCount"] == 3
    assert len(standin.tritons()) == 3

    sagemaker.update_inference_component_runtime_config(
        InferenceComponentName="upper-ic", DesiredRuntimeConfig={"CopyCount": 0}
    )
    wait_component(sagemaker, "upper-ic", "InService")
    assert standin.tritons() == []
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        invoke_text(runtime, "ic", "hi", InferenceComponentName="upper-ic")
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "no capacity" in refused.value.response["Error"]["Message"]
    # Scaled to zero, the instance stays.
    endpoint = sagemaker.describe_endpoint(EndpointName="ic")
    assert endpoint["ProductionVariants"][0]["CurrentInstanceCount"] == 1

    sagemaker.delete_inference_component(InferenceComponentName="upper-ic")
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        wait_component(sagemaker, "upper-ic", "never")
    assert gone.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find inference component" in gone.value.response["Error"]["Message"]
    assert sagemaker.list_inference_components(EndpointNameEquals="ic")["InferenceComponents"] == []


def test_rolling_update_serves_every_request_and_ends_on_the_new_model(models):
    standin, sagemaker, runtime = models
    create_component_endpoint(sagemaker, "ic")
    _create_component(sagemaker, "tenant-ic", "ic", "upper-model", copies=2)
    answers: list[str] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def keep_calling() -> None:
        while not stop.is_set() and len(answers) < 5000:
            try:
                answers.append(invoke_text(runtime, "ic", "ab", InferenceComponentName="tenant-ic"))
            except Exception as error:  # every failure is the finding
                failures.append(error)

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        sagemaker.update_inference_component(
            InferenceComponentName="tenant-ic",
            Specification=_specification("double-model"),
            RuntimeConfig={"CopyCount": 2},
            DeploymentConfig={
                "RollingUpdatePolicy": {
                    "MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                    "WaitIntervalInSeconds": 0,
                    "RollbackMaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                }
            },
        )
        assert (
            sagemaker.describe_inference_component(InferenceComponentName="tenant-ic")[
                "InferenceComponentStatus"
            ]
            == "Updating"
        )
        described = wait_component(sagemaker, "tenant-ic", "InService")
    finally:
        stop.set()
        caller.join(timeout=60)

    assert failures == []
    assert set(answers) <= {"AB", "abab"} and answers
    assert described["Specification"]["ModelName"] == "double-model"
    assert described["RuntimeConfig"]["CurrentCopyCount"] == 2
    assert described["LastDeploymentConfig"]["RollingUpdatePolicy"]["WaitIntervalInSeconds"] == 0
    assert invoke_text(runtime, "ic", "ab", InferenceComponentName="tenant-ic") == "abab"
    assert len(standin.tritons()) == 2


def test_update_rolls_back_when_a_named_alarm_goes_into_alarm(models):
    _, sagemaker, runtime = models
    cloudwatch = models[0].client("cloudwatch")
    create_component_endpoint(sagemaker, "ic")
    _create_component(sagemaker, "tenant-ic", "ic", "upper-model")
    cloudwatch.put_metric_alarm(
        AlarmName="tenant-ic-errors",
        MetricName="Invocation5XXErrors",
        Namespace="AWS/SageMaker",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(
        AlarmName="tenant-ic-errors", StateValue="ALARM", StateReason="errors after deploy"
    )

    sagemaker.update_inference_component(
        InferenceComponentName="tenant-ic",
        Specification=_specification("double-model"),
        DeploymentConfig={
            "RollingUpdatePolicy": {
                "MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                "WaitIntervalInSeconds": 1,
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "tenant-ic-errors"}]},
        },
    )
    described = wait_component(sagemaker, "tenant-ic", "InService")

    assert described["Specification"]["ModelName"] == "upper-model"
    assert "tenant-ic-errors" in described["FailureReason"]
    assert invoke_text(runtime, "ic", "ab", InferenceComponentName="tenant-ic") == "AB"


def test_managed_instance_scaling_adds_instances_for_copies_that_do_not_fit(models):
    standin, sagemaker, runtime = models
    create_component_endpoint(sagemaker, "ic", instance_type="ml.m5.large", max_instances=3)

    described = _create_component(
        sagemaker, "big-ic", "ic", "upper-model", copies=2, memory_mb=6000
    )

    assert described["InferenceComponentStatus"] == "InService"
    variant = sagemaker.describe_endpoint(EndpointName="ic")["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 2
    assert len({process["instance"] for process in standin.processes()}) == 2
    assert invoke_text(runtime, "ic", "x", InferenceComponentName="big-ic") == "X"


def test_copies_that_do_not_fit_without_managed_scaling_fail_with_the_shortfall(models):
    _, sagemaker, _ = models
    create_component_endpoint(sagemaker, "ic", instance_type="ml.m5.large")

    described = _create_component(
        sagemaker, "big-ic", "ic", "upper-model", copies=2, memory_mb=6000
    )

    assert described["InferenceComponentStatus"] == "Failed"
    assert "Insufficient memory" in described["FailureReason"]
    assert "6000 MB" in described["FailureReason"]


def test_a_component_needs_an_inference_component_endpoint_and_a_known_model(models):
    _, sagemaker, _ = models
    create_model_endpoint(sagemaker, "dedicated", "upper-model")
    create_component_endpoint(sagemaker, "ic")
    for endpoint, model, expected in [
        ("dedicated", "upper-model", "not set up for inference components"),
        ("ic", "no-such-model", "Could not find model"),
        ("no-such-endpoint", "upper-model", "Could not find endpoint"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sagemaker.create_inference_component(
                InferenceComponentName="x",
                EndpointName=endpoint,
                VariantName="AllTraffic",
                Specification=_specification(model),
                RuntimeConfig={"CopyCount": 1},
            )
        assert refused.value.response["Error"]["Code"] == "ValidationException"
        assert expected in refused.value.response["Error"]["Message"]
