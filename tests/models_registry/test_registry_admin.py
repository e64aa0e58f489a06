"""Operator admin for the registry: dataset upload, promotion and rollback through services."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import Dataset, ModelVersion, TenantModel
from tests.factories import ModelVersionFactory, TenantModelFactory

pytestmark = pytest.mark.django_db


def test_uploading_a_dataset_in_the_admin_goes_through_the_service(admin_client, tenant):
    content = to_csv(generate_tickets("zoomride", rows=60, seed=0))
    response = admin_client.post(
        reverse("admin:models_registry_dataset_add"),
        {"tenant": tenant.pk, "name": "tickets.csv", "file": SimpleUploadedFile("t.csv", content)},
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    dataset = Dataset.objects.get(tenant=tenant)
    assert dataset.rows == 60 and len(dataset.split["validation"]) >= 8


def test_an_invalid_upload_shows_the_problem_on_the_form(admin_client, tenant):
    response = admin_client.post(
        reverse("admin:models_registry_dataset_add"),
        {
            "tenant": tenant.pk,
            "name": "bad.csv",
            "file": SimpleUploadedFile("bad.csv", b"text,label\n,refund\n"),
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "row 2, field text: empty" in errors["file"][0]
    assert not Dataset.objects.exists()


def test_promote_and_roll_back_actions(admin_client, tenant):
    model = TenantModelFactory(tenant=tenant)
    first = ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.8})
    second = ModelVersionFactory(model=model, number=2, metrics={"macro_f1": 0.8})
    for version in (first, second):
        admin_client.post(
            reverse("admin:models_registry_modelversion_changelist"),
            {"action": "promote", "_selected_action": [version.pk]},
        )
    model.refresh_from_db()
    assert model.active_version == second
    admin_client.post(
        reverse("admin:models_registry_tenantmodel_changelist"),
        {"action": "roll_back", "_selected_action": [model.pk]},
    )
    assert TenantModel.objects.get(pk=model.pk).active_version == first
    assert ModelVersion.objects.get(pk=second.pk).promoted_at is None
