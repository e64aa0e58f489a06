"""The operator admin for datasets, models, versions and training jobs: computed columns right,
actions and forms call services. (Dataset upload, promotion and rollback: test_registry_admin.)"""

from __future__ import annotations

from django.contrib import messages

from deployments.models import Event
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from tenants.models import Tenant
from tests.admin_support import (
    AppAdminChecks,
    BusyChangelistChecks,
    admin_url,
    messages_of,
    run_action,
)
from tests.factories import TrainingJobFactory


class TestEveryModelsRegistryModel(AppAdminChecks, BusyChangelistChecks):
    app_label = "models_registry"
    busy_models = [ModelVersion, TrainingJob]
    expected_models = {Dataset, TenantModel, TrainingJob, ModelVersion}
    no_add = {TrainingJob, ModelVersion}


def test_model_version_shows_tenant_memory_and_metrics(admin_client, everything):
    response = admin_client.get(admin_url(ModelVersion, "changelist"))

    content = response.content.decode()
    assert everything[Tenant].slug in content
    assert "111 MB host" in content
    assert "accuracy 0.9344" in content


def test_training_job_shows_progress_as_percentage(admin_client, db):
    TrainingJobFactory(status=TrainingJob.Status.RUNNING, progress_pct=42)

    response = admin_client.get(admin_url(TrainingJob, "changelist"))

    assert "42 %" in response.content.decode()


def test_cancel_action_cancels_queued_job(admin_client, db):
    job = TrainingJobFactory(status=TrainingJob.Status.QUEUED)

    run_action(admin_client, TrainingJob, "cancel_jobs", [job])

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.CANCELLED


def test_cancel_action_leaves_finished_job_and_warns(admin_client, db):
    job = TrainingJobFactory(status=TrainingJob.Status.SUCCEEDED)

    response = run_action(admin_client, TrainingJob, "cancel_jobs", [job], follow=True)

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED
    assert not job.cancel_requested
    warnings = [m for m in messages_of(response) if m.level == messages.WARNING]
    assert len(warnings) == 1
    assert "succeeded" in warnings[0].message


def test_adding_a_model_goes_through_the_service(admin_client, tenant):
    response = admin_client.post(
        admin_url(TenantModel, "add"),
        {
            "tenant": tenant.pk,
            "name": "intents",
            "kind": "intent-classifier",
            "description": "Routes tickets.",
        },
    )

    assert response.status_code == 302
    model = TenantModel.objects.get(tenant=tenant, name="intents")
    assert model.kind == "intent-classifier"
    assert Event.objects.filter(kind="model.created", tenant=tenant).exists()


def test_model_add_form_rejects_unregistered_kind(admin_client, tenant):
    response = admin_client.post(
        admin_url(TenantModel, "add"),
        {"tenant": tenant.pk, "name": "intents", "kind": "no-such-kind", "description": ""},
    )

    assert response.status_code == 200
    assert "kind" in response.context["adminform"].form.errors
    assert not TenantModel.objects.exists()
