"""Deployment and invoke requests that must be refused, with the field named and nothing
written: no active version, unknown versions, bad modes and replicas, other tenants' models,
models not deployed yet (409) or being deployed (503 with Retry-After), and inputs that break
the platform's limit or the kind's schema (named, never echoed). The invoke schema states the
limits the validation enforces."""

from __future__ import annotations

import pytest

from deployments.models import Deployment
from models_registry.models import ModelVersion
from tests.factories import ModelVersionFactory, TenantModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(tenant):
    return TenantModelFactory(tenant=tenant, name="intents")


def named_fields(response) -> set[str]:
    """The fields an error answer names (``{"error": {"field"} or {"fields"}}``)."""
    error = response.json()["error"]
    return set(error.get("fields", {})) | ({error["field"]} if error.get("field") else set())


def url(model, suffix: str) -> str:
    return f"/api/v1/tenants/{model.tenant.slug}/models/{model.name}/{suffix}"


def test_a_model_without_an_active_version_cannot_be_deployed(tenant_client, model):
    response = tenant_client.post(url(model, "deployments/"), {}, format="json")

    assert response.status_code == 409
    assert named_fields(response) == {"version"}
    assert not Deployment.objects.exists()


def test_an_unknown_version_is_404_and_an_unready_one_409(tenant_client, model):
    ModelVersionFactory(model=model, number=1, status=ModelVersion.Status.FAILED)

    unknown = tenant_client.post(url(model, "deployments/"), {"version": 7}, format="json")
    failed = tenant_client.post(url(model, "deployments/"), {"version": 1}, format="json")

    assert unknown.status_code == 404
    assert failed.status_code == 409 and named_fields(failed) == {"version"}
    assert not Deployment.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"mode": "serverless"}, "mode"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 99}, "replicas"),
        ({"version": "latest"}, "version"),
    ],
)
def test_bad_deployment_fields_are_400_naming_the_field(tenant_client, model, payload, field):
    response = tenant_client.post(url(model, "deployments/"), payload, format="json")

    assert response.status_code == 400
    assert field in named_fields(response)
    assert not Deployment.objects.exists()


def test_dedicated_with_several_replicas_is_refused(tenant_client, model):
    version = ModelVersionFactory(model=model, number=1, package_uri="/tmp/x.tar.gz")
    model.active_version = version
    model.save()

    response = tenant_client.post(
        url(model, "deployments/"), {"mode": "dedicated", "replicas": 2}, format="json"
    )

    assert response.status_code == 400 and named_fields(response) == {"replicas"}


def test_another_tenants_model_is_404_for_deploy_status_and_invoke(tenant_client, other_tenant):
    theirs = TenantModelFactory(tenant=other_tenant, name="secret-model")

    for method, suffix, body in [
        ("post", "deployments/", {}),
        ("get", "deployments/", None),
        ("post", "invoke", {"inputs": ["hi"]}),
        ("post", "deployments/rollback", None),
    ]:
        response = getattr(tenant_client, method)(url(theirs, suffix), body, format="json")
        assert response.status_code == 404, (suffix, response.status_code)
        assert "secret-model" not in response.content.decode()


def test_status_of_a_model_never_deployed_is_404(tenant_client, model):
    assert tenant_client.get(url(model, "deployments/")).status_code == 404


def test_invoking_a_model_not_deployed_is_409_saying_so(tenant_client, model):
    response = tenant_client.post(url(model, "invoke"), {"inputs": ["hi"]}, format="json")

    assert response.status_code == 409
    assert "deploy" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        (["fine", ""], "inputs[1]"),
        (["fine", 42], "inputs[1]"),
        ([], "inputs"),
        ("not a list", "inputs"),
        (["x"] * 1025, "inputs"),
        (["fine", {"text": "Where is my refund? 987654"}], "inputs[1]"),
        (["fine", ["Where is my refund? 987654"]], "inputs[1]"),
    ],
)
def test_inputs_that_break_the_kinds_schema_are_400_naming_the_item(
    tenant_client, model, inputs, field
):
    response = tenant_client.post(url(model, "invoke"), {"inputs": inputs}, format="json")

    assert response.status_code == 400, response.content
    assert field in named_fields(response), response.json()
    assert "987654" not in response.content.decode()


def test_more_inputs_than_the_limit_are_refused_saying_how_many_without_echoing_them(
    tenant_client, model, settings
):
    settings.TENANTML_INVOKE_MAX_INPUTS = 40
    texts = [f"ticket number {index} about a refund" for index in range(41)]

    response = tenant_client.post(url(model, "invoke"), {"inputs": texts}, format="json")

    assert response.status_code == 400
    assert named_fields(response) == {"inputs"}
    assert "at most 40 inputs per request, got 41" in response.json()["error"]["message"]
    assert "ticket number" not in response.content.decode()


def test_an_item_that_is_not_a_text_is_named_by_position_and_never_echoed(tenant_client, model):
    response = tenant_client.post(
        url(model, "invoke"), {"inputs": ["fine", 987654, ""]}, format="json"
    )

    error = response.json()["error"]
    assert response.status_code == 400
    assert error["field"] == "inputs[1]" and error["message"] == "inputs[1]: must be a string."
    assert "987654" not in response.content.decode()


def test_invoking_a_model_whose_first_deployment_is_under_way_is_503_with_retry_after(
    tenant_client, model
):
    from django.utils import timezone

    version = ModelVersionFactory(model=model, number=1, package_uri="/tmp/x.tar.gz")
    Deployment.objects.create(
        model=model,
        target_version=version,
        status=Deployment.Status.ROLLING_OUT,
        rollout_started_at=timezone.now(),
    )

    response = tenant_client.post(url(model, "invoke"), {"inputs": ["hi"]}, format="json")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "deployment_in_progress"
    assert 1 <= int(response["Retry-After"]) <= 10


def test_invoking_a_model_whose_deployment_failed_is_409_with_the_reason(tenant_client, model):
    version = ModelVersionFactory(model=model, number=1, package_uri="/tmp/x.tar.gz")
    Deployment.objects.create(
        model=model,
        status=Deployment.Status.FAILED,
        status_reason=f"Rollout of v{version.number} failed: the package is missing.",
    )

    response = tenant_client.post(url(model, "invoke"), {"inputs": ["hi"]}, format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_deployed" and "the package is missing" in error["message"]
    assert "Retry-After" not in response


def test_the_invoke_schema_states_the_limits_the_validation_enforces(api_client, settings):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/tenants/{slug}/models/{name}/invoke"]["post"]
    reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][reference.rsplit("/", 1)[1]]

    inputs = request["properties"]["inputs"]
    assert inputs["maxItems"] == settings.TENANTML_INVOKE_MAX_INPUTS == 1024
    assert inputs["minItems"] == 1
    assert inputs["items"] == {"type": "string", "minLength": 1}
    assert request["required"] == ["inputs"]


def test_rollback_without_an_earlier_deployed_version_is_409(tenant_client, model):
    assert tenant_client.post(url(model, "deployments/rollback")).status_code == 409


def test_draining_needs_a_platform_token(tenant_client):
    assert tenant_client.post("/api/v1/instances/1/drain").status_code == 403
