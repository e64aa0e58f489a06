"""Reads for endpoints, instances and placements (admin columns, dashboard, cost)."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, F, FloatField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from config.errors import NotFound
from deployments.models import Deployment, Endpoint, Instance, Placement

# Placements that hold memory on their instance right now.
RESIDENT_STATES = (Placement.ActualState.LOADED, Placement.ActualState.LOADING)


def instances_with_memory_use() -> QuerySet[Instance]:
    """Instances annotated with ``memory_used_mb`` and ``models_loaded`` (resident placements)."""
    resident = Q(placements__actual_state__in=RESIDENT_STATES)
    return Instance.objects.select_related("endpoint", "endpoint__instance_type").annotate(
        memory_used_mb=Coalesce(
            Sum(
                Coalesce(
                    "placements__host_memory_mb",
                    "placements__version__host_memory_mb",
                    output_field=FloatField(),
                ),
                filter=resident,
            ),
            Value(0.0),
            output_field=FloatField(),
        ),
        models_loaded=Count("placements", filter=resident),
    )


def endpoints_with_cost() -> QuerySet[Endpoint]:
    """Endpoints annotated with their live instance count and cost in USD per hour."""
    live = ~Q(instances__status=Instance.Status.STOPPED)
    return Endpoint.objects.select_related("instance_type").annotate(
        live_instances=Count("instances", filter=live),
        usd_per_hour=F("instance_type__usd_per_hour") * Count("instances", filter=live),
    )


def endpoint_usd_per_hour(*, endpoint: Endpoint) -> Decimal:
    live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
    return endpoint.instance_type.usd_per_hour * live


def fleet_overview() -> list[dict]:
    """The headline figures of the landing page, as ``{"label", "value"}`` rows."""
    from models_registry.models import ModelVersion, TenantModel
    from tenants.models import Tenant

    live_instances = Instance.objects.exclude(status=Instance.Status.STOPPED)
    hourly = sum(
        (
            instance.endpoint.instance_type.usd_per_hour
            for instance in live_instances.select_related("endpoint__instance_type")
        ),
        Decimal("0"),
    )
    return [
        {"label": "active tenants", "value": Tenant.objects.filter(status="active").count()},
        {"label": "tenant models", "value": TenantModel.objects.count()},
        {
            "label": "versions ready to serve",
            "value": ModelVersion.objects.filter(status=ModelVersion.Status.READY).count(),
        },
        {
            "label": "endpoints in service",
            "value": Endpoint.objects.filter(status=Endpoint.Status.IN_SERVICE).count(),
        },
        {
            "label": "models loaded",
            "value": Placement.objects.filter(actual_state__in=RESIDENT_STATES).count(),
        },
        {"label": "fleet cost per hour", "value": f"${hourly:,.2f}"},
    ]


def deployment_for_model(*, model) -> Deployment:
    """The model's deployment; 404 when it was never deployed."""
    deployment = (
        Deployment.objects.select_related(
            "model__tenant", "endpoint", "live_version", "target_version", "previous_version"
        )
        .filter(model=model)
        .first()
    )
    if deployment is None:
        raise NotFound(f"{model} has not been deployed.")
    return deployment


def instance_by_id(*, instance_id: int) -> Instance:
    instance = Instance.objects.select_related("endpoint").filter(pk=instance_id).first()
    if instance is None:
        raise NotFound(f"No instance {instance_id}.")
    return instance
