"""The operator admin for instance types, endpoints, instances, placements, deployments, events
and usage: computed columns right, actions call services, the platform's own log read-only, and
the busy changelists in a bounded number of queries."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.utils.html import escape

from deployments.models import (
    BackgroundPass,
    CloudMetricMinute,
    Deployment,
    Endpoint,
    EndpointUsageMinute,
    Event,
    FleetUsageMinute,
    Instance,
    InstanceType,
    InstanceUsageMinute,
    Placement,
    ScalingPolicy,
    TenantCost,
    VersionUsageMinute,
)
from tests.admin_support import (
    AppAdminChecks,
    BusyChangelistChecks,
    admin_url,
    messages_of,
    run_action,
)
from tests.factories import EndpointFactory, InstanceFactory, ModelVersionFactory, PlacementFactory


class TestEveryDeploymentsModel(AppAdminChecks, BusyChangelistChecks):
    app_label = "deployments"
    busy_models = [Event, VersionUsageMinute]
    expected_models = {
        InstanceType,
        Endpoint,
        Instance,
        Placement,
        Deployment,
        Event,
        InstanceUsageMinute,
        VersionUsageMinute,
        EndpointUsageMinute,
        FleetUsageMinute,
        BackgroundPass,
        TenantCost,
        ScalingPolicy,
        CloudMetricMinute,
    }
    no_add = {
        Deployment,
        Instance,
        Placement,
        Event,
        InstanceUsageMinute,
        VersionUsageMinute,
        EndpointUsageMinute,
        FleetUsageMinute,
        BackgroundPass,
        TenantCost,
        ScalingPolicy,
        CloudMetricMinute,
    }


def test_endpoint_page_links_to_its_events(admin_client, everything):
    endpoint = everything[Endpoint]

    page = admin_client.get(admin_url(Endpoint, "change", endpoint.pk)).content.decode()

    assert f"{admin_url(Event, 'changelist')}?endpoint__id__exact={endpoint.pk}" in page


def test_instance_changelist_shows_memory_of_resident_placements(admin_client, db):
    instance = InstanceFactory(memory_budget_mb=13107)
    PlacementFactory(instance=instance, host_memory_mb=111.0)
    PlacementFactory(instance=instance, host_memory_mb=111.0)
    PlacementFactory(instance=instance, host_memory_mb=500.0, actual_state="evicted")

    response = admin_client.get(admin_url(Instance, "changelist"))

    assert "222 / 13,107 MB (2 %)" in response.content.decode()


def test_endpoint_changelist_shows_cost_of_live_instances(admin_client, db):
    endpoint = EndpointFactory()  # the seeded "local" type, 0.2300 USD per hour
    InstanceFactory(endpoint=endpoint, status=Instance.Status.HEALTHY)
    InstanceFactory(endpoint=endpoint, status=Instance.Status.STARTING)
    InstanceFactory(endpoint=endpoint, status=Instance.Status.STOPPED)

    response = admin_client.get(admin_url(Endpoint, "changelist"))

    content = response.content.decode()
    assert "$0.4600" in content
    assert "2 (min 1, max 1)" in content


def test_instance_type_shows_total_gpu_memory(admin_client, db):
    InstanceType.objects.create(
        name="test.4gpu",
        gpu_count=4,
        gpu_name="T4",
        memory_per_gpu_mb=16384,
        host_memory_mb=196608,
        vcpus=48,
        usd_per_hour="5.0000",
    )

    response = admin_client.get(admin_url(InstanceType, "changelist"), {"q": "test.4gpu"})

    assert "65,536" in response.content.decode()


def test_pin_action_pins_placement(admin_client, db):
    placement = PlacementFactory()

    run_action(admin_client, Placement, "pin_placements", [placement])

    placement.refresh_from_db()
    assert placement.desired_state == Placement.DesiredState.PINNED
    assert Event.objects.filter(kind="placement.desired_state_changed").exists()


def test_unpin_and_unload_actions_set_desired_state(admin_client, db):
    pinned = PlacementFactory(desired_state=Placement.DesiredState.PINNED)
    loaded = PlacementFactory()

    run_action(admin_client, Placement, "unpin_placements", [pinned])
    run_action(admin_client, Placement, "unload_placements", [loaded])

    pinned.refresh_from_db()
    loaded.refresh_from_db()
    assert pinned.desired_state == Placement.DesiredState.LOADED
    assert loaded.desired_state == Placement.DesiredState.UNLOADED


@pytest.mark.parametrize(
    "model", [Event, InstanceUsageMinute, VersionUsageMinute], ids=lambda m: m._meta.label
)
def test_platform_written_tables_cannot_be_added_changed_or_deleted(
    admin_client, everything, model
):
    obj = everything[model]

    changelist = admin_client.get(admin_url(model, "changelist"))
    add = admin_client.get(admin_url(model, "add"))
    delete = admin_client.get(admin_url(model, "delete", obj.pk))
    change = admin_client.post(admin_url(model, "change", obj.pk), {})

    assert changelist.status_code == 200
    assert changelist.context["action_form"] is None  # no actions at all, so no bulk delete
    assert add.status_code == 403
    assert delete.status_code == 403
    assert change.status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_instance_changelist_query_count_is_bounded(
    admin_client, db, django_assert_max_num_queries
):
    endpoint = EndpointFactory()
    for _ in range(10):
        PlacementFactory(instance=InstanceFactory(endpoint=endpoint))

    with django_assert_max_num_queries(15):
        response = admin_client.get(admin_url(Instance, "changelist"))

    assert response.context["cl"].result_count == 10


def test_placement_changelist_query_count_is_bounded(
    admin_client, db, django_assert_max_num_queries
):
    endpoint = EndpointFactory()
    for _ in range(10):
        PlacementFactory(instance=InstanceFactory(endpoint=endpoint))

    with django_assert_max_num_queries(15):
        response = admin_client.get(admin_url(Placement, "changelist"))

    assert response.context["cl"].result_count == 10


def test_deployment_rollback_action_without_an_earlier_version_explains_why(admin_client, db):
    version = ModelVersionFactory()
    deployment = Deployment.objects.create(
        model=version.model, live_version=version, status=Deployment.Status.LIVE
    )

    response = run_action(admin_client, Deployment, "roll_back", [deployment], follow=True)

    [message] = messages_of(response)
    assert message.level == messages.ERROR and "no earlier deployed version" in message.message


def test_deployment_retire_action_retires_each_selected_deployment(
    admin_client, db, django_capture_on_commit_callbacks
):
    version = ModelVersionFactory()
    deployment = Deployment.objects.create(
        model=version.model, live_version=version, status=Deployment.Status.LIVE
    )

    with django_capture_on_commit_callbacks(execute=False):
        response = run_action(admin_client, Deployment, "retire", [deployment], follow=True)

    [message] = messages_of(response)
    assert message.level == messages.SUCCESS and "retired" in message.message
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.RETIRED


def test_instance_changelist_says_a_sagemaker_hosts_memory_is_not_measured(admin_client, db):
    InstanceFactory(
        host="", port=None, pid=None, external_id="AllTraffic/0", memory_budget_mb=13107
    )

    response = admin_client.get(admin_url(Instance, "changelist"))

    assert "not measured / 13,107 MB" in response.content.decode()


# --- Scaling policies ------------------------------------------------------------------------


@pytest.fixture
def aws_account(settings, monkeypatch):
    """AWS faked in-process (moto) for the admin's calls to Application Auto Scaling."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    settings.TENANTML_AWS_REGION = "us-east-1"
    with mock_aws():
        yield


def policy_form(policy: ScalingPolicy, **changes) -> dict:
    values = {
        "target_value": policy.target_value if policy.target_value is not None else "",
        "min_capacity": policy.min_capacity,
        "max_capacity": policy.max_capacity,
        "scale_in_cooldown_s": policy.scale_in_cooldown_s,
        "scale_out_cooldown_s": policy.scale_out_cooldown_s,
    }
    return {**values, **changes}


def variant_policy(endpoint=None) -> ScalingPolicy:
    endpoint = endpoint or EndpointFactory(name="tml-embedding-mme", backend="sagemaker")
    return ScalingPolicy.objects.create(
        endpoint=endpoint,
        resource_id=f"endpoint/{endpoint.name}/variant/AllTraffic",
        scalable_dimension="sagemaker:variant:DesiredInstanceCount",
        policy_name=f"{endpoint.name}-AllTraffic-gpu-memory",
        metric="GPUMemoryUtilization",
        target_value=80.0,
        min_capacity=1,
        max_capacity=4,
        basis="GPU instance type: average GPU memory at the endpoint's target of 80 %.",
    )


def test_scaling_policies_are_listed_with_what_they_follow(admin_client, db):
    variant_policy()

    response = admin_client.get(admin_url(ScalingPolicy, "changelist"))

    content = response.content.decode()
    assert "tml-embedding-mme-AllTraffic-gpu-memory" in content
    assert "GPUMemoryUtilization" in content and "1–4" in content


def test_an_edited_policy_is_applied_to_aws_at_once_and_kept_as_the_operators(
    admin_client, db, aws_account
):
    import boto3

    policy = variant_policy()

    response = admin_client.post(
        admin_url(ScalingPolicy, "change", policy.pk),
        policy_form(policy, target_value=70, max_capacity=6),
    )

    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.target_value, policy.max_capacity) == (70.0, 6)
    assert policy.operator_edited and policy.applied_at and not policy.apply_error
    autoscaling = boto3.client("application-autoscaling", region_name="us-east-1")
    [registered] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"
    ]
    assert registered["PolicyARN"] == policy.policy_arn
    tracking = registered["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 70.0
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == "GPUMemoryUtilization"
    [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 6)
    assert Event.objects.filter(kind="sagemaker.scaling_policy_edited").exists()


def test_an_edit_aws_refuses_is_kept_with_the_reason_shown_not_a_server_error(
    admin_client, everything, aws_account
):
    policy = everything[ScalingPolicy]  # an inference component's: this account refuses them

    response = admin_client.post(
        admin_url(ScalingPolicy, "change", policy.pk),
        policy_form(policy, target_value=500),
        follow=True,
    )

    assert response.status_code == 200
    policy.refresh_from_db()
    assert policy.target_value == 500.0 and policy.operator_edited
    assert "RegisterScalableTarget failed" in policy.apply_error
    [message] = messages_of(response)
    assert message.level == messages.ERROR and "AWS refused them" in message.message
    assert escape(policy.apply_error) in response.content.decode()  # on the page, as AWS said


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"min_capacity": 5, "max_capacity": 2}, "min_capacity", "above the maximum"),
        ({"min_capacity": 0}, "min_capacity", "at least one instance"),
        ({"target_value": ""}, "target_value", "positive target"),
    ],
)
def test_an_edit_breaking_a_rule_is_refused_on_the_form_before_aws(
    admin_client, db, changes, field, words
):
    policy = variant_policy()

    response = admin_client.post(
        admin_url(ScalingPolicy, "change", policy.pk), policy_form(policy, **changes)
    )

    assert response.status_code == 200
    assert words in " ".join(response.context["adminform"].form.errors[field])
    policy.refresh_from_db()
    assert not policy.operator_edited and policy.applied_at is None


def test_a_pinned_models_component_cannot_be_edited_to_scale_to_zero(admin_client, db):
    from tenants.models import Tenant
    from tests.factories import TenantFactory, TenantModelFactory

    endpoint = EndpointFactory(name="tml-intent-classifier-ic", backend="sagemaker")
    model = TenantModelFactory(tenant=TenantFactory(tier=Tenant.Tier.PREMIUM), name="intents")
    version = ModelVersionFactory(model=model)
    component = f"tml-{model.tenant.slug}-intents"
    Placement.objects.create(
        version=version,
        endpoint=endpoint,
        external_name=component,
        desired_state=Placement.DesiredState.PINNED,
        actual_state=Placement.ActualState.LOADED,
    )
    policy = ScalingPolicy.objects.create(
        endpoint=endpoint,
        model=model,
        resource_id=f"inference-component/{component}",
        scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
        policy_name=f"{component}-invocations-per-copy",
        metric="SageMakerInferenceComponentInvocationsPerCopy",
        target_value=1000.0,
        min_capacity=1,
        max_capacity=4,
    )

    response = admin_client.post(
        admin_url(ScalingPolicy, "change", policy.pk), policy_form(policy, min_capacity=0)
    )

    assert response.status_code == 200
    assert "never scales to zero" in " ".join(
        response.context["adminform"].form.errors["min_capacity"]
    )


def test_scaling_policies_cannot_be_added_or_deleted_by_hand(admin_client, db):
    policy = variant_policy()

    assert admin_client.get(admin_url(ScalingPolicy, "add")).status_code == 403
    assert admin_client.post(admin_url(ScalingPolicy, "delete", policy.pk)).status_code == 403
    assert ScalingPolicy.objects.filter(pk=policy.pk).exists()


def test_endpoint_actions_show_a_rebalance_and_request_one(admin_client, db):
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, model_kind="intent-classifier")
    for ordinal in range(2):
        instance = InstanceFactory(
            endpoint=endpoint, ordinal=ordinal, port=47500 + ordinal, memory_budget_mb=1000
        )
        PlacementFactory(instance=instance, host_memory_mb=100.0)

    shown = run_action(admin_client, Endpoint, "show_rebalance", [endpoint], follow=True)

    text = " ".join(str(m) for m in shown.context["messages"])
    assert f"{endpoint.name}: 2 → 1 instances" in text and "1 copies to move" in text
    assert not Event.objects.filter(kind="rebalance.requested").exists()


def test_rebalancing_a_sagemaker_endpoint_from_the_admin_moves_nothing_and_says_why(
    admin_client, db
):
    endpoint = EndpointFactory(backend=Endpoint.Backend.SAGEMAKER, name="tml-intents-mme")

    shown = run_action(admin_client, Endpoint, "show_rebalance", [endpoint], follow=True)
    asked = run_action(admin_client, Endpoint, "rebalance_endpoints", [endpoint], follow=True)

    assert "SageMaker chooses" in " ".join(str(m) for m in shown.context["messages"])
    assert "0 copies to move" in " ".join(str(m) for m in asked.context["messages"])
    assert Event.objects.filter(kind="rebalance.requested").count() == 1
