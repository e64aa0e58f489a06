"""Deploying tenant models through the API onto real local Triton processes: shared (MME) and
dedicated endpoints, preloading before routing switches, rolling forward and back under
concurrent traffic with no failed request, failed rollouts that leave the live version serving,
the promotion hook, and draining an instance."""

from __future__ import annotations

import threading
import time

import pytest
from rest_framework.test import APIClient

from deployments.backends.local import runtime
from deployments.models import Deployment, Endpoint, Event, Instance, Placement
from deployments.services import draining
from models_registry.models import ModelVersion
from models_registry.services.promotion import promote_version
from tenants.models import Tenant
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

TICKETS = ["Where is my refund?", "I can't log in to my account.", "My parcel never arrived."]


def packaged(model, artifact_dir, number: int) -> ModelVersion:
    return packaged_version(model, artifact_dir, number)


@pytest.fixture
def intent_model(intent_artifact):
    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    packaged_version(model, intent_artifact, 1, promote=True)
    return model


def client_for(tenant: Tenant) -> APIClient:
    secret = issue_token(tenant=tenant, name="test", actor="test").secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def model_url(model, suffix: str) -> str:
    return f"/api/v1/tenants/{model.tenant.slug}/models/{model.name}/{suffix}"


def test_deploying_through_the_api_preloads_the_active_version_on_a_shared_endpoint(
    intent_model,
):
    client = client_for(intent_model.tenant)

    response = client.post(model_url(intent_model, "deployments/"), {}, format="json")

    assert response.status_code == 202, response.content
    body = client.get(model_url(intent_model, "deployments/")).json()
    assert body["status"] == "live" and body["live_version"] == 1 and body["mode"] == "mme"
    assert body["endpoint"] == "local-intent-classifier"
    endpoint = Endpoint.objects.get(name="local-intent-classifier")
    assert endpoint.mode == Endpoint.Mode.MME
    placement = Placement.objects.get(version=intent_model.active_version)
    assert placement.actual_state == Placement.ActualState.LOADED
    assert placement.last_warmed_at is not None  # the probe answered before the switch

    answer = client.post(model_url(intent_model, "invoke"), {"inputs": TICKETS}, format="json")

    assert answer.status_code == 200, answer.content
    data = answer.json()
    assert [o["label"] for o in data["outputs"]] == ["refund", "account_access", "shipping"]
    assert data["model_version"] == 1
    assert data["cold_start"] is False  # going live loaded it before routing switched
    assert Event.objects.filter(kind="deployment.switched", version__model=intent_model).exists()


def test_a_second_identical_request_changes_nothing(intent_model):
    client = client_for(intent_model.tenant)
    client.post(model_url(intent_model, "deployments/"), {}, format="json")
    switches = Event.objects.filter(kind="deployment.switched").count()

    again = client.post(model_url(intent_model, "deployments/"), {"mode": "mme"}, format="json")

    assert again.status_code == 202
    assert again.json()["status"] == "live"
    assert Event.objects.filter(kind="deployment.switched").count() == switches


def test_dedicated_mode_gets_its_own_endpoint_instance_and_pinned_copy(intent_model):
    client = client_for(intent_model.tenant)

    response = client.post(
        model_url(intent_model, "deployments/"), {"mode": "dedicated"}, format="json"
    )

    assert response.status_code == 202, response.content
    deployment = Deployment.objects.get(model=intent_model)
    assert deployment.status == Deployment.Status.LIVE
    endpoint = deployment.endpoint
    assert endpoint.name == "ded-acme-intents" and endpoint.mode == Endpoint.Mode.DEDICATED
    instance = endpoint.instances.get()
    assert instance.status == Instance.Status.HEALTHY and instance.pid
    placement = Placement.objects.get(version=deployment.live_version, endpoint=endpoint)
    assert placement.is_pinned and placement.actual_state == Placement.ActualState.LOADED
    answer = client.post(model_url(intent_model, "invoke"), {"inputs": TICKETS[:1]}, format="json")
    assert answer.status_code == 200 and answer.json()["outputs"][0]["label"] == "refund"


def test_rolling_forward_and_back_under_concurrent_traffic_fails_no_request(
    intent_model, intent_artifact
):
    tenant_client = client_for(intent_model.tenant)
    assert (
        tenant_client.post(model_url(intent_model, "deployments/"), {}, format="json").status_code
        == 202
    )
    packaged(intent_model, intent_artifact, 2)
    secret = issue_token(tenant=intent_model.tenant, name="load", actor="test").secret

    failures: list[str] = []
    versions_seen: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        while not stop.is_set():
            response = client.post(
                model_url(intent_model, "invoke"), {"inputs": TICKETS[:1]}, format="json"
            )
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.content[:200]!r}")
            else:
                body = response.json()
                if body["outputs"][0]["label"] != "refund":
                    failures.append(f"wrong answer {body}")
                versions_seen.append(body["model_version"])

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        forward = tenant_client.post(
            model_url(intent_model, "deployments/"), {"version": 2}, format="json"
        )
        assert forward.status_code == 202, forward.content
        assert forward.json()["live_version"] == 2 and forward.json()["previous_version"] == 1
        time.sleep(0.5)
        back = tenant_client.post(model_url(intent_model, "deployments/rollback"), format="json")
        assert back.status_code == 202, back.content
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert failures == []
    assert 1 in versions_seen and 2 in versions_seen
    assert versions_seen[-1] == 1  # rolled back
    deployment = Deployment.objects.get(model=intent_model)
    assert deployment.live_version.number == 1 and deployment.previous_version.number == 2
    intent_model.refresh_from_db()
    assert intent_model.active_version.number == 1  # the registry agrees with what serves
    # Both stay placed (one for rollback); neither was loaded twice.
    assert Event.objects.filter(kind="placement.loaded", version__model=intent_model).count() == 2


def test_promoting_a_deployed_models_new_version_rolls_it_out(intent_model, intent_artifact):
    client = client_for(intent_model.tenant)
    client.post(model_url(intent_model, "deployments/"), {}, format="json")
    v2 = packaged(intent_model, intent_artifact, 2)

    promote_version(version=v2, actor="test")

    deployment = Deployment.objects.get(model=intent_model)
    assert deployment.live_version == v2 and deployment.previous_version.number == 1
    answer = client.post(model_url(intent_model, "invoke"), {"inputs": TICKETS[:1]}, format="json")
    assert answer.json()["model_version"] == 2


def test_a_version_that_fails_to_load_leaves_the_live_version_serving(
    intent_model, intent_artifact, tmp_path
):
    client = client_for(intent_model.tenant)
    client.post(model_url(intent_model, "deployments/"), {}, format="json")
    broken = packaged(intent_model, intent_artifact, 2)
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"not a tarball")
    ModelVersion.objects.filter(pk=broken.pk).update(package_uri=str(corrupt))

    response = client.post(model_url(intent_model, "deployments/"), {"version": 2}, format="json")

    assert response.status_code in (202, 422, 502), response.content
    deployment = Deployment.objects.get(model=intent_model)
    assert deployment.status == Deployment.Status.FAILED
    assert "v2" in deployment.status_reason and "v1 keeps serving" in deployment.status_reason
    assert deployment.live_version.number == 1 and deployment.target_version is None
    answer = client.post(model_url(intent_model, "invoke"), {"inputs": TICKETS[:1]}, format="json")
    assert answer.status_code == 200 and answer.json()["model_version"] == 1
    assert Event.objects.filter(kind="deployment.failed", severity="error").exists()


def test_draining_an_instance_moves_its_models_first_then_stops_it(intent_model):
    client = client_for(intent_model.tenant)
    client.post(model_url(intent_model, "deployments/"), {}, format="json")
    endpoint = Endpoint.objects.get(name="local-intent-classifier")
    first = endpoint.instances.get()
    second = runtime.start_local_instance(endpoint=endpoint, actor="test")

    drained = draining.drain_instance(instance=first, actor="test")

    assert drained.status == Instance.Status.STOPPED
    moved = Placement.objects.get(version=intent_model.active_version, instance=second)
    assert moved.actual_state == Placement.ActualState.LOADED
    old = Placement.objects.get(version=intent_model.active_version, instance=first)
    assert old.desired_state == Placement.DesiredState.UNLOADED
    answer = client.post(model_url(intent_model, "invoke"), {"inputs": TICKETS[:1]}, format="json")
    assert answer.status_code == 200 and answer.json()["cold_start"] is False


def test_premium_tenants_models_are_pinned(intent_model):
    Tenant.objects.filter(pk=intent_model.tenant_id).update(tier=Tenant.Tier.PREMIUM)
    client = client_for(intent_model.tenant)

    client.post(model_url(intent_model, "deployments/"), {}, format="json")

    placement = Placement.objects.get(version=intent_model.active_version)
    assert placement.is_pinned


def test_a_full_shared_endpoint_scales_out_to_another_triton_process(intent_artifact):
    first = TenantModelFactory(tenant=TenantFactory(slug="first", tier="premium"), name="intents")
    second = TenantModelFactory(tenant=TenantFactory(slug="second", tier="premium"), name="intents")
    for model in (first, second):
        promote_version(version=packaged(model, intent_artifact, 1), actor="test")
        model.refresh_from_db()
    client = client_for(first.tenant)
    client.post(model_url(first, "deployments/"), {}, format="json")
    endpoint = Endpoint.objects.get(name="local-intent-classifier")
    # Room for one pinned model of ~114 MB per instance.
    endpoint.instances.update(memory_budget_mb=200)

    response = client_for(second.tenant).post(model_url(second, "deployments/"), {}, format="json")

    assert response.status_code == 202, response.content
    instances = list(endpoint.instances.order_by("ordinal"))
    assert len(instances) == 2 and all(i.status == Instance.Status.HEALTHY for i in instances)
    assert Placement.objects.get(version=second.active_version).instance == instances[1]
    assert Placement.objects.get(version=first.active_version).instance == instances[0]
