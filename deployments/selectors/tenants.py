"""Reads for the dashboard's tenant pages: a tenant's models with their versions and deployments."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from deployments.models import Deployment
from models_registry.models import ModelVersion, TenantModel
from tenants.access import Caller
from tenants.models import Tenant
from tenants.selectors import visible_tenants


def tenants_matching(*, caller: Caller, search: str = "") -> QuerySet[Tenant]:
    """The tenants ``caller`` may see whose slug or name contains ``search``, by slug."""
    tenants = visible_tenants(caller=caller).order_by("slug")
    if search:
        tenants = tenants.filter(Q(slug__icontains=search) | Q(name__icontains=search))
    return tenants


def tenant_models_overview(*, tenant: Tenant) -> list[dict]:
    """Each of the tenant's models with its versions (newest first), its deployment (or None)
    and the versions a deployment, promotion or rollback may name."""
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
    rows = []
    for model in models:
        mine = versions.get(model.pk, [])
        deployment = deployments.get(model.pk)
        rows.append(
            {
                "model": model,
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
