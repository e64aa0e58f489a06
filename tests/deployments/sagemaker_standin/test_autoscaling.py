"""Autoscaling on the stand-in: Application Auto Scaling's policies and CloudWatch's alarms act.

The end-to-end tests use boto3 only, against the stand-in with its scaling period shortened
(one period stands for one CloudWatch minute); the arithmetic is tested on its own first.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest

from deployments.sagemaker_standin.autoscaling import (
    Clock,
    InvalidClock,
    adjusted_capacity,
    bounded,
    chosen_capacity,
    step_for,
    target_tracking_capacity,
)
from deployments.sagemaker_standin.cloudwatch import aggregate, alarm_state
from tests.deployments.sagemaker_standin.helpers import (
    BUCKET,
    ROLE_ARN,
    UPPER_CASE_ECHO,
    create_model,
    invoke_text,
    make_bucket,
    upload_package,
    wait_component,
    wait_endpoint,
    wait_for,
)

COMPONENT = "tenant-ic"
COMPONENT_RESOURCE = f"inference-component/{COMPONENT}"
COPIES = "sagemaker:inference-component:DesiredCopyCount"
INSTANCES = "sagemaker:variant:DesiredInstanceCount"
PERIOD_S = 0.3

# -- the arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "value", "target", "expected"),
    [
        (1, 0.0, 5.0, 0),  # no traffic at all: nothing needed
        (1, 0.2, 5.0, 1),  # any traffic keeps a copy
        (1, 95.0, 80.0, 2),
        (2, 95.0, 80.0, 3),
        (4, 40.0, 80.0, 2),
        (3, 80.0, 80.0, 3),
    ],
)
def test_target_tracking_asks_for_the_capacity_that_meets_the_target(
    current, value, target, expected
):
    assert target_tracking_capacity(current, value, target) == expected


def test_capacity_stays_within_the_targets_bounds():
    assert bounded(0, 1, 4) == 1
    assert bounded(9, 1, 4) == 4
    assert bounded(0, 0, 4) == 0


def test_step_is_chosen_by_how_far_the_alarm_breaches_its_threshold():
    steps = [
        {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
        {"MetricIntervalLowerBound": 10, "ScalingAdjustment": 3},
        {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
    ]
    assert step_for(steps, 0)["ScalingAdjustment"] == 1  # lower bound inclusive above
    assert step_for(steps, 9.5)["ScalingAdjustment"] == 1
    assert step_for(steps, 10)["ScalingAdjustment"] == 3
    assert step_for(steps, -2)["ScalingAdjustment"] == -1
    assert step_for([{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}], -1) is None


def test_step_adjustments_change_set_or_scale_by_a_percentage():
    assert adjusted_capacity(0, "ChangeInCapacity", 1) == 1
    assert adjusted_capacity(3, "ExactCapacity", 1) == 1
    assert adjusted_capacity(10, "PercentChangeInCapacity", 15) == 11  # 1.5 rounds toward zero
    assert adjusted_capacity(2, "PercentChangeInCapacity", 10) == 3  # under one rounds up to one
    assert adjusted_capacity(4, "PercentChangeInCapacity", -10) == 3
    assert adjusted_capacity(10, "PercentChangeInCapacity", 20, min_magnitude=5) == 15


def test_the_largest_capacity_wins_so_every_policy_must_agree_to_scale_in():
    assert chosen_capacity(1, [0, 1]) is None
    assert chosen_capacity(1, [0, 0]) == 0
    assert chosen_capacity(1, [3, 0]) == 3
    assert chosen_capacity(2, []) is None


def test_alarm_state_follows_its_datapoints_and_how_missing_data_is_treated():
    def state(recent, treat="missing", to_alarm=1):
        return alarm_state(
            recent,
            operator="GreaterThanOrEqualToThreshold",
            threshold=1.0,
            datapoints_to_alarm=to_alarm,
            treat_missing_data=treat,
        )

    assert state([1.0]) == "ALARM"
    assert state([0.0]) == "OK"
    assert state([None]) == "INSUFFICIENT_DATA"
    assert state([None], treat="ignore") is None
    assert state([None], treat="notBreaching") == "OK"
    assert state([None], treat="breaching") == "ALARM"
    assert state([1.0, 0.0, 1.0], to_alarm=3) == "OK"
    assert state([1.0, 2.0, 1.0], to_alarm=3) == "ALARM"


def test_statistics_combine_single_values_and_statistic_sets():
    samples = [(1, 4.0, 4.0, 4.0), (3, 6.0, 1.0, 3.0)]
    assert aggregate(samples, "Sum") == 10.0
    assert aggregate(samples, "Average") == 2.5
    assert aggregate(samples, "Minimum") == 1.0
    assert aggregate(samples, "Maximum") == 4.0
    assert aggregate(samples, "SampleCount") == 4
    assert aggregate([], "Sum") is None


def test_clock_settings_are_validated_by_field():
    assert Clock().changed({"period_s": 0.5, "scale_in_periods": 3}) == Clock(0.5, 3)
    with pytest.raises(InvalidClock, match="period_s"):
        Clock().changed({"period_s": 0})
    with pytest.raises(InvalidClock, match="scale_in_periods"):
        Clock().changed({"scale_in_periods": 1.5})
    with pytest.raises(InvalidClock, match="speed"):
        Clock().changed({"speed": 2})


# -- on the stand-in -------------------------------------------------------------------------


def _component(sagemaker) -> dict:
    return sagemaker.describe_inference_component(InferenceComponentName=COMPONENT)


def _variant(sagemaker, endpoint: str) -> dict:
    return sagemaker.describe_endpoint(EndpointName=endpoint)["ProductionVariants"][0]


def _activities(autoscaling, resource: str) -> list[dict]:
    return autoscaling.describe_scaling_activities(
        ServiceNamespace="sagemaker", ResourceId=resource
    )["ScalingActivities"]


@pytest.fixture
def scale_to_zero(clean_sagemaker_standin, tmp_path):
    """A component on an endpoint that may run no instance, set up as AWS documents scaling to
    zero: min 0 copies, target tracking on invocations per copy, and a step policy on an alarm
    over NoCapacityInvocationFailures."""
    standin = clean_sagemaker_standin
    s3, sagemaker = standin.client("s3"), standin.client("sagemaker")
    autoscaling = standin.client("application-autoscaling")
    cloudwatch = standin.client("cloudwatch")
    make_bucket(s3)
    url = upload_package(s3, tmp_path, "ic/upper/model.tar.gz", "upper", UPPER_CASE_ECHO)
    create_model(sagemaker, "upper-model", url)
    sagemaker.create_endpoint_config(
        EndpointConfigName="ic-config",
        ExecutionRoleArn=ROLE_ARN,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
                "ManagedInstanceScaling": {
                    "Status": "ENABLED",
                    "MinInstanceCount": 0,
                    "MaxInstanceCount": 1,
                },
                "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName="ic", EndpointConfigName="ic-config")
    wait_endpoint(sagemaker, "ic", "InService")
    sagemaker.create_inference_component(
        InferenceComponentName=COMPONENT,
        EndpointName="ic",
        VariantName="AllTraffic",
        Specification={
            "ModelName": "upper-model",
            "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 1024},
        },
        RuntimeConfig={"CopyCount": 1},
    )
    assert wait_component(sagemaker, COMPONENT)["InferenceComponentStatus"] == "InService"
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=COMPONENT_RESOURCE,
        ScalableDimension=COPIES,
        MinCapacity=0,
        MaxCapacity=1,
    )
    autoscaling.put_scaling_policy(
        PolicyName="copies-per-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=COMPONENT_RESOURCE,
        ScalableDimension=COPIES,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
            },
            "ScaleInCooldown": 60,
            "ScaleOutCooldown": 60,
        },
    )
    step = autoscaling.put_scaling_policy(
        PolicyName="out-of-zero",
        ServiceNamespace="sagemaker",
        ResourceId=COMPONENT_RESOURCE,
        ScalableDimension=COPIES,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Maximum",
            "Cooldown": 60,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    cloudwatch.put_metric_alarm(
        AlarmName="tenant-ic-no-capacity",
        AlarmActions=[step["PolicyARN"]],
        Namespace="AWS/SageMaker",
        MetricName="NoCapacityInvocationFailures",
        Dimensions=[{"Name": "InferenceComponentName", "Value": COMPONENT}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    return standin, sagemaker, standin.client("sagemaker-runtime"), autoscaling, cloudwatch


def test_idle_component_scales_to_zero_and_a_request_brings_a_copy_back(scale_to_zero):
    standin, sagemaker, runtime, autoscaling, cloudwatch = scale_to_zero
    started = datetime.now(UTC)
    assert invoke_text(runtime, "ic", "hi", InferenceComponentName=COMPONENT) == "HI"

    standin.set_clock(period_s=PERIOD_S, scale_in_periods=3)
    wait_for(
        lambda: (
            _component(sagemaker)["RuntimeConfig"]["CurrentCopyCount"] == 0
            and _variant(sagemaker, "ic")["CurrentInstanceCount"] == 0
        ),
        what="the idle component and its instance to scale to zero",
    )
    assert standin.tritons() == []
    assert _variant(sagemaker, "ic")["DesiredInstanceCount"] == 0
    # From here the copy that comes back is kept (scale-in needs many idle periods).
    standin.set_clock(scale_in_periods=1000)

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        invoke_text(runtime, "ic", "hi", InferenceComponentName=COMPONENT)
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "no capacity" in refused.value.response["Error"]["Message"]

    back = wait_for(
        lambda: (
            (d := _component(sagemaker))["RuntimeConfig"]["CurrentCopyCount"] == 1
            and d["InferenceComponentStatus"] == "InService"
        ),
        what="a copy to come back",
    )
    assert back
    assert invoke_text(runtime, "ic", "again", InferenceComponentName=COMPONENT) == "AGAIN"
    assert _variant(sagemaker, "ic")["CurrentInstanceCount"] == 1
    assert len(standin.tritons()) == 1

    [alarm] = cloudwatch.describe_alarms(AlarmNames=["tenant-ic-no-capacity"])["MetricAlarms"]
    assert alarm["StateReason"].startswith("Threshold Crossed: 1 datapoint")
    activities = wait_for(
        lambda: (
            (found := _activities(autoscaling, COMPONENT_RESOURCE))
            and all(a["StatusCode"] == "Successful" for a in found)
            and found
        ),
        what="the scaling activities to finish",
    )
    assert [a["Description"] for a in activities] == [
        "Setting desired copy count to 1.",
        "Setting desired copy count to 0.",
    ]
    assert (
        "monitor alarm tenant-ic-no-capacity in state ALARM triggered policy out-of-zero "
        "changing the desired capacity from 0 to 1." in activities[0]["Cause"]
    )
    assert "target tracking policy copies-per-invocations" in activities[1]["Cause"]

    failures = cloudwatch.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="NoCapacityInvocationFailures",
        Dimensions=[{"Name": "InferenceComponentName", "Value": COMPONENT}],
        StartTime=started - timedelta(minutes=1),
        EndTime=datetime.now(UTC) + timedelta(minutes=1),
        Period=3600,
        Statistics=["Sum"],
    )["Datapoints"]
    assert [point["Sum"] for point in failures] == [1.0]


@pytest.fixture
def gpu_mme(clean_sagemaker_standin, tmp_path):
    """A multi-model endpoint on a GPU type whose instances track GPU memory utilization at
    80 % (the stand-in has no GPU: the test puts the figures CloudWatch would have)."""
    standin = clean_sagemaker_standin
    s3, sagemaker = standin.client("s3"), standin.client("sagemaker")
    make_bucket(s3)
    upload_package(s3, tmp_path, "acme/upper.tar.gz", "upper", UPPER_CASE_ECHO)
    create_model(sagemaker, "mme-model", f"s3://{BUCKET}/acme/", mode="MultiModel")
    sagemaker.create_endpoint_config(
        EndpointConfigName="gpu-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "mme-model",
                "InstanceType": "ml.g4dn.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName="gpu", EndpointConfigName="gpu-config")
    wait_endpoint(sagemaker, "gpu", "InService")
    autoscaling = standin.client("application-autoscaling")
    resource = "endpoint/gpu/variant/AllTraffic"
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=INSTANCES,
        MinCapacity=1,
        MaxCapacity=2,
    )
    autoscaling.put_scaling_policy(
        PolicyName="gpu-memory",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=INSTANCES,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 80.0,
            "CustomizedMetricSpecification": {
                "MetricName": "GPUMemoryUtilization",
                "Namespace": "/aws/sagemaker/Endpoints",
                "Dimensions": [
                    {"Name": "EndpointName", "Value": "gpu"},
                    {"Name": "VariantName", "Value": "AllTraffic"},
                ],
                "Statistic": "Average",
                "Unit": "Percent",
            },
            "ScaleInCooldown": 60,
            "ScaleOutCooldown": 60,
        },
    )
    return standin, sagemaker, autoscaling, standin.client("cloudwatch"), resource


def _put_gpu_memory(cloudwatch, percent: float) -> None:
    cloudwatch.put_metric_data(
        Namespace="/aws/sagemaker/Endpoints",
        MetricData=[
            {
                "MetricName": "GPUMemoryUtilization",
                "Dimensions": [
                    {"Name": "VariantName", "Value": "AllTraffic"},
                    {"Name": "EndpointName", "Value": "gpu"},
                ],
                "Value": percent,
                "Unit": "Percent",
            }
        ],
    )


def test_variant_tracks_gpu_memory_utilization_out_and_back_in(gpu_mme):
    standin, sagemaker, autoscaling, cloudwatch, resource = gpu_mme
    standin.set_clock(period_s=PERIOD_S, scale_in_periods=2)
    runtime = standin.client("sagemaker-runtime")

    _put_gpu_memory(cloudwatch, 95.0)
    wait_for(
        lambda: (
            _variant(sagemaker, "gpu")["CurrentInstanceCount"] == 2
            and sagemaker.describe_endpoint(EndpointName="gpu")["EndpointStatus"] == "InService"
        ),
        what="a second instance",
    )
    assert len(standin.tritons()) == 2
    assert invoke_text(runtime, "gpu", "x", TargetModel="upper.tar.gz") == "X"

    # Half the memory in use on two instances: one is enough, once it has lasted.
    def settled_on_one() -> bool:
        _put_gpu_memory(cloudwatch, 40.0)
        time.sleep(PERIOD_S / 3)
        variant = _variant(sagemaker, "gpu")
        return (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (1, 1)

    wait_for(settled_on_one, what="the variant to scale back in")
    wait_for(lambda: len(standin.tritons()) == 1, what="the second instance's Triton to stop")
    activities = wait_for(
        lambda: (
            (found := _activities(autoscaling, resource))
            and all(a["StatusCode"] == "Successful" for a in found)
            and found
        ),
        what="the scaling activities to finish",
    )
    assert [a["Description"] for a in activities] == [
        "Setting desired instance count to 1.",
        "Setting desired instance count to 2.",
    ]
    assert "95 above the target 80" in activities[1]["Cause"]
    assert "40 below the target 80 for 2 periods" in activities[0]["Cause"]
