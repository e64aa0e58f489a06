"""What SageMaker endpoints cost (moto plays AWS): each endpoint at the instances it really runs
(DescribeEndpoint's CurrentInstanceCount), mirrored as Instance rows when the rollout finds it
InService and on every reconciler pass, so the fleet's cost, savings, per-tenant shares, the
minute sampler, the cost trend and the dashboard count them; an endpoint deleted behind the
platform's back stops costing; memory figures stay over the instances whose memory is measured."""

from __future__ import annotations

import re

import boto3
import pytest

from deployments.backends import backend_for
from deployments.models import (
    Deployment,
    Endpoint,
    Event,
    Instance,
    InstanceType,
    InstanceUsageMinute,
    Placement,
)
from deployments.selectors.costs import what_if_costs
from deployments.selectors.traffic import fleet_trends
from deployments.services.fleet import sample_fleet_utilization
from deployments.services.reconciler import reconcile_fleet
from tenants.access import Caller
from tenants.services import issue_token
from tests.deployments.backends.sagemaker import support
from tests.factories import (
    EndpointFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# The deploy tests' AWS (moto, S3 store, role, eager Celery) and their deployable version.
REGION = support.REGION
ROLE = support.ROLE


def client_with(secret: str):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def platform_api():
    return client_with(issue_token(tenant=None, name="ops", actor="test").secret)


def scale(endpoint: Endpoint, count: int) -> None:
    """What application autoscaling does to a variant (moto applies it to DescribeEndpoint)."""
    boto3.client("sagemaker", region_name=REGION).update_endpoint_weights_and_capacities(
        EndpointName=endpoint.name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": count}],
    )


@pytest.fixture
def mme(deployed_version, django_capture_on_commit_callbacks) -> Endpoint:
    """acme/intents v1 deployed through the API onto the shared multi-model endpoint."""
    support.answers_from_the_runtime(1)
    with django_capture_on_commit_callbacks(execute=True):
        response = support.api(deployed_version.model.tenant).post(
            "/api/v1/tenants/acme/models/intents/deployments/", {}, format="json"
        )
    assert response.status_code == 202, response.content
    deployment = Deployment.objects.get(model=deployed_version.model)
    assert deployment.status == Deployment.Status.LIVE, deployment.status_reason
    return deployment.endpoint


@pytest.fixture
def scaled_mme(mme) -> Endpoint:
    """The multi-model endpoint after autoscaling took it to 2 instances and the reconciler ran."""
    scale(mme, 2)
    report = reconcile_fleet()
    assert report.errors == []
    return mme


def price_of(endpoint: Endpoint) -> float:
    return float(endpoint.instance_type.usd_per_hour)


def live_rows(endpoint: Endpoint) -> list[Instance]:
    return list(endpoint.instances.exclude(status=Instance.Status.STOPPED).order_by("ordinal"))


def test_the_rollout_mirrors_the_endpoints_running_instance_once_it_is_in_service(mme):
    [instance] = live_rows(mme)

    assert instance.status == Instance.Status.HEALTHY
    assert instance.external_id == "AllTraffic/0"
    assert (instance.host, instance.port, instance.pid) == ("", None, None)
    type_ = mme.instance_type
    assert instance.memory_budget_mb == int(
        type_.host_memory_mb * float(mme.target_memory_utilization)
    )
    assert backend_for(mme).hourly_cost_usd(endpoint=mme) == type_.usd_per_hour


def test_fleet_costs_count_an_endpoint_autoscaled_to_two_instances_at_twice_its_price(
    scaled_mme,
):
    costs = platform_api().get("/api/v1/fleet/costs").json()

    price = price_of(scaled_mme)
    assert costs["usd_per_hour"] == pytest.approx(2 * price)
    assert costs["usd_per_month"] == pytest.approx(2 * price * 730)
    assert costs["endpoints"] == [
        {
            "endpoint": scaled_mme.name,
            "instance_type": scaled_mme.instance_type.name,
            "live_instances": 2,
            "usd_per_hour": pytest.approx(2 * price),
        }
    ]
    assert costs["dedicated_usd_per_hour"] > 0
    assert costs["savings"] == pytest.approx(
        1 - costs["usd_per_hour"] / costs["dedicated_usd_per_hour"], abs=1e-4
    )
    # The one model resident there holds all its memory, so it pays for both instances.
    assert costs["tenants"][0]["tenant"] == "acme"
    assert costs["tenants"][0]["usd_per_hour"] == pytest.approx(2 * price)
    assert costs["unattributed_usd_per_hour"] == pytest.approx(0)
    assert backend_for(scaled_mme).hourly_cost_usd(endpoint=scaled_mme) == (
        scaled_mme.instance_type.usd_per_hour * 2
    )
    event = Event.objects.get(
        kind="endpoint.instances_changed", endpoint=scaled_mme, actor="reconciler"
    )
    assert (event.data["before"], event.data["after"]) == (1, 2)
    assert event.data["variants"] == {"AllTraffic": 2}
    assert [i.external_id for i in live_rows(scaled_mme)] == ["AllTraffic/0", "AllTraffic/1"]
    what_if = what_if_costs(
        instance_type=scaled_mme.instance_type, target_utilization=0.8, replicas=1
    )
    assert what_if["current_usd_per_hour"] == pytest.approx(2 * price)


def test_a_tenant_tokens_costs_include_its_share_of_the_sagemaker_endpoint(
    scaled_mme, deployed_version
):
    tenant_api = support.api(deployed_version.model.tenant)

    costs = tenant_api.get("/api/v1/fleet/costs").json()

    price = price_of(scaled_mme)
    assert costs["scope"] == "tenant"
    assert costs["usd_per_hour"] == pytest.approx(2 * price)
    assert costs["models"] == [
        {
            "tenant": "acme",
            "model": "intents",
            "version": 1,
            "usd_per_hour": pytest.approx(2 * price),
            "memory_mb": pytest.approx(114.0),
        }
    ]
    utilization = tenant_api.get("/api/v1/fleet/utilization").json()
    assert utilization["instances"] == 2


def test_the_overview_and_endpoint_pages_show_the_endpoint_at_its_running_instances(
    scaled_mme, client
):
    client.force_login(UserFactory(username="operator", is_staff=True))
    price = price_of(scaled_mme)

    overview = client.get("/dashboard/").content.decode()
    endpoints = client.get("/dashboard/endpoints/").content.decode()
    detail = client.get(f"/dashboard/endpoints/{scaled_mme.name}/").content.decode()

    figure = re.search(r'<span [^>]*data-testid="fleet-cost-per-hour"[^>]*>', overview).group(0)
    assert f'data-value="{round(2 * price, 4)}"' in figure
    assert f'data-testid="overview-endpoint-instances-{scaled_mme.name}">2<' in overview
    assert f'data-testid="overview-endpoint-cost-{scaled_mme.name}"' in overview
    row = endpoints.split(f'data-testid="endpoint-row-{scaled_mme.name}"')[1].split("</tr>")[0]
    assert '<td class="num">2</td>' in row  # live instances
    assert "not measured" in row  # SageMaker's hosts' memory is not the platform's to see
    assert f"${2 * price:,.2f}" in row or f"${2 * price:,.4f}" in row
    assert f"{scaled_mme.instance_type.name} × 2" in detail
    assert detail.count('data-memory-measured="false"') == 2


def test_an_endpoint_scaled_in_stops_its_extra_instance_and_takes_it_back_when_scaled_out(
    scaled_mme,
):
    scale(scaled_mme, 1)
    reconcile_fleet()

    assert [i.ordinal for i in live_rows(scaled_mme)] == [0]
    stopped = scaled_mme.instances.get(ordinal=1)
    assert stopped.status == Instance.Status.STOPPED
    assert platform_api().get("/api/v1/fleet/costs").json()["usd_per_hour"] == pytest.approx(
        price_of(scaled_mme)
    )

    scale(scaled_mme, 3)
    reconcile_fleet()

    assert [i.ordinal for i in live_rows(scaled_mme)] == [0, 1, 2]
    assert scaled_mme.instances.count() == 3  # ordinal 1's row came back, not a new one
    changes = Event.objects.filter(kind="endpoint.instances_changed", endpoint=scaled_mme)
    assert [(e.data["before"], e.data["after"]) for e in changes.order_by("id")] == [
        (0, 1),  # the rollout found it in service
        (1, 2),
        (2, 1),
        (1, 3),
    ]


def test_a_reconciler_pass_that_finds_the_count_unchanged_records_nothing(scaled_mme):
    before = Event.objects.filter(kind="endpoint.instances_changed").count()

    report = reconcile_fleet()

    assert report.instances_checked == 2
    assert Event.objects.filter(kind="endpoint.instances_changed").count() == before


def test_an_endpoint_deleted_behind_the_platforms_back_stops_its_instances_and_costs_nothing(
    scaled_mme, deployed_version
):
    boto3.client("sagemaker", region_name=REGION).delete_endpoint(EndpointName=scaled_mme.name)

    report = reconcile_fleet()

    scaled_mme.refresh_from_db()
    assert scaled_mme.status == Endpoint.Status.RETIRED
    assert "no longer exists" in scaled_mme.status_reason
    assert live_rows(scaled_mme) == []
    assert set(scaled_mme.instances.values_list("status", flat=True)) == {"stopped"}
    placement = Placement.objects.get(endpoint=scaled_mme, version=deployed_version)
    assert placement.actual_state == Placement.ActualState.UNLOADED
    assert report.marked_missing == [str(placement)]
    event = Event.objects.get(kind="endpoint.retired", endpoint=scaled_mme)
    assert event.severity == "error" and "acme/intents" in event.message
    costs = platform_api().get("/api/v1/fleet/costs").json()
    assert costs["usd_per_hour"] == 0
    assert costs["endpoints"] == []
    assert costs["tenants"] == []
    assert backend_for(scaled_mme).hourly_cost_usd(endpoint=scaled_mme) == 0
    # A retired endpoint is no longer reconciled (nothing to describe).
    assert reconcile_fleet().errors == []


def test_a_reconciler_pass_while_the_rollout_creates_the_endpoint_leaves_it_alone(aws):
    type_ = InstanceType.objects.get(name="ml.c5.xlarge")
    endpoint = EndpointFactory(
        name="tml-embedding-mme",
        backend="sagemaker",
        instance_type=type_,
        status=Endpoint.Status.CREATING,
    )

    report = reconcile_fleet()

    endpoint.refresh_from_db()
    assert report.errors == []
    assert endpoint.status == Endpoint.Status.CREATING
    assert not endpoint.instances.exists()


def test_an_inference_component_endpoint_with_zero_copies_still_costs_its_instances(aws):
    type_ = InstanceType.objects.get(name="ml.g4dn.xlarge")
    # moto cannot create an endpoint config without a model, as an inference-component
    # endpoint's is; DescribeEndpoint's instance counts, all the platform reads, are the same.
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(
        ModelName="ic-host-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "triton", "Mode": "SingleModel"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="tml-intent-classifier-ic-config-1",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "ic-host-model",
                "InstanceType": type_.name,
                "InitialInstanceCount": 1,
            }
        ],
    )
    arn = sagemaker.create_endpoint(
        EndpointName="tml-intent-classifier-ic",
        EndpointConfigName="tml-intent-classifier-ic-config-1",
    )["EndpointArn"]
    endpoint = EndpointFactory(
        name="tml-intent-classifier-ic",
        backend="sagemaker",
        mode=Endpoint.Mode.INFERENCE_COMPONENT,
        instance_type=type_,
        external_arn=arn,
    )
    # A standard tenant's idle model: its component scaled to zero copies, nothing resident.
    version = ModelVersionFactory(
        model=TenantModelFactory(tenant=TenantFactory(slug="initech"), name="intents"),
        host_memory_mb=400.0,
    )
    PlacementFactory(
        version=version,
        endpoint=endpoint,
        instance=None,
        copies=0,
        min_copies=0,
        actual_state=Placement.ActualState.UNLOADED,
        external_name="initech-intents-v1",
    )

    reconcile_fleet()

    costs = platform_api().get("/api/v1/fleet/costs").json()
    price = float(type_.usd_per_hour)
    assert len(live_rows(endpoint)) == 1
    assert costs["usd_per_hour"] == pytest.approx(price)
    assert costs["endpoints"][0]["live_instances"] == 1
    # Nobody's model is resident: the instance is idle capacity, not a tenant's share.
    assert costs["tenants"] == []
    assert costs["unattributed_usd_per_hour"] == pytest.approx(price)
    assert backend_for(endpoint).hourly_cost_usd(endpoint=endpoint) == type_.usd_per_hour


def test_the_minute_sampler_writes_rows_for_sagemaker_instances_and_the_cost_trend_counts_them(
    scaled_mme,
):
    sampled = sample_fleet_utilization()

    rows = InstanceUsageMinute.objects.filter(instance__endpoint=scaled_mme)
    assert sampled == 2 and rows.count() == 2
    assert {r.instance.ordinal for r in rows} == {0, 1}
    operator = Caller(label="ops", is_platform=True, tenant_ids=frozenset())
    trends = fleet_trends(caller=operator)
    latest_cost = [value for _, value in trends["usd_per_hour"] if value is not None][-1]
    assert latest_cost == pytest.approx(2 * price_of(scaled_mme))
    # Nothing the platform measures memory on was sampled: no utilization, rather than 0 %.
    assert all(value is None for _, value in trends["memory_utilization_pct"])


def test_memory_figures_cover_measured_instances_while_counts_and_cost_cover_all(scaled_mme):
    local = InstanceFactory(
        endpoint=EndpointFactory(name="local-intent-classifier"), memory_budget_mb=1000
    )
    PlacementFactory(
        instance=local,
        endpoint=local.endpoint,
        host_memory_mb=250.0,
        actual_state=Placement.ActualState.LOADED,
    )
    api = platform_api()

    utilization = api.get("/api/v1/fleet/utilization").json()
    costs = api.get("/api/v1/fleet/costs").json()
    sample_fleet_utilization()

    assert utilization["instances"] == 3
    assert utilization["memory_measured_instances"] == 1
    assert "measures" in utilization["memory_basis"]
    assert utilization["host_memory_budget_mb"] == 1000
    assert utilization["host_memory_used_mb"] == 250
    assert utilization["host_memory_utilization"] == 0.25
    local_price = float(local.endpoint.instance_type.usd_per_hour)
    assert costs["usd_per_hour"] == pytest.approx(2 * price_of(scaled_mme) + local_price)
    operator = Caller(label="ops", is_platform=True, tenant_ids=frozenset())
    trends = fleet_trends(caller=operator)
    assert [v for _, v in trends["memory_utilization_pct"] if v is not None][-1] == 25.0


def test_a_sagemaker_instance_cannot_be_drained_and_stays_live(scaled_mme):
    instance = live_rows(scaled_mme)[0]

    response = platform_api().post(f"/api/v1/instances/{instance.pk}/drain", {}, format="json")

    assert response.status_code == 400
    assert "SageMaker replaces its own instances" in response.json()["error"]["message"]
    instance.refresh_from_db()
    assert instance.status == Instance.Status.HEALTHY


def test_starting_the_local_endpoints_leaves_sagemaker_instances_alone(scaled_mme):
    from deployments.backends.local.runtime import start_local_endpoints

    # ``manage.py up`` marks live instances without a Triton process stopped: never these.
    start_local_endpoints(actor="up")

    assert len(live_rows(scaled_mme)) == 2
