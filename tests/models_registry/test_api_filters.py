"""A model's versions and training jobs filtered by status (``?status=``), in the lists' order
and pages; an unknown status is a 400 naming the parameter."""

from __future__ import annotations

import pytest

from models_registry.models import ModelVersion, TrainingJob
from tests.factories import ModelVersionFactory, TenantModelFactory, TrainingJobFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(tenant):
    return TenantModelFactory(tenant=tenant, name="intents")


def base(model) -> str:
    return f"/api/v1/tenants/{model.tenant.slug}/models/{model.name}"


def test_versions_filtered_by_status(tenant_client, model):
    statuses = ["ready", "failed", "ready", "retired", "ready"]
    for number, status in enumerate(statuses, start=1):
        ModelVersionFactory(model=model, number=number, status=status)
    ModelVersionFactory(model=TenantModelFactory(tenant=model.tenant), number=1, status="ready")

    ready = tenant_client.get(f"{base(model)}/versions/?status=ready").json()
    failed = tenant_client.get(f"{base(model)}/versions/?status=failed").json()
    packaging = tenant_client.get(f"{base(model)}/versions/?status=packaging").json()

    assert [v["number"] for v in ready["results"]] == [5, 3, 1] and ready["count"] == 3
    assert [v["number"] for v in failed["results"]] == [2]
    assert packaging == {"count": 0, "next": None, "previous": None, "results": []}


def test_training_jobs_filtered_by_status_keep_their_order_and_pages(tenant_client, model):
    for status in ["failed", "succeeded", "running", "succeeded", "succeeded"]:
        TrainingJobFactory(model=model, status=status)
    TrainingJobFactory(model=TenantModelFactory(tenant=model.tenant), status="succeeded")
    newest_first = list(
        TrainingJob.objects.filter(model=model, status="succeeded")
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    )

    first = tenant_client.get(f"{base(model)}/training-jobs/?status=succeeded&limit=2").json()
    second = tenant_client.get(first["next"]).json()
    running = tenant_client.get(f"{base(model)}/training-jobs/?status=running").json()

    assert first["count"] == 3
    assert [j["id"] for j in first["results"] + second["results"]] == newest_first
    assert all(j["status"] == "succeeded" for j in first["results"] + second["results"])
    assert [j["status"] for j in running["results"]] == ["running"]


@pytest.mark.parametrize("listing", ["versions", "training-jobs"])
@pytest.mark.parametrize("value", ["done", "READY", "", "x" * 5000])
def test_an_unknown_status_is_a_400_naming_status(tenant_client, model, listing, value):
    response = tenant_client.get(f"{base(model)}/{listing}/", {"status": value})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "status" and "status" in error["message"]
    assert len(response.content) < 500


def test_every_status_a_version_or_job_can_have_is_a_filter(tenant_client, model):
    for status in ModelVersion.Status.values:
        assert tenant_client.get(f"{base(model)}/versions/?status={status}").status_code == 200
    for status in TrainingJob.Status.values:
        url = f"{base(model)}/training-jobs/?status={status}"
        assert tenant_client.get(url).status_code == 200
