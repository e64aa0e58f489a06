"""Autoscaling on SageMaker with AWS faked (botocore Stubber, moto): the calls each policy makes
and the rows that keep them, a model scaled to zero brought back by its first request (asked
once, 503 with a Retry-After from measured figures, then 200), copies mirrored by the
reconciler, and a retired endpoint leaving no policy behind."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from deployments.backends.base import Copy
from deployments.backends.sagemaker import retire, scaling
from deployments.backends.sagemaker.backend import SageMakerServingBackend
from deployments.backends.sagemaker.client import EndpointBackendError, SageMakerEndpointBackend
from deployments.backends.sagemaker.deploy import endpoint_backend
from deployments.exceptions import ForwardFailed
from deployments.models import (
    Deployment,
    Endpoint,
    Event,
    InstanceType,
    Placement,
    ScalingPolicy,
)
from tenants.models import Tenant
from tests.deployments.backends.sagemaker.support import INTENT_ANSWER, REGION, api
from tests.factories import ModelVersionFactory, TenantFactory, TenantModelFactory

NOW = datetime(2026, 12, 1, tzinfo=UTC)
COMPONENT = "tml-acme-intents"
TRACKING_ARN = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:1:resource/tracking"
STEP_ARN = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:2:resource/step"
NO_CAPACITY = (
    "Inference Component has no capacity to process this request. "
    "ApproximateModelLoadTime: 0 seconds"
)


class Stubs:
    """One Stubber per AWS service the backend calls, and the backend that uses them."""

    def __init__(self) -> None:
        self.sagemaker = Stubber(boto3.client("sagemaker", region_name=REGION))
        self.runtime = Stubber(boto3.client("sagemaker-runtime", region_name=REGION))
        self.autoscaling = Stubber(boto3.client("application-autoscaling", region_name=REGION))
        self.cloudwatch = Stubber(boto3.client("cloudwatch", region_name=REGION))
        self.all = (self.sagemaker, self.runtime, self.autoscaling, self.cloudwatch)
        self.backend = SageMakerEndpointBackend(
            sagemaker_client=self.sagemaker.client,
            runtime_client=self.runtime.client,
            autoscaling_client=self.autoscaling.client,
            cloudwatch_client=self.cloudwatch.client,
            sleep=lambda _s: None,
        )


@pytest.fixture
def stubs(monkeypatch, settings):
    settings.TENANTML_AWS_REGION = REGION
    found = Stubs()
    # The platform's backend with its boto3 clients stubbed: AWS is what is faked.
    monkeypatch.setattr(
        "deployments.backends.sagemaker.deploy.endpoint_backend", lambda: found.backend
    )
    scaling.PENDING_WAKES.clear()
    for stub in found.all:
        stub.activate()
    yield found
    for stub in found.all:
        stub.assert_no_pending_responses()
        stub.deactivate()
    scaling.PENDING_WAKES.clear()


def ic_placement(
    *, tier: str = Tenant.Tier.STANDARD, load_time_ms=None, warmup_latency_ms=30.0, copies=1
) -> Placement:
    """acme/intents live on an inference-component endpoint as component ``COMPONENT``."""
    model = TenantModelFactory(tenant=TenantFactory(slug="acme", tier=tier), name="intents")
    version = ModelVersionFactory(model=model, number=1)
    endpoint = Endpoint.objects.create(
        name="tml-intent-classifier-ic",
        backend=Endpoint.Backend.SAGEMAKER,
        mode=Endpoint.Mode.INFERENCE_COMPONENT,
        status=Endpoint.Status.IN_SERVICE,
        instance_type=InstanceType.objects.get(name="ml.c5.xlarge"),
        model_kind=model.kind,
    )
    placement = Placement.objects.create(
        version=version,
        endpoint=endpoint,
        external_name=COMPONENT,
        desired_state=Placement.desired_state_for(version=version),
        actual_state=Placement.ActualState.LOADED,
        copies=copies,
        load_time_ms=load_time_ms,
        warmup_latency_ms=warmup_latency_ms,
    )
    Deployment.objects.create(
        model=model,
        mode=Endpoint.Mode.INFERENCE_COMPONENT,
        backend=Endpoint.Backend.SAGEMAKER,
        endpoint=endpoint,
        live_version=version,
        status=Deployment.Status.LIVE,
    )
    return placement


def expect_target(stubs: Stubs, *, minimum: int, maximum: int) -> None:
    stubs.autoscaling.add_response(
        "register_scalable_target",
        {},
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"inference-component/{COMPONENT}",
            "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
            "MinCapacity": minimum,
            "MaxCapacity": maximum,
        },
    )


def expect_tracking(stubs: Stubs, *, target: float) -> None:
    stubs.autoscaling.add_response(
        "put_scaling_policy",
        {"PolicyARN": TRACKING_ARN, "Alarms": []},
        {
            "PolicyName": f"{COMPONENT}-invocations-per-copy",
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"inference-component/{COMPONENT}",
            "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": target,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
                },
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        },
    )


def expect_step_and_alarm(stubs: Stubs) -> None:
    stubs.autoscaling.add_response(
        "put_scaling_policy",
        {"PolicyARN": STEP_ARN, "Alarms": []},
        {
            "PolicyName": f"{COMPONENT}-scale-out-from-zero",
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"inference-component/{COMPONENT}",
            "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ExactCapacity",
                "MetricAggregationType": "Maximum",
                "Cooldown": 60,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
            },
        },
    )
    stubs.cloudwatch.add_response(
        "put_metric_alarm",
        {},
        {
            "AlarmName": f"{COMPONENT}-no-capacity",
            "AlarmDescription": (
                f"A request found {COMPONENT} with no copy: scale it out from zero."
            ),
            "ActionsEnabled": True,
            # The alarm's action is the step policy: a failed invocation brings a copy back.
            "AlarmActions": [STEP_ARN],
            "Namespace": "AWS/SageMaker",
            "MetricName": "NoCapacityInvocationFailures",
            "Dimensions": [{"Name": "InferenceComponentName", "Value": COMPONENT}],
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "missing",
            "Tags": [{"Key": "platform", "Value": "tenantml"}],
        },
    )


def component_description(*, desired: int, current: int, status: str = "InService") -> dict:
    return {
        "InferenceComponentName": COMPONENT,
        "InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:123456789012:ic/{COMPONENT}",
        "EndpointName": "tml-intent-classifier-ic",
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/x",
        "VariantName": "AllTraffic",
        "Specification": {"ModelName": "tml-acme-intents-v1"},
        "RuntimeConfig": {"DesiredCopyCount": desired, "CurrentCopyCount": current},
        "InferenceComponentStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }


def no_capacity_from_the_runtime(stubs: Stubs) -> None:
    stubs.runtime.add_client_error(
        "invoke_endpoint",
        service_error_code="ValidationError",
        service_message=NO_CAPACITY,
        http_status_code=400,
    )


def answer_from_the_runtime(stubs: Stubs) -> None:
    raw = json.dumps(INTENT_ANSWER).encode()
    stubs.runtime.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"},
    )


# --- Policies registered at rollout ----------------------------------------------------------


@pytest.mark.django_db
def test_an_unpinned_component_tracks_its_measured_target_and_comes_back_on_its_alarm(stubs):
    placement = ic_placement(warmup_latency_ms=30.0)
    expect_target(stubs, minimum=0, maximum=4)
    expect_tracking(stubs, target=1000.0)
    expect_target(stubs, minimum=0, maximum=4)
    expect_step_and_alarm(stubs)

    scaling.register_component_policies(backend=stubs.backend, placement=placement, replicas=1)

    tracking = ScalingPolicy.objects.get(policy_name=f"{COMPONENT}-invocations-per-copy")
    step = ScalingPolicy.objects.get(policy_name=f"{COMPONENT}-scale-out-from-zero")
    assert (tracking.target_value, tracking.min_capacity, tracking.max_capacity) == (1000.0, 0, 4)
    assert "warm request took 30.0 ms" in tracking.basis
    assert tracking.policy_arn == TRACKING_ARN and tracking.applied_at is not None
    assert tracking.model == placement.version.model and tracking.endpoint == placement.endpoint
    assert step.policy_type == ScalingPolicy.PolicyType.STEP
    assert step.alarm_name == f"{COMPONENT}-no-capacity" and step.policy_arn == STEP_ARN


@pytest.mark.django_db
def test_a_pinned_model_keeps_a_copy_and_loses_the_step_policy_it_had_unpinned(stubs):
    placement = ic_placement(tier=Tenant.Tier.PREMIUM)
    step = ScalingPolicy.objects.create(
        endpoint=placement.endpoint,
        model=placement.version.model,
        resource_id=f"inference-component/{COMPONENT}",
        scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
        policy_name=f"{COMPONENT}-scale-out-from-zero",
        policy_type=ScalingPolicy.PolicyType.STEP,
        metric="NoCapacityInvocationFailures",
        min_capacity=0,
        max_capacity=4,
        alarm_name=f"{COMPONENT}-no-capacity",
    )
    stubs.cloudwatch.add_response(
        "describe_alarms",
        {"MetricAlarms": [{"AlarmName": step.alarm_name}]},
        {"AlarmNames": [step.alarm_name]},
    )
    stubs.cloudwatch.add_response("delete_alarms", {}, {"AlarmNames": [step.alarm_name]})
    stubs.autoscaling.add_response(
        "delete_scaling_policy",
        {},
        {
            "PolicyName": step.policy_name,
            "ServiceNamespace": "sagemaker",
            "ResourceId": step.resource_id,
            "ScalableDimension": step.scalable_dimension,
        },
    )
    expect_target(stubs, minimum=1, maximum=4)
    expect_tracking(stubs, target=1000.0)

    scaling.register_component_policies(backend=stubs.backend, placement=placement, replicas=1)

    [tracking] = ScalingPolicy.objects.all()
    assert tracking.min_capacity >= 1
    assert "Pinned (premium)" in tracking.basis


@pytest.mark.django_db
def test_later_rollouts_keep_the_values_an_operator_edited(stubs):
    placement = ic_placement(warmup_latency_ms=30.0)
    ScalingPolicy.objects.create(
        endpoint=placement.endpoint,
        model=placement.version.model,
        resource_id=f"inference-component/{COMPONENT}",
        scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
        policy_name=f"{COMPONENT}-invocations-per-copy",
        metric="SageMakerInferenceComponentInvocationsPerCopy",
        target_value=500.0,
        min_capacity=1,
        max_capacity=6,
        basis="Tuned by hand after a load test.",
        operator_edited=True,
    )
    expect_target(stubs, minimum=1, maximum=6)
    expect_tracking(stubs, target=500.0)
    expect_target(stubs, minimum=1, maximum=6)
    expect_step_and_alarm(stubs)

    scaling.register_component_policies(backend=stubs.backend, placement=placement, replicas=1)

    tracking = ScalingPolicy.objects.get(policy_name=f"{COMPONENT}-invocations-per-copy")
    assert (tracking.target_value, tracking.min_capacity, tracking.max_capacity) == (500.0, 1, 6)
    assert tracking.basis == "Tuned by hand after a load test."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("instance_type", "metric", "target"),
    [
        ("ml.c5.xlarge", "SageMakerVariantInvocationsPerInstance", 225.0),
        ("ml.g4dn.xlarge", "GPUMemoryUtilization", 80.0),
    ],
)
def test_a_multi_model_endpoints_policy_follows_its_instance_family_and_goes_with_it(
    aws, instance_type, metric, target
):
    endpoint = Endpoint.objects.create(
        name="tml-embedding-mme",
        backend=Endpoint.Backend.SAGEMAKER,
        mode=Endpoint.Mode.MME,
        status=Endpoint.Status.IN_SERVICE,
        instance_type=InstanceType.objects.get(name=instance_type),
        min_instances=1,
        max_instances=4,
    )

    scaling.register_variant_policies(backend=endpoint_backend(), endpoint=endpoint)

    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    [policy] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"
    ]
    assert policy["ResourceId"] == "endpoint/tml-embedding-mme/variant/AllTraffic"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == target
    if metric == "GPUMemoryUtilization":
        assert tracking["CustomizedMetricSpecification"] == {
            "MetricName": "GPUMemoryUtilization",
            "Namespace": "/aws/sagemaker/Endpoints",
            "Dimensions": [
                {"Name": "EndpointName", "Value": "tml-embedding-mme"},
                {"Name": "VariantName", "Value": "AllTraffic"},
            ],
            "Statistic": "Average",
            "Unit": "Percent",
        }
    else:
        assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == metric
    [target_row] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert (target_row["MinCapacity"], target_row["MaxCapacity"]) == (1, 4)
    [row] = ScalingPolicy.objects.filter(endpoint=endpoint)
    assert (row.metric, row.target_value, row.policy_arn) == (metric, target, policy["PolicyARN"])

    retire.finish_retiring(endpoint=endpoint, actor="test")

    assert not ScalingPolicy.objects.exists()
    assert (
        autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    )
    assert (
        autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    )


# --- Scale to zero, and back -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_finding_no_copy_asks_for_one_once_and_is_told_when_to_retry(stubs):
    # Its rollout's copy took 42 s to start: that is the expected wait.
    placement = ic_placement(load_time_ms=42_000.0, copies=0)
    client = api(placement.version.model.tenant)
    no_capacity_from_the_runtime(stubs)
    stubs.sagemaker.add_response(
        "describe_inference_component",
        component_description(desired=0, current=0),
        {"InferenceComponentName": COMPONENT},
    )
    stubs.sagemaker.add_response(
        "update_inference_component_runtime_config",
        {"InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:123456789012:ic/{COMPONENT}"},
        {"InferenceComponentName": COMPONENT, "DesiredRuntimeConfig": {"CopyCount": 1}},
    )
    # The second request finds the copy asked for already: no call to SageMaker's control plane.
    no_capacity_from_the_runtime(stubs)
    answer_from_the_runtime(stubs)

    first = client.post(
        "/api/v1/tenants/acme/models/intents/invoke", {"inputs": ["refund?"]}, format="json"
    )
    second = client.post(
        "/api/v1/tenants/acme/models/intents/invoke", {"inputs": ["refund?"]}, format="json"
    )
    third = client.post(
        "/api/v1/tenants/acme/models/intents/invoke", {"inputs": ["refund?"]}, format="json"
    )

    assert first.status_code == second.status_code == 503
    assert first.json()["error"]["code"] == "scaling_from_zero"
    assert 41 <= int(first["Retry-After"]) <= 42
    assert 1 <= int(second["Retry-After"]) <= int(first["Retry-After"])
    assert third.status_code == 200, third.content
    assert third.json()["outputs"][0]["label"] == "refund"
    [asked] = Event.objects.filter(kind="sagemaker.scale_out_requested")
    assert asked.data["asked"] is True and asked.data["expected_s"] == 42.0
    [back] = Event.objects.filter(kind="sagemaker.component_scaled_from_zero")
    placement.refresh_from_db()
    assert placement.copies == 1
    # The start just seen is the measurement the next caller's wait comes from.
    assert placement.load_time_ms == pytest.approx(back.data["measured_s"] * 1000, abs=1)
    assert placement.load_time_ms < 42_000


@pytest.mark.django_db(transaction=True)
def test_the_proxy_answers_503_with_retry_after_while_the_copy_starts(stubs):
    placement = ic_placement(load_time_ms=None, copies=0)
    no_capacity_from_the_runtime(stubs)
    # AWS's own step policy got there first: nothing to ask, only to wait.
    stubs.sagemaker.add_response(
        "describe_inference_component",
        component_description(desired=1, current=0),
        {"InferenceComponentName": COMPONENT},
    )
    copy = Copy(
        placement_id=placement.pk,
        endpoint_id=placement.endpoint_id,
        backend="sagemaker",
        endpoint_name=placement.endpoint.name,
        endpoint_mode=placement.endpoint.mode,
        external_name=COMPONENT,
    )

    with pytest.raises(ForwardFailed) as refused:
        asyncio.run(
            SageMakerServingBackend().forward(
                copy=copy,
                model_name="acme-intents-1",
                public_name="acme.intents",
                body=b"{}",
                content_type="application/json",
            )
        )

    assert refused.value.status_code == 503
    assert refused.value.code == "scaling_from_zero"
    # Nothing measured and no estimate from SageMaker: the setting's wait.
    assert refused.value.retry_after_s == 60
    [asked] = Event.objects.filter(kind="sagemaker.scale_out_requested")
    assert asked.data["asked"] is False


def ask_refused(stubs: Stubs, *, message: str, then: dict) -> None:
    """A component at zero copies whose UpdateInferenceComponentRuntimeConfig is refused with
    ``message``; described as ``then`` afterwards."""
    stubs.sagemaker.add_response(
        "describe_inference_component", component_description(desired=0, current=0)
    )
    stubs.sagemaker.add_client_error(
        "update_inference_component_runtime_config",
        service_error_code="ValidationException",
        service_message=message,
        http_status_code=400,
    )
    stubs.sagemaker.add_response("describe_inference_component", then)


@pytest.mark.django_db
def test_a_step_policy_that_starts_the_copy_between_the_describe_and_the_ask_is_waited_for(stubs):
    placement = ic_placement(load_time_ms=42_000.0, copies=0)
    # The no-capacity alarm's step policy set one copy a moment before the platform asked.
    ask_refused(
        stubs,
        message=f"Inference component {COMPONENT} is Updating; wait until it is InService.",
        then=component_description(desired=1, current=0, status="Updating"),
    )

    answer = scaling.wake_component(backend=stubs.backend, placement_id=placement.pk)

    assert (answer.status_code, answer.code) == (503, "scaling_from_zero")
    assert answer.retry_after_s == 42
    [asked] = Event.objects.filter(kind="sagemaker.scale_out_requested")
    assert asked.data["asked"] is False


@pytest.mark.django_db
def test_a_refused_ask_for_a_copy_nobody_else_started_is_an_error(stubs):
    placement = ic_placement(load_time_ms=42_000.0, copies=0)
    ask_refused(
        stubs,
        message="Inference component quota exceeded.",
        then=component_description(desired=0, current=0),
    )

    with pytest.raises(EndpointBackendError, match="quota exceeded"):
        scaling.wake_component(backend=stubs.backend, placement_id=placement.pk)
    assert not Event.objects.filter(kind="sagemaker.scale_out_requested").exists()


@pytest.mark.django_db
def test_a_component_still_scaling_in_is_asked_for_a_copy_by_the_next_request(stubs):
    placement = ic_placement(load_time_ms=42_000.0, copies=0)
    # SageMaker takes no new copy count while the component is Updating.
    stubs.sagemaker.add_response(
        "describe_inference_component",
        component_description(desired=0, current=0, status="Updating"),
    )

    answer = scaling.wake_component(backend=stubs.backend, placement_id=placement.pk)

    assert (answer.status_code, answer.code, answer.retry_after_s) == (503, "scaling_from_zero", 2)
    assert not Event.objects.filter(kind="sagemaker.scale_out_requested").exists()


@pytest.mark.django_db
def test_the_reconciler_mirrors_copies_and_records_scaling_to_zero_and_back(stubs):
    placement = ic_placement(copies=1)
    stubs.sagemaker.add_response(
        "describe_inference_component", component_description(desired=0, current=0)
    )
    stubs.sagemaker.add_response(
        "describe_inference_component", component_description(desired=2, current=2)
    )

    went = scaling.mirror_copies(backend=stubs.backend, endpoint=placement.endpoint, actor="t")
    placement.refresh_from_db()
    copies_at_zero = placement.copies
    came = scaling.mirror_copies(backend=stubs.backend, endpoint=placement.endpoint, actor="t")
    placement.refresh_from_db()

    assert (went, came) == (1, 1)
    assert copies_at_zero == 0 and placement.copies == 2
    assert Event.objects.filter(kind="sagemaker.component_scaled_to_zero").count() == 1
    assert Event.objects.filter(kind="sagemaker.component_scaled_from_zero").count() == 1
