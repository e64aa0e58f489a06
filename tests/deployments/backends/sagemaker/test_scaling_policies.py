"""What each SageMaker resource's autoscaling follows, derived without AWS or the database: GPU
memory or invocations per instance for a multi-model endpoint's variant by its instance family,
invocations per copy from a model's measured latency for an inference component, one copy at
least for a pinned model, the step policy that brings an unpinned one back from zero, and how
long a caller is told to wait while it comes back."""

from __future__ import annotations

import pytest

from deployments.backends.sagemaker import scaling
from deployments.backends.sagemaker.client import approximate_load_s


def test_a_gpu_multi_model_endpoint_tracks_gpu_memory_at_its_target_utilization():
    spec = scaling.variant_policy(
        endpoint_name="tml-embedding-mme",
        gpu_count=1,
        target_memory_fraction=0.8,
        min_instances=1,
        max_instances=4,
    )

    assert spec.metric == "GPUMemoryUtilization"
    assert spec.target_value == 80.0
    assert spec.policy_name == "tml-embedding-mme-AllTraffic-gpu-memory"
    assert spec.resource_id == "endpoint/tml-embedding-mme/variant/AllTraffic"
    assert (spec.min_capacity, spec.max_capacity) == (1, 4)
    assert "80 %" in spec.basis
    assert scaling.customized_metric(spec) == {
        "MetricName": "GPUMemoryUtilization",
        "Namespace": "/aws/sagemaker/Endpoints",
        "Dimensions": [
            {"Name": "EndpointName", "Value": "tml-embedding-mme"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        "Statistic": "Average",
        "Unit": "Percent",
    }


def test_gpu_memory_target_counts_every_gpu_of_a_multi_gpu_type():
    # The metric runs to 100 % per GPU: 80 % of four GPUs reads 320.
    spec = scaling.variant_policy(
        endpoint_name="tml-llm-mme",
        gpu_count=4,
        target_memory_fraction=0.8,
        min_instances=1,
        max_instances=2,
    )

    assert spec.target_value == 320.0
    assert "4 GPUs" in spec.basis


def test_a_cpu_multi_model_endpoint_tracks_225_invocations_per_instance_and_keeps_one():
    spec = scaling.variant_policy(
        endpoint_name="tml-intent-classifier-mme",
        gpu_count=0,
        target_memory_fraction=0.8,
        min_instances=0,
        max_instances=3,
    )

    assert spec.metric == "SageMakerVariantInvocationsPerInstance"
    assert spec.target_value == 225.0
    assert scaling.customized_metric(spec) is None
    assert spec.min_capacity == 1  # instances never go below one on a variant
    assert "225" in spec.basis


def test_copies_target_is_derived_from_the_measured_warm_latency():
    target = scaling.invocations_per_copy_target(
        warm_latency_ms=30.0, traffic_latency_ms=None, traffic_requests=0, safety_factor=0.5
    )

    # 60,000 ms a minute / 30 ms = 2,000 a minute at most, half of it as the target.
    assert target.value == 1000.0
    assert "warm request took 30.0 ms" in target.basis
    assert "safety factor 0.5" in target.basis


def test_copies_target_follows_real_traffic_once_there_is_enough_of_it():
    slow_traffic = scaling.invocations_per_copy_target(
        warm_latency_ms=30.0, traffic_latency_ms=120.0, traffic_requests=500, safety_factor=0.5
    )
    little_traffic = scaling.invocations_per_copy_target(
        warm_latency_ms=30.0, traffic_latency_ms=120.0, traffic_requests=20, safety_factor=0.5
    )

    assert slow_traffic.value == 250.0
    assert "500 requests in the last hour averaged 120.0 ms" in slow_traffic.basis
    assert little_traffic.value == 1000.0  # 20 requests stand for nothing yet


def test_a_slower_model_gets_a_lower_target_and_nothing_measured_gives_none():
    fast = scaling.invocations_per_copy_target(
        warm_latency_ms=6.6, traffic_latency_ms=None, traffic_requests=0, safety_factor=0.5
    )
    slow = scaling.invocations_per_copy_target(
        warm_latency_ms=400.0, traffic_latency_ms=None, traffic_requests=0, safety_factor=0.5
    )

    assert fast.value > slow.value == 75.0
    assert (
        scaling.invocations_per_copy_target(
            warm_latency_ms=None, traffic_latency_ms=None, traffic_requests=0, safety_factor=0.5
        )
        is None
    )


TARGET = scaling.CopyTarget(value=1000.0, basis="Measured: its warm request took 30.0 ms.")


def test_an_unpinned_component_may_scale_to_zero_and_has_a_step_policy_to_come_back():
    tracking, step = scaling.component_policies(
        component="tml-acme-intents", pinned=False, replicas=1, target=TARGET
    )

    assert tracking.metric == "SageMakerInferenceComponentInvocationsPerCopy"
    assert tracking.target_value == 1000.0
    assert tracking.resource_id == "inference-component/tml-acme-intents"
    assert (tracking.min_capacity, tracking.max_capacity) == (0, 4)
    assert step.policy_type == "step"
    assert step.metric == "NoCapacityInvocationFailures"
    assert step.alarm_name == "tml-acme-intents-no-capacity"
    assert (step.min_capacity, step.max_capacity) == (0, 4)


def test_a_pinned_component_never_scales_to_zero():
    [tracking] = scaling.component_policies(
        component="tml-bigco-intents", pinned=True, replicas=2, target=TARGET
    )

    assert tracking.min_capacity == 2
    assert "never fewer than one copy" in tracking.basis


def test_floors_hold_whatever_values_an_operator_saved():
    [tracking] = scaling.component_policies(
        component="tml-bigco-intents", pinned=True, replicas=1, target=TARGET
    )
    edited = scaling.PolicySpec(**{**vars(tracking), "min_capacity": 0, "max_capacity": 0})
    variant = scaling.variant_policy(
        endpoint_name="e", gpu_count=0, target_memory_fraction=0.8, min_instances=1, max_instances=1
    )

    assert scaling.enforce_floor(edited, pinned=True).min_capacity == 1
    assert scaling.enforce_floor(edited, pinned=True).max_capacity == 1
    assert scaling.enforce_floor(edited, pinned=False).min_capacity == 0
    zero_instances = scaling.PolicySpec(**{**vars(variant), "min_capacity": 0})
    assert scaling.enforce_floor(zero_instances, pinned=False).min_capacity == 1


@pytest.mark.parametrize(
    ("expected_s", "elapsed_s", "retry_after_s"),
    [
        (40.0, 0.0, 40),  # just asked: the whole measured start
        (40.0, 25.5, 15),  # what is left of it
        (40.0, 45.0, 4),  # late: poll at a tenth of it
        (300.0, 400.0, 5),  # late and long: at most every 5 s
        (3.0, 10.0, 1),  # late and short: at least 1 s
        (5000.0, 0.0, 900),  # never more than 15 minutes
    ],
)
def test_retry_after_is_what_is_left_of_the_expected_start(expected_s, elapsed_s, retry_after_s):
    assert (
        scaling.scale_from_zero_retry_after_s(expected_s=expected_s, elapsed_s=elapsed_s)
        == retry_after_s
    )


def test_the_expected_start_is_measured_first_then_sagemakers_estimate_then_the_setting():
    assert scaling.expected_copy_start(measured_ms=42_000, approximate_s=150, default_s=60) == (
        42.0,
        "this component's last measured copy start",
    )
    assert scaling.expected_copy_start(measured_ms=None, approximate_s=150, default_s=60)[0] == 150
    assert scaling.expected_copy_start(measured_ms=None, approximate_s=None, default_s=60)[0] == 60


def test_sagemakers_load_time_estimate_is_read_from_its_no_capacity_answer():
    assert (
        approximate_load_s(
            "Inference Component has no capacity to process this request. "
            "ApproximateModelLoadTime: 153 seconds"
        )
        == 153.0
    )
    # 0 is what it says before any copy of the model started: no estimate.
    assert approximate_load_s("... ApproximateModelLoadTime: 0 seconds") is None
    assert approximate_load_s("Endpoint not found.") is None
