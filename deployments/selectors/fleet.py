"""Reads for endpoints, instances and placements: the admin's columns, the fleet's utilization
(the overview and ``/api/v1/fleet/utilization``), lookups and the event log.

Figures are aggregated in the database: a request reads a few rows whatever the fleet's size.
Costs are in ``selectors.costs``, traffic in ``selectors.traffic``, the endpoint pages in
``selectors.endpoints``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db.models import Count, F, FloatField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from config.errors import NotFound
from deployments.models import Deployment, Endpoint, Instance, Placement
from deployments.selectors.costs import fleet_costs, megabytes
from deployments.selectors.traffic import TRAFFIC_WINDOW_MINUTES, traffic_summary
from tenants.access import Caller
from tenants.models import Tenant

# Placements that hold memory on their instance right now.
RESIDENT_STATES = Placement.RESIDENT_STATES


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
    """Endpoints annotated with their live instance count and cost in USD per hour (a SageMaker
    endpoint's instances are its running hosts, mirrored by its backend)."""
    live = ~Q(instances__status=Instance.Status.STOPPED)
    return Endpoint.objects.select_related("instance_type").annotate(
        live_instances=Count("instances", filter=live),
        usd_per_hour=F("instance_type__usd_per_hour") * Count("instances", filter=live),
    )


def endpoint_usd_per_hour(*, endpoint: Endpoint) -> Decimal:
    """The endpoint's catalog price × its live instances."""
    live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
    return endpoint.instance_type.usd_per_hour * live


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


def endpoint_by_name(*, name: str) -> Endpoint:
    endpoint = Endpoint.objects.select_related("instance_type").filter(name=name).first()
    if endpoint is None:
        raise NotFound(f"No endpoint {name!r}.")
    return endpoint


def instance_by_id(*, instance_id: int) -> Instance:
    instance = Instance.objects.select_related("endpoint").filter(pk=instance_id).first()
    if instance is None:
        raise NotFound(f"No instance {instance_id}.")
    return instance


# --- Utilization -------------------------------------------------------------------------------
# The overview and ``/api/v1/fleet/*`` read the same selectors (``fleet_utilization``,
# ``costs.fleet_costs``), so the numbers a person reads and a script reads agree by construction.

# Memory is measured only on instances the platform runs and addresses itself (a local Triton
# process, recorded with its host): copies are placed on them and their resident memory is
# known. A backend's own machines (SageMaker's hosts, mirrored with no host) hold whatever the
# endpoint loads on them, which the platform cannot see; counting their budgets with nothing used
# would dilute the fleet's utilization. They count in instances and cost, never in memory.
MEMORY_BASIS = (
    "memory used and budget over the instances whose memory the platform measures (those it "
    "runs itself); instances a backend runs for an endpoint count in instances and cost only"
)


def memory_is_measured(instance: Instance) -> bool:
    """Whether the platform measures ``instance``'s memory (it runs it, at a recorded host)."""
    return bool(instance.host)


def memory_measured(prefix: str = "") -> Q:
    """``memory_is_measured`` as a filter, on instances or (with ``prefix="instance__"``) on
    rows that point at one."""
    return ~Q(**{f"{prefix}host": ""})


def _type_has_gpu(gpu_count: int, memory_per_gpu_mb: int) -> bool:
    return gpu_count > 0 and memory_per_gpu_mb > 0


def host_budget_mb(instance: Instance) -> float:
    """The host memory models may use on ``instance`` (its budget on CPU-only types)."""
    instance_type = instance.endpoint.instance_type
    return _host_budget(
        instance.memory_budget_mb,
        instance_type.gpu_count,
        instance_type.memory_per_gpu_mb,
        instance_type.host_memory_mb,
        instance.endpoint.target_memory_utilization,
    )


def _host_budget(budget_mb, gpu_count, memory_per_gpu_mb, type_host_mb, target) -> float:
    if not _type_has_gpu(gpu_count, memory_per_gpu_mb):
        return float(budget_mb)
    return type_host_mb * float(target)


def _gpu_budget(gpu_count, memory_per_gpu_mb, target) -> float:
    if not _type_has_gpu(gpu_count, memory_per_gpu_mb):
        return 0.0
    return gpu_count * memory_per_gpu_mb * float(target)


def held_host_mb() -> Coalesce:
    """A copy's measured host memory (on its instance, else its version's, else 0), in SQL."""
    return Coalesce(
        "host_memory_mb", "version__host_memory_mb", Value(0.0), output_field=FloatField()
    )


def held_gpu_mb() -> Coalesce:
    """A copy's measured GPU memory (on its instance, else its version's, else 0), in SQL."""
    return Coalesce(
        "gpu_memory_mb", "version__gpu_memory_mb", Value(0.0), output_field=FloatField()
    )


RESIDENT = Q(actual_state__in=RESIDENT_STATES)
# On a live instance, or held by the endpoint itself.
ON_LIVE_HOLDER = Q(instance__isnull=True) | ~Q(instance__status=Instance.Status.STOPPED)
PLACED = ~Q(desired_state=Placement.DesiredState.UNLOADED)


def measured_budgets() -> dict:
    """Live instances, those whose memory is measured, and their host and GPU budgets."""
    totals = {"instances": 0, "measured": 0, "host_budget_mb": 0.0, "gpu_budget_mb": 0.0}
    for host, budget, gpus, per_gpu, type_host, target in Instance.objects.exclude(
        status=Instance.Status.STOPPED
    ).values_list(
        "host",
        "memory_budget_mb",
        "endpoint__instance_type__gpu_count",
        "endpoint__instance_type__memory_per_gpu_mb",
        "endpoint__instance_type__host_memory_mb",
        "endpoint__target_memory_utilization",
    ):
        totals["instances"] += 1
        if not host:
            continue
        totals["measured"] += 1
        totals["host_budget_mb"] += _host_budget(budget, gpus, per_gpu, type_host, target)
        totals["gpu_budget_mb"] += _gpu_budget(gpus, per_gpu, target)
    return totals


def fleet_utilization(*, caller: Caller, now=None) -> dict:
    """Memory utilization, models loaded vs placed and last hour's traffic.

    A platform caller gets the whole fleet; any other caller its tenants' share: memory its
    models hold and their traffic (budgets are shared, so left out). Instance counts cover every
    live instance, SageMaker's hosts at their running count included; memory used and budget only
    the instances whose memory the platform measures (``MEMORY_BASIS``;
    ``memory_measured_instances`` says how many).
    """
    from django.utils import timezone

    now = now or timezone.now()
    fleet = caller.is_platform
    placements = Placement.objects.all()
    if not fleet:
        placements = placements.filter(version__model__tenant_id__in=caller.tenant_ids)
    held = RESIDENT & ON_LIVE_HOLDER
    # The fleet's memory is what its measured instances hold; a tenant's, what its copies hold.
    in_memory = held & Q(instance__isnull=False) & memory_measured("instance__") if fleet else held
    figures = placements.aggregate(
        loaded=Count("id", filter=held),
        placed=Count("id", filter=PLACED),
        host_used=Sum(held_host_mb(), filter=in_memory),
        gpu_used=Sum(held_gpu_mb(), filter=in_memory),
    )
    host_used = figures["host_used"] or 0.0
    gpu_used = figures["gpu_used"] or 0.0
    if fleet:
        budgets = measured_budgets()
        instance_count = budgets["instances"]
        measured_count: int | None = budgets["measured"]
        host_budget: float | None = budgets["host_budget_mb"]
        gpu_budget: float | None = budgets["gpu_budget_mb"]
    else:
        host_budget = gpu_budget = measured_count = None
        instance_count = _instances_holding(placements.filter(held))
    traffic = traffic_summary(caller=caller, since=now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES))
    tenant_slugs = sorted(
        Tenant.objects.filter(pk__in=caller.tenant_ids).values_list("slug", flat=True)
    )
    return {
        "scope": "fleet" if fleet else "tenant",
        "tenants": tenant_slugs,
        "window_minutes": TRAFFIC_WINDOW_MINUTES,
        "instances": instance_count,
        "memory_measured_instances": measured_count,
        "memory_basis": MEMORY_BASIS,
        "host_memory_used_mb": megabytes(host_used),
        "host_memory_budget_mb": megabytes(host_budget) if host_budget is not None else None,
        "host_memory_utilization": fraction(host_used, host_budget or 0),
        "gpu_memory_used_mb": megabytes(gpu_used),
        "gpu_memory_budget_mb": megabytes(gpu_budget) if gpu_budget is not None else None,
        "gpu_memory_utilization": fraction(gpu_used, gpu_budget or 0),
        "models_loaded": figures["loaded"],
        "models_placed": figures["placed"],
        "invocations_last_hour": traffic["invocations"],
        "invocations_per_minute": traffic["invocations_per_minute"],
        "cold_starts_last_hour": traffic["cold_starts"],
        "errors_last_hour": traffic["errors"],
        "p50_latency_ms_last_hour": traffic["p50_latency_ms"],
        "p99_latency_ms_last_hour": traffic["p99_latency_ms"],
        "p99_latency_above_slowest_bucket": traffic["p99_latency_above_slowest_bucket"],
    }


def _instances_holding(resident: QuerySet[Placement]) -> int:
    """Live instances holding these copies: their own, and for a copy its endpoint places itself,
    that endpoint's instances."""
    on_instances = set(
        resident.filter(instance__isnull=False).values_list("instance_id", flat=True).distinct()
    )
    endpoints = resident.filter(instance__isnull=True).values("endpoint_id")
    on_endpoints = set(
        Instance.objects.exclude(status=Instance.Status.STOPPED)
        .filter(endpoint_id__in=endpoints)
        .values_list("pk", flat=True)
    )
    return len(on_instances | on_endpoints)


def fraction(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` to 4 places; None without a denominator."""
    return round(numerator / denominator, 4) if denominator > 0 else None


def fleet_figures(*, caller: Caller, now=None) -> dict:
    """The overview's figures: ``{"utilization": ..., "costs": ...}``, exactly what
    ``/api/v1/fleet/utilization`` and ``/api/v1/fleet/costs`` return to the same caller."""
    return {
        "utilization": fleet_utilization(caller=caller, now=now),
        "costs": fleet_costs(caller=caller),
    }


def events_for_caller(
    *, caller: Caller, kind_prefix: str = "", severity: str = "", tenant_slug: str = ""
) -> QuerySet:
    """Events the caller may see (members: only their tenants'), newest first, filtered."""
    from deployments.models import Event

    events = Event.objects.select_related("tenant", "endpoint", "version__model")
    if not caller.is_platform:
        events = events.filter(tenant_id__in=caller.tenant_ids)
    if kind_prefix:
        events = events.filter(kind__startswith=kind_prefix)
    if severity:
        events = events.filter(severity=severity)
    if tenant_slug:
        events = events.filter(tenant__slug=tenant_slug)
    return events.order_by("-created_at", "-id")
