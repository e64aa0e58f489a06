"""Registry API: datasets, models, versions, training jobs, promotion; scoped by token."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from models_registry.dataset_files import MAX_FILE_BYTES
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import Dataset, TenantModel, TrainingJob
from models_registry.services.datasets import create_dataset
from models_registry.services.promotion import promote_version
from tests.factories import ModelVersionFactory, TenantModelFactory, TrainingJobFactory

pytestmark = pytest.mark.django_db


def tickets_file(name: str = "tickets.csv", rows: int = 60) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, to_csv(generate_tickets("zoomride", rows=rows, seed=0)))


def upload(client, slug: str, file, **fields):
    return client.post(
        f"/api/v1/tenants/{slug}/datasets/", {"file": file, **fields}, format="multipart"
    )


def assert_names_field(response, field: str, status: int = 400) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert field == error.get("field") or field in (error.get("fields") or {})
    return error


@pytest.fixture
def dataset(tenant):
    content = to_csv(generate_tickets("zoomride", rows=60, seed=0))
    return create_dataset(tenant=tenant, name="tickets.csv", content=content, actor="t")


@pytest.fixture
def model(tenant):
    return TenantModelFactory(tenant=tenant, name="intents")


# --- Datasets ---


def test_uploading_a_dataset_answers_its_rows_labels_and_split(tenant_client, tenant):
    response = upload(tenant_client, tenant.slug, tickets_file())
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "tickets.csv" and body["rows"] == 60
    assert sum(body["labels"].values()) == 60
    assert body["train_rows"] + body["validation_rows"] == 60 and body["validation_rows"] >= 6
    listing = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/datasets/").json()
    assert [d["name"] for d in listing["results"]] == ["tickets.csv"]


def test_an_upload_can_be_named(tenant_client, tenant):
    response = upload(tenant_client, tenant.slug, tickets_file("export.csv"), name="march")
    assert response.status_code == 201
    assert Dataset.objects.get(tenant=tenant).name == "march"


def test_an_invalid_file_is_a_400_naming_row_and_field(tenant_client, tenant):
    bad = SimpleUploadedFile("bad.csv", b"text,label\n,refund\nhello,refund\n")
    error = assert_names_field(upload(tenant_client, tenant.slug, bad), "file")
    assert "row 2, field text: empty" in error["message"]
    assert not Dataset.objects.exists()


def test_an_upload_without_a_file_is_a_400_naming_file(tenant_client, tenant):
    response = tenant_client.post(f"/api/v1/tenants/{tenant.slug}/datasets/", {"name": "x"})
    assert_names_field(response, "file")


def test_a_file_over_the_limit_is_a_413(tenant_client, tenant):
    huge = SimpleUploadedFile("huge.csv", b"text,label\n" + b"a,b\n" * (MAX_FILE_BYTES // 4 + 1))
    error = assert_names_field(upload(tenant_client, tenant.slug, huge), "file", status=413)
    assert "MB" in error["message"] and "limit" in error["message"]


def test_a_duplicate_dataset_name_is_a_409_naming_name(tenant_client, tenant, dataset):
    assert_names_field(upload(tenant_client, tenant.slug, tickets_file()), "name", status=409)


# --- Models and versions ---


def test_creating_listing_and_reading_a_model(tenant_client, tenant):
    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/",
        {"name": "intents", "kind": "intent-classifier"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["active_version"] is None
    listing = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/models/").json()
    assert [m["name"] for m in listing["results"]] == ["intents"]
    detail = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/models/intents/").json()
    assert detail["kind"] == "intent-classifier"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "kind": "llm"}, "kind"),
        ({"kind": "embedding"}, "name"),
        ({"name": "Bad Name!", "kind": "embedding"}, "name"),
        ({"name": "x"}, "kind"),
    ],
)
def test_invalid_model_input_is_a_400_naming_the_field(tenant_client, tenant, payload, field):
    response = tenant_client.post(f"/api/v1/tenants/{tenant.slug}/models/", payload, format="json")
    assert_names_field(response, field)
    assert not TenantModel.objects.exists()


def test_a_duplicate_model_is_a_409(tenant_client, tenant, model):
    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/",
        {"name": "intents", "kind": "embedding"},
        format="json",
    )
    assert_names_field(response, "name", status=409)


def test_versions_show_status_metrics_and_which_is_active(tenant_client, tenant, model):
    active = ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.9})
    ModelVersionFactory(model=model, number=2, metrics={"macro_f1": 0.5})
    promote_version(version=active, actor="t")
    listing = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/models/intents/versions/").json()
    versions = listing["results"]
    assert [(v["number"], v["is_active"]) for v in versions] == [(2, False), (1, True)]
    assert versions[1]["metrics"] == {"macro_f1": 0.9}
    assert {"sha256", "size_bytes", "host_memory_mb", "status_reason", "promoted_at"} <= set(
        versions[0]
    )


def test_promote_applies_the_gate_and_force_needs_a_platform_token(
    tenant_client, platform_token, tenant, model
):
    # A client of its own: the shared fixtures configure one APIClient.
    platform_client = APIClient()
    platform_client.credentials(HTTP_AUTHORIZATION=f"Bearer {platform_token}")
    base = f"/api/v1/tenants/{tenant.slug}/models/intents"
    ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.9})
    ModelVersionFactory(model=model, number=2, metrics={"macro_f1": 0.6})
    first = tenant_client.post(f"{base}/versions/1/promote", {}, format="json")
    assert first.status_code == 200 and first.json()["is_active"]
    held = tenant_client.post(f"{base}/versions/2/promote", {}, format="json")
    assert held.status_code == 409 and held.json()["error"]["code"] == "quality_gate_failed"
    forced = tenant_client.post(f"{base}/versions/2/promote", {"force": True}, format="json")
    assert_names_field(forced, "force", status=403)
    operator = platform_client.post(f"{base}/versions/2/promote", {"force": True}, format="json")
    assert operator.status_code == 200 and operator.json()["is_active"]
    assert tenant_client.post(f"{base}/versions/9/promote", {}).status_code == 404


def test_rollback_reactivates_the_previous_version(tenant_client, tenant, model):
    base = f"/api/v1/tenants/{tenant.slug}/models/intents"
    for number in (1, 2):
        version = ModelVersionFactory(model=model, number=number, metrics={"macro_f1": 0.9})
        promote_version(version=version, actor="t")
    response = tenant_client.post(f"{base}/rollback")
    assert response.status_code == 200 and response.json()["number"] == 1
    assert tenant_client.get(f"{base}/").json()["active_version"] == 1
    assert tenant_client.post(f"{base}/rollback").status_code == 409


# --- Training jobs ---


def start(client, slug: str, payload: dict, **headers):
    return client.post(
        f"/api/v1/tenants/{slug}/models/intents/training-jobs/", payload, format="json", **headers
    )


def test_starting_training_answers_202_with_the_job(tenant_client, tenant, model, dataset):
    response = start(tenant_client, tenant.slug, {"dataset": "tickets.csv"})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["status"], body["progress_pct"], body["version"]) == ("queued", 0, None)
    assert body["dataset"] == "tickets.csv" and body["model"] == "intents"
    by_id = start(tenant_client, tenant.slug, {"dataset": str(dataset.pk)})
    assert by_id.json()["id"] == body["id"]  # the same inputs: the same job
    listing = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/models/intents/training-jobs/")
    assert [job["id"] for job in listing.json()["results"]] == [body["id"]]
    detail = tenant_client.get(f"/api/v1/training-jobs/{body['id']}/")
    assert detail.status_code == 200 and detail.json()["status"] == "queued"


def test_the_same_idempotency_key_gives_the_same_job(tenant_client, tenant, model, dataset):
    payload = {"dataset": "tickets.csv", "hyperparameters": {"epochs": 3}}
    first = start(tenant_client, tenant.slug, payload, HTTP_IDEMPOTENCY_KEY="k-1")
    second = start(tenant_client, tenant.slug, payload, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert TrainingJob.objects.count() == 1
    other = start(
        tenant_client, tenant.slug, {"dataset": "tickets.csv"}, HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert_names_field(other, "idempotency_key", status=409)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "dataset"),
        ({"dataset": "nope.csv"}, "dataset"),
        ({"dataset": "tickets.csv", "hyperparameters": {"layers": [1]}}, "hyperparameters"),
        ({"dataset": "tickets.csv", "hyperparameters": "fast"}, "hyperparameters"),
        ({"dataset": "tickets.csv", "backend": "mainframe"}, "backend"),
    ],
)
def test_invalid_training_input_is_a_400_naming_the_field(
    tenant_client, tenant, model, dataset, payload, field
):
    assert_names_field(start(tenant_client, tenant.slug, payload), field)
    assert not TrainingJob.objects.exists()


def test_another_tenants_dataset_cannot_be_used(tenant_client, tenant, model, other_tenant):
    foreign = create_dataset(
        tenant=other_tenant,
        name="theirs.csv",
        content=to_csv(generate_tickets("zoomride", rows=60, seed=1)),
        actor="t",
    )
    response = start(tenant_client, tenant.slug, {"dataset": str(foreign.pk)})
    assert_names_field(response, "dataset")


def test_cancelling_a_queued_job(tenant_client, tenant, model, dataset):
    job_id = start(tenant_client, tenant.slug, {"dataset": "tickets.csv"}).json()["id"]
    response = tenant_client.post(f"/api/v1/training-jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    again = tenant_client.post(f"/api/v1/training-jobs/{job_id}/cancel")
    assert again.status_code == 409


# --- Tenant isolation ---


def test_another_tenants_registry_answers_404(tenant_client, other_tenant):
    theirs = TenantModelFactory(tenant=other_tenant, name="intents")
    job = TrainingJobFactory(model=theirs)
    ModelVersionFactory(model=theirs, number=1)
    base = f"/api/v1/tenants/{other_tenant.slug}"
    for response in (
        tenant_client.get(f"{base}/datasets/"),
        tenant_client.get(f"{base}/models/"),
        tenant_client.get(f"{base}/models/intents/"),
        tenant_client.get(f"{base}/models/intents/versions/"),
        tenant_client.post(f"{base}/models/intents/versions/1/promote", {}),
        tenant_client.post(f"{base}/models/intents/rollback"),
        tenant_client.get(f"/api/v1/training-jobs/{job.pk}/"),
        tenant_client.post(f"/api/v1/training-jobs/{job.pk}/cancel"),
    ):
        assert response.status_code == 404, response.content
    job.refresh_from_db()
    assert not job.cancel_requested


def test_a_platform_token_sees_every_tenants_jobs(platform_client, other_tenant):
    job = TrainingJobFactory(model=TenantModelFactory(tenant=other_tenant))
    response = platform_client.get(f"/api/v1/training-jobs/{job.pk}/")
    assert response.status_code == 200 and response.json()["tenant"] == other_tenant.slug
    listing = platform_client.get(f"/api/v1/tenants/{other_tenant.slug}/models/")
    assert listing.status_code == 200


def test_the_registry_routes_are_in_the_openapi_schema(platform_client):
    schema = platform_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/tenants/{slug}/models/{name}/training-jobs/" in paths
    assert "/api/v1/training-jobs/{job_id}/" in paths
