"""Rebalancing the local fleet: what a fresh packing saves, read from the rows (no server), and
applied on real Triton processes — each moved copy loaded and warm on its new instance before
the old one goes, the emptied instance stopped, every model still answering warm."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from deployments.backends.local import runtime
from deployments.models import Endpoint, Event, Instance, Placement
from deployments.passes import REBALANCE
from deployments.selectors.rebalance import rebalance_report
from deployments.services import rebalance, rollouts
from tenants.services import issue_token
from tests.factories import (
    EndpointFactory,
    InstanceFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
)
from tests.serving_fixtures import packaged_version

TICKETS = ["Where is my refund?", "I can't log in to my account."]


def platform_client() -> APIClient:
    client = APIClient()
    secret = issue_token(tenant=None, name="ops", actor="test").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def drifted_endpoint(**endpoint_fields) -> tuple[Endpoint, list[Instance]]:
    """Three instances of 1,000 MB, each a third full: one instance holds all of it."""
    endpoint = EndpointFactory(
        backend=Endpoint.Backend.LOCAL,
        mode=Endpoint.Mode.MME,
        model_kind="intent-classifier",
        **endpoint_fields,
    )
    instances = [
        InstanceFactory(endpoint=endpoint, ordinal=n, port=47300 + n, memory_budget_mb=1000)
        for n in range(3)
    ]
    for instance in instances:
        for _ in range(3):
            PlacementFactory(instance=instance, host_memory_mb=100.0)
    return endpoint, instances


@pytest.mark.django_db
def test_a_drifted_endpoint_reports_the_instances_it_would_stop_and_each_copy_it_would_move(
    settings,
):
    settings.TENANTML_REBALANCE_MIN_SAVING_USD_MONTH = 50.0
    endpoint, instances = drifted_endpoint()
    hourly = float(endpoint.instance_type.usd_per_hour)

    report = rebalance_report()

    [plan] = report.endpoints
    assert (plan.instances_now, plan.instances_after) == (3, 1)
    assert len(plan.retire) == 2 and len(plan.moves) == 6
    [kept] = {move.target_id for move in plan.moves}
    assert kept not in {instance_id for instance_id, _ in plan.retire}
    # Every copy on a retired instance moves; none of the kept instance's copies do.
    assert {m.source_id for m in plan.moves} == {instance_id for instance_id, _ in plan.retire}
    assert report.usd_per_month_saved == pytest.approx(2 * hourly * 730)
    assert hourly > 0 and report.worth_doing is True
    shown = report.as_dict()
    assert shown["instances_saved"] == 2 and shown["copies_moved"] == 6
    assert shown["endpoints"][0]["moves"][0].keys() == {"model", "version", "from", "to"}


@pytest.mark.django_db
def test_a_packed_endpoint_a_sagemaker_one_and_a_single_instance_move_nothing():
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, model_kind="intent-classifier")
    full = [
        InstanceFactory(endpoint=endpoint, port=47400 + n, memory_budget_mb=300) for n in (0, 1)
    ]
    for instance in full:
        for _ in range(3):
            PlacementFactory(instance=instance, host_memory_mb=100.0)
    alone = InstanceFactory(port=47410, memory_budget_mb=1000)
    PlacementFactory(instance=alone, host_memory_mb=100.0)
    EndpointFactory(name="tml-intent-classifier-mme", backend=Endpoint.Backend.SAGEMAKER)

    report = rebalance_report()

    [plan] = report.endpoints
    assert (plan.instances_now, plan.instances_after, plan.moves) == (2, 2, [])
    assert report.usd_per_month_saved == 0 and report.worth_doing is False
    assert [name for name, _ in report.skipped] == ["tml-intent-classifier-mme"]


@pytest.mark.django_db
def test_with_no_threshold_set_the_hourly_job_never_moves_anything(settings):
    settings.TENANTML_REBALANCE_MIN_SAVING_USD_MONTH = None
    drifted_endpoint()

    outcome = rebalance.rebalance_fleet(only_if_worth_it=True)

    assert outcome.applied is False and outcome.moved == 0
    assert outcome.planned["instances_saved"] == 2
    assert Placement.objects.filter(desired_state=Placement.DesiredState.UNLOADED).count() == 0
    assert not Event.objects.filter(kind="rebalance.completed").exists()


@pytest.mark.django_db
def test_the_rebalance_api_is_for_platform_tokens_and_names_a_bad_endpoint():
    drifted_endpoint(name="local-drifted")
    tenant = TenantFactory(slug="acme")
    tenant_client = APIClient()
    secret = issue_token(tenant=tenant, name="t", actor="test").secret
    tenant_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert tenant_client.get("/api/v1/fleet/rebalance").status_code == 403
    answer = platform_client().get("/api/v1/fleet/rebalance", {"endpoint": "local-drifted"})
    unknown = platform_client().post(
        "/api/v1/fleet/rebalance", {"endpoint": "x" * 500}, format="json"
    )
    missing = platform_client().get("/api/v1/fleet/rebalance", {"endpoint": "nope"})

    assert answer.status_code == 200 and answer.json()["instances_saved"] == 2
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "endpoint"
    assert "x" * 100 not in unknown.content.decode()
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "endpoint"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("local_rollouts")
def test_a_rebalance_moves_copies_warm_then_stops_the_instance_left_empty(intent_artifact):
    models = []
    for slug in ("first", "second"):
        model = TenantModelFactory(tenant=TenantFactory(slug=slug), name="intents")
        packaged_version(model, intent_artifact, 1, promote=True)
        models.append(model)
    runtime.ensure_default_local_endpoints(actor="test")
    endpoint = Endpoint.objects.get(name="local-intent-classifier")
    for _ in range(2):
        runtime.start_local_instance(endpoint=endpoint, actor="test", memory_budget_mb=2000)
    # Each deployment goes to the instance with the least placed memory: one each.
    for model in models:
        deployment, _ = rollouts.request_deployment(model=model, actor="test")
        rollouts.run_rollout(deployment_id=deployment.pk)
    assert len({p.instance_id for p in Placement.objects.all()}) == 2
    client = platform_client()

    answer = client.post("/api/v1/fleet/rebalance", {}, format="json")

    assert answer.status_code == 202, answer.content
    assert answer.json()["instances_saved"] == 1 and answer.json()["copies_moved"] == 1
    instances = {i.pk: i for i in Instance.objects.filter(endpoint=endpoint)}
    stopped = [i for i in instances.values() if i.status == Instance.Status.STOPPED]
    [kept] = [i for i in instances.values() if i.status == Instance.Status.HEALTHY]
    assert len(stopped) == 1
    for model in models:
        [serving] = Placement.objects.filter(version=model.active_version).exclude(
            desired_state=Placement.DesiredState.UNLOADED
        )
        assert serving.instance_id == kept.pk
        assert serving.actual_state == Placement.ActualState.LOADED
        tenant_secret = issue_token(tenant=model.tenant, name="t", actor="test").secret
        tenant_client = APIClient()
        tenant_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_secret}")
        invoked = tenant_client.post(
            f"/api/v1/tenants/{model.tenant.slug}/models/intents/invoke",
            {"inputs": TICKETS},
            format="json",
        )
        assert invoked.status_code == 200 and invoked.json()["cold_start"] is False
    [done] = Event.objects.filter(kind="rebalance.completed")
    assert done.data["moved"] == 1 and done.data["instances_stopped"] == [str(stopped[0])]
    assert Event.objects.filter(kind="rebalance.requested").count() == 1
    # Nothing left to save, and the pass is on record.
    assert client.get("/api/v1/fleet/rebalance").json()["instances_saved"] == 0
    from deployments.models import BackgroundPass

    assert BackgroundPass.objects.get(job=REBALANCE).items == 1
