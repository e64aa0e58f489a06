"""Reads for the registry API, scoped to a tenant the caller may already see."""

from __future__ import annotations

from django.db.models import QuerySet

from models_registry.exceptions import (
    InvalidDataset,
    ModelNotFound,
    TrainingJobNotFound,
    VersionNotFound,
)
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from tenants.access import Caller
from tenants.models import Tenant


def datasets_for_tenant(*, tenant: Tenant) -> QuerySet[Dataset]:
    """The tenant's datasets, newest first (ties by id, newest first)."""
    return Dataset.objects.filter(tenant=tenant).order_by("-created_at", "-pk")


def dataset_for_training(*, tenant: Tenant, reference: str | int) -> Dataset:
    """A tenant's dataset by id or name; an unknown one is a 400 naming ``dataset``."""
    reference = str(reference).strip()
    datasets = datasets_for_tenant(tenant=tenant)
    found = datasets.filter(name=reference).first()
    if found is None and reference.isdigit():
        found = datasets.filter(pk=int(reference)).first()
    if found is None:
        raise InvalidDataset(f"No dataset {reference!r} for tenant {tenant.slug}.", field="dataset")
    return found


def models_for_tenant(*, tenant: Tenant) -> QuerySet[TenantModel]:
    """The tenant's models by name (unique per tenant)."""
    return (
        TenantModel.objects.filter(tenant=tenant)
        .select_related("tenant", "active_version")
        .order_by("name")
    )


def model_for_tenant(*, tenant: Tenant, name: str) -> TenantModel:
    model = models_for_tenant(tenant=tenant).filter(name=name).first()
    if model is None:
        raise ModelNotFound(f"No model {name!r} for tenant {tenant.slug}.")
    return model


def versions_for_model(*, model: TenantModel, status: str = "") -> QuerySet[ModelVersion]:
    """The model's versions, newest number first; only those in ``status`` when one is given."""
    versions = model.versions.select_related("model").order_by("-number")
    return versions.filter(status=status) if status else versions


def version_for_model(*, model: TenantModel, number: int) -> ModelVersion:
    version = versions_for_model(model=model).filter(number=number).first()
    if version is None:
        raise VersionNotFound(f"No version {number} of {model}.")
    return version


def training_jobs_for_model(*, model: TenantModel, status: str = "") -> QuerySet[TrainingJob]:
    """The model's training jobs, newest first (ties by id, newest first); only those in
    ``status`` when one is given."""
    jobs = (
        TrainingJob.objects.filter(model=model)
        .select_related("model__tenant", "dataset", "version")
        .order_by("-created_at", "-pk")
    )
    return jobs.filter(status=status) if status else jobs


def training_job_for_caller(*, caller: Caller, job_id: int) -> TrainingJob:
    """A job the caller may see; another tenant's job answers like a missing one (404)."""
    job = (
        TrainingJob.objects.select_related("model__tenant", "dataset", "version")
        .filter(pk=job_id)
        .first()
    )
    if job is None or not caller.can_see(job.model.tenant_id):
        raise TrainingJobNotFound(f"No training job {job_id}.")
    return job


# --- Dashboard --------------------------------------------------------------------------------


def training_jobs_for_tenant(*, tenant: Tenant, limit: int = 20) -> list[TrainingJob]:
    """The tenant's most recent training jobs, newest first."""
    return list(
        TrainingJob.objects.filter(model__tenant=tenant)
        .select_related("model__tenant", "dataset", "version")
        .order_by("-created_at", "-pk")[:limit]
    )


def training_job_for_tenant(*, tenant: Tenant, job_id: int) -> TrainingJob:
    """One of the tenant's training jobs; another tenant's answers like a missing one."""
    job = (
        TrainingJob.objects.select_related("model__tenant", "dataset", "version")
        .filter(pk=job_id, model__tenant=tenant)
        .first()
    )
    if job is None:
        raise TrainingJobNotFound(f"No training job {job_id}.")
    return job
