"""The operator admin for instance types, endpoints, instances, placements, deployments, events
and usage: computed columns right, actions call services, the platform's own log read-only, and
the busy changelists in a bounded number of queries."""

from __future__ import annotations

import pytest
from django.contrib import messages

from deployments.models import (
    BackgroundPass,
    Deployment,
    Endpoint,
    EndpointUsageMinute,
    Event,
    FleetUsageMinute,
    Instance,
    InstanceType,
    InstanceUsageMinute,
    Placement,
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
