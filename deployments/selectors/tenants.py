"""Reads for the dashboard's tenant pages: a tenant's models with their versions and deployments."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from deployments.models import Deployment
from deployments.selectors.generation import generation_by_version, kind_generates
from models_registry.models import ModelVersion, TenantModel
from tenants.access import Caller
from tenants.models import Tenant
from tenants.selectors import visible_tenants

# The window a generating model's figures (time to first token, tokens a second) cover.
GENERATION_WINDOW = timedelta(hours=1)


def tenants_matching(*, caller: Caller, search: str = "") -> QuerySet[Tenant]:
    """The tenants ``caller`` may see whose slug or name contains ``search``, by slug."""
    tenants = visible_tenants(caller=caller).order_by("slug")
    if search:
        tenants = tenants.filter(Q(slug__icontains=search) | Q(name__icontains=search))
    return tenants


def tenant_models_overview(*, tenant: Tenant) -> list[dict]:
    """Each of the tenant's models with its versions (newest first), its deployment (or None)
    and the versions a deployment, promotion or rollback may name; a generating model's
    versions carry their last hour's ``generation`` figures (None where they generated
    nothing)."""
    models = list(
        TenantModel.objects.filter(tenant=tenant)
        .select_related("tenant", "active_version")
        .order_by("name")
    )
    versions: dict[int, list[ModelVersion]] = {}
    for version in ModelVersion.objects.filter(model__in=models).order_by("model_id", "-number"):
        versions.setdefault(version.model_id, []).append(version)
    deployments = {
        d.model_id: d
        for d in Deployment.objects.filter(model__in=models).select_related(
            "endpoint", "live_version", "target_version", "previous_version"
        )
    }
    generating = [m for m in models if kind_generates(m.kind)]
    generation = generation_by_version(
        version_ids=[v.pk for m in generating for v in versions.get(m.pk, [])],
        since=timezone.now() - GENERATION_WINDOW,
    )
    rows = []
    for model in models:
        mine = versions.get(model.pk, [])
        deployment = deployments.get(model.pk)
        for version in mine:
            version.generation = generation.get(version.pk)
        rows.append(
            {
                "model": model,
                "generates": model in generating,
                "versions": mine,
                "deployable_versions": [
                    v for v in mine if v.status == ModelVersion.Status.READY and v.package_uri
                ],
                "deployment": deployment,
                "can_roll_back": bool(deployment and deployment.previous_version_id),
                "can_retire": bool(deployment and deployment.status != Deployment.Status.RETIRED),
            }
        )
    return rows
