"""Reads for endpoints, instances and placements (admin columns, dashboard, cost)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db.models import Count, F, FloatField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from config.errors import NotFound
from deployments.models import Deployment, Endpoint, Instance, Placement
from deployments.placement.rows import (
    held_gpu_memory_mb,
    held_memory_mb,
    instance_spec,
    placed_spec,
)
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


# --- Dashboard and fleet API ------------------------------------------------------------------
# One selector (``fleet_figures``) feeds both the overview page and ``/api/v1/fleet/*``, so the
# numbers a person reads and the numbers a script reads are the same by construction.

HOURS_PER_MONTH = 730
TRAFFIC_WINDOW_MINUTES = 60
SAVINGS_FORMULA = "savings = 1 − actual hourly cost / dedicated hourly cost"


def _money(value: float) -> float:
    return round(float(value), 4)


def _mb(value: float) -> float:
    return round(float(value), 1)


def _fraction(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator > 0 else None


def _type_has_gpu(instance_type) -> bool:
    return instance_type.gpu_count > 0 and instance_type.memory_per_gpu_mb > 0


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


def host_budget_mb(instance: Instance) -> float:
    """The host memory models may use on ``instance`` (its budget on CPU-only types)."""
    instance_type = instance.endpoint.instance_type
    if not _type_has_gpu(instance_type):
        return float(instance.memory_budget_mb)
    return instance_type.host_memory_mb * float(instance.endpoint.target_memory_utilization)


def gpu_budget_mb(instance: Instance) -> float:
    """The GPU memory models may use on ``instance`` at its endpoint's target; 0 without GPUs."""
    instance_type = instance.endpoint.instance_type
    if not _type_has_gpu(instance_type):
        return 0.0
    return instance_type.gpu_memory_mb * float(instance.endpoint.target_memory_utilization)


def _live_instances() -> list[Instance]:
    resident = Q(placements__actual_state__in=RESIDENT_STATES)
    return list(
        instances_with_memory_use()
        .exclude(status=Instance.Status.STOPPED)
        .annotate(
            gpu_memory_used_mb=Coalesce(
                Sum(
                    Coalesce(
                        "placements__gpu_memory_mb",
                        "placements__version__gpu_memory_mb",
                        output_field=FloatField(),
                    ),
                    filter=resident,
                ),
                Value(0.0),
                output_field=FloatField(),
            )
        )
        .order_by("endpoint__name", "ordinal")
    )


def _scoped_placements(caller: Caller) -> QuerySet[Placement]:
    placements = Placement.objects.select_related(
        "version__model__tenant", "endpoint__instance_type", "instance"
    )
    if not caller.is_platform:
        placements = placements.filter(version__model__tenant_id__in=caller.tenant_ids)
    return placements


def traffic_summary(*, caller: Caller, since, endpoint: Endpoint | None = None) -> dict:
    """Invocations, cold starts, errors and p50/p99 latency since ``since`` (summed histograms)."""
    from deployments.models import VersionUsageMinute
    from deployments.usage import LATENCY_BUCKETS_MS, percentile_from_histogram

    rows = VersionUsageMinute.objects.filter(minute__gte=since)
    if not caller.is_platform:
        rows = rows.filter(tenant_id__in=caller.tenant_ids)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    invocations = cold_starts = errors = 0
    histogram: dict[str, int] = {}
    for row in rows.values("invocations", "cold_starts", "errors", "latency_histogram"):
        invocations += row["invocations"]
        cold_starts += row["cold_starts"]
        errors += row["errors"]
        for bucket, count in (row["latency_histogram"] or {}).items():
            histogram[bucket] = histogram.get(bucket, 0) + int(count)
    slowest_bound = float(LATENCY_BUCKETS_MS[-1])

    def bounded(pct: float) -> float | None:
        value = percentile_from_histogram(histogram, pct)
        # JSON has no infinity: the slowest bucket is reported as its lower bound, flagged.
        return slowest_bound if value == float("inf") else value

    p99 = percentile_from_histogram(histogram, 99)
    return {
        "invocations": invocations,
        "invocations_per_minute": round(invocations / TRAFFIC_WINDOW_MINUTES, 2),
        "cold_starts": cold_starts,
        "errors": errors,
        "p50_latency_ms": bounded(50),
        "p99_latency_ms": bounded(99),
        "p99_latency_above_slowest_bucket": p99 == float("inf"),
    }


def _catalog_specs() -> list:
    from deployments.models import InstanceType

    return [instance_spec(t) for t in InstanceType.objects.filter(available=True)]


def placed_model_specs(*, caller: Caller, replicas: int | None = None, requests_since=None) -> list:
    """One ``ModelSpec`` per placed version (measured memory, its copy count as replicas)."""
    from deployments.models import VersionUsageMinute

    placed = _scoped_placements(caller).exclude(desired_state=Placement.DesiredState.UNLOADED)
    by_version: dict[int, dict] = {}
    for placement in placed:
        entry = by_version.setdefault(
            placement.version_id,
            {"placement": placement, "copies": 0, "pinned": False},
        )
        entry["copies"] += placement.copies or 1
        entry["pinned"] = entry["pinned"] or placement.is_pinned
    requests: dict[int, int] = {}
    if requests_since is not None and by_version:
        for row in (
            VersionUsageMinute.objects.filter(
                minute__gte=requests_since, version_id__in=list(by_version)
            )
            .values("version_id")
            .annotate(total=Sum("invocations"))
        ):
            requests[row["version_id"]] = row["total"] or 0
    specs = []
    for version_id in sorted(by_version):
        entry = by_version[version_id]
        specs.append(
            placed_spec(
                entry["placement"],
                pinned=entry["pinned"],
                replicas=replicas or entry["copies"],
                requests_per_hour=float(requests.get(version_id, 0)),
            )
        )
    return specs


def dedicated_baseline_usd_per_hour(*, models: list, catalog: list | None = None) -> float:
    """One cheapest-fitting instance of the catalog per model replica (the savings baseline).

    A model no catalog type holds alone is priced at the most expensive type per replica, so the
    baseline never silently drops a model.
    """
    from deployments.exceptions import CapacityExceeded
    from deployments.placement.solver import (
        DEDICATED_MODE,
        PlacementPolicy,
        cheapest_fitting_type,
    )

    catalog = _catalog_specs() if catalog is None else catalog
    if not catalog:
        return 0.0
    policy = PlacementPolicy(mode=DEDICATED_MODE)
    total = 0.0
    for model in models:
        try:
            price = cheapest_fitting_type(model, catalog, policy).usd_per_hour
        except CapacityExceeded:
            price = max(t.usd_per_hour for t in catalog)
        total += price * model.replicas
    return total


def cost_shares(*, caller: Caller) -> dict:
    """Each tenant's and model version's share of the fleet's hourly cost.

    A holder (an instance, or an endpoint where the backend picks the instance) costs its price;
    each resident model pays price × its memory / all resident memory on that holder (DESIGN's
    cost model). Returns ``{"tenants": {id: {...}}, "versions": {id: {...}}}``.
    """
    live = ~Q(instance__status=Instance.Status.STOPPED) | Q(instance__isnull=True)
    resident = list(
        Placement.objects.filter(actual_state__in=RESIDENT_STATES)
        .filter(live)
        .select_related("version__model__tenant", "endpoint__instance_type", "instance")
    )
    endpoint_ids = {p.endpoint_id for p in resident if p.instance_id is None}
    live_counts = dict(
        Instance.objects.filter(endpoint_id__in=endpoint_ids)
        .exclude(status=Instance.Status.STOPPED)
        .values_list("endpoint_id")
        .annotate(n=Count("id"))
    )
    holders: dict[tuple[str, int], list[Placement]] = {}
    for placement in resident:
        key = (
            ("instance", placement.instance_id)
            if placement.instance_id
            else ("endpoint", placement.endpoint_id)
        )
        holders.setdefault(key, []).append(placement)
    tenants: dict[int, dict] = {}
    versions: dict[int, dict] = {}
    for (holder_kind, _), placements in holders.items():
        price = float(placements[0].endpoint.instance_type.usd_per_hour)
        if holder_kind == "endpoint":
            price *= live_counts.get(placements[0].endpoint_id, 0)
        memory = [held_memory_mb(p) for p in placements]
        total = sum(memory)
        for placement, mb in zip(placements, memory, strict=True):
            share = price * mb / total if total > 0 else price / len(placements)
            tenant = placement.version.model.tenant
            if not caller.can_see(tenant.pk):
                continue
            t = tenants.setdefault(
                tenant.pk, {"tenant": tenant.slug, "usd_per_hour": 0.0, "memory_mb": 0.0}
            )
            t["usd_per_hour"] += share
            t["memory_mb"] += mb
            v = versions.setdefault(
                placement.version_id,
                {
                    "tenant": tenant.slug,
                    "model": placement.version.model.name,
                    "version": placement.version.number,
                    "usd_per_hour": 0.0,
                    "memory_mb": 0.0,
                },
            )
            v["usd_per_hour"] += share
            v["memory_mb"] += mb
    return {"tenants": tenants, "versions": versions}


def fleet_figures(*, caller: Caller, now=None) -> dict:
    """Utilization and cost figures the overview and ``/api/v1/fleet/*`` both show.

    A platform caller gets the whole fleet; any other caller its tenants' share: memory its
    models hold, their traffic and their share of cost (budgets are shared, so left out).
    Instance counts and cost cover every live instance, SageMaker's hosts at their running
    count included; memory used and budget only the instances whose memory the platform measures
    (``MEMORY_BASIS``; ``memory_measured_instances`` says how many).
    """
    from django.utils import timezone

    now = now or timezone.now()
    since = now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    fleet = caller.is_platform
    scope = "fleet" if fleet else "tenant"
    tenant_slugs = sorted(
        Tenant.objects.filter(pk__in=caller.tenant_ids).values_list("slug", flat=True)
    )
    placements = _scoped_placements(caller)
    resident = [
        p
        for p in placements.filter(actual_state__in=RESIDENT_STATES)
        if p.instance_id is None or p.instance.status != Instance.Status.STOPPED
    ]
    placed_count = placements.exclude(desired_state=Placement.DesiredState.UNLOADED).count()
    instances = _live_instances()
    measured = [i for i in instances if memory_is_measured(i)]
    if fleet:
        host_used = sum(i.memory_used_mb for i in measured)
        gpu_used = sum(i.gpu_memory_used_mb for i in measured)
        host_budget: float | None = sum(host_budget_mb(i) for i in measured)
        gpu_budget: float | None = sum(gpu_budget_mb(i) for i in measured)
        instance_count = len(instances)
        measured_count: int | None = len(measured)
    else:
        host_used = sum(held_memory_mb(p) for p in resident)
        gpu_used = sum(held_gpu_memory_mb(p) for p in resident)
        host_budget = gpu_budget = measured_count = None
        # A copy the endpoint places itself may be on any of its instances.
        on_endpoint = {p.endpoint_id for p in resident if p.instance_id is None}
        instance_count = len(
            {p.instance_id for p in resident if p.instance_id}
            | {i.pk for i in instances if i.endpoint_id in on_endpoint}
        )
    traffic = traffic_summary(caller=caller, since=since)
    utilization = {
        "scope": scope,
        "tenants": tenant_slugs,
        "window_minutes": TRAFFIC_WINDOW_MINUTES,
        "instances": instance_count,
        "memory_measured_instances": measured_count,
        "memory_basis": MEMORY_BASIS,
        "host_memory_used_mb": _mb(host_used),
        "host_memory_budget_mb": _mb(host_budget) if host_budget is not None else None,
        "host_memory_utilization": _fraction(host_used, host_budget or 0),
        "gpu_memory_used_mb": _mb(gpu_used),
        "gpu_memory_budget_mb": _mb(gpu_budget) if gpu_budget is not None else None,
        "gpu_memory_utilization": _fraction(gpu_used, gpu_budget or 0),
        "models_loaded": len(resident),
        "models_placed": placed_count,
        "invocations_last_hour": traffic["invocations"],
        "invocations_per_minute": traffic["invocations_per_minute"],
        "cold_starts_last_hour": traffic["cold_starts"],
        "errors_last_hour": traffic["errors"],
        "p50_latency_ms_last_hour": traffic["p50_latency_ms"],
        "p99_latency_ms_last_hour": traffic["p99_latency_ms"],
        "p99_latency_above_slowest_bucket": traffic["p99_latency_above_slowest_bucket"],
    }

    shares = cost_shares(caller=caller)
    specs = placed_model_specs(caller=caller)
    dedicated = dedicated_baseline_usd_per_hour(models=specs)
    if fleet:
        actual = float(sum((i.endpoint.instance_type.usd_per_hour for i in instances), Decimal(0)))
    else:
        actual = sum(t["usd_per_hour"] for t in shares["tenants"].values())
    savings = (1 - actual / dedicated) if dedicated > 0 else None
    costs = {
        "scope": scope,
        "tenants_in_scope": tenant_slugs,
        "hours_per_month": HOURS_PER_MONTH,
        "usd_per_hour": _money(actual),
        "usd_per_month": _money(actual * HOURS_PER_MONTH),
        "dedicated_usd_per_hour": _money(dedicated),
        "dedicated_usd_per_month": _money(dedicated * HOURS_PER_MONTH),
        "savings": round(savings, 4) if savings is not None else None,
        "savings_formula": SAVINGS_FORMULA,
        "dedicated_baseline": (
            "one cheapest-fitting catalog instance per placed model × its replicas, "
            "sized by measured memory"
        ),
        "placed_models": len(specs),
        "tenants": sorted(
            (
                {
                    "tenant": t["tenant"],
                    "usd_per_hour": _money(t["usd_per_hour"]),
                    "usd_per_month": _money(t["usd_per_hour"] * HOURS_PER_MONTH),
                    "memory_mb": _mb(t["memory_mb"]),
                }
                for t in shares["tenants"].values()
            ),
            key=lambda row: (-row["usd_per_hour"], row["tenant"]),
        ),
    }
    if fleet:
        costs["unattributed_usd_per_hour"] = _money(
            max(actual - sum(t["usd_per_hour"] for t in shares["tenants"].values()), 0.0)
        )
        by_endpoint: dict[str, dict] = {}
        for instance in instances:
            row = by_endpoint.setdefault(
                instance.endpoint.name,
                {
                    "endpoint": instance.endpoint.name,
                    "instance_type": instance.endpoint.instance_type.name,
                    "live_instances": 0,
                    "usd_per_hour": 0.0,
                },
            )
            row["live_instances"] += 1
            row["usd_per_hour"] = _money(
                row["usd_per_hour"] + float(instance.endpoint.instance_type.usd_per_hour)
            )
        costs["endpoints"] = list(by_endpoint.values())
    else:
        costs["models"] = sorted(
            (
                {**v, "usd_per_hour": _money(v["usd_per_hour"]), "memory_mb": _mb(v["memory_mb"])}
                for v in shares["versions"].values()
            ),
            key=lambda row: (row["tenant"], row["model"], row["version"]),
        )
    return {"utilization": utilization, "costs": costs}


def what_if_costs(*, instance_type, target_utilization: float, replicas: int, now=None) -> dict:
    """Project the placed fleet onto ``instance_type`` alone (the MME solver) before deploying.

    Raises CapacityExceeded (a DomainError) when a placed model does not fit that type.
    """
    from django.utils import timezone

    from deployments.placement.solver import PlacementPolicy, solve

    now = now or timezone.now()
    fleet = Caller(label="what-if", is_platform=True, tenant_ids=frozenset())
    specs = placed_model_specs(
        caller=fleet,
        replicas=replicas,
        requests_since=now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES),
    )
    spec = instance_spec(instance_type)
    current = fleet_figures(caller=fleet, now=now)["costs"]
    dedicated = dedicated_baseline_usd_per_hour(models=specs)
    if specs:
        plan = solve(
            models=specs,
            instance_types=[spec],
            policy=PlacementPolicy(target_utilization=target_utilization),
        )
        hourly = plan.usd_per_hour
        instances = sum(len(e.instances) for e in plan.endpoints)
        endpoints = [
            {
                "endpoint": e.name,
                "kind": e.kind,
                "mode": e.mode,
                "instances": len(e.instances),
                "models": sum(len(i.models) for i in e.instances),
            }
            for e in plan.endpoints
        ]
    else:
        hourly, instances, endpoints = 0.0, 0, []
    savings = (1 - hourly / dedicated) if dedicated > 0 else None
    return {
        "instance_type": instance_type.name,
        "target_utilization": round(float(target_utilization), 2),
        "replicas": replicas,
        "placed_models": len(specs),
        "instances": instances,
        "endpoints": endpoints,
        "usd_per_hour": _money(hourly),
        "usd_per_month": _money(hourly * HOURS_PER_MONTH),
        "dedicated_usd_per_hour": _money(dedicated),
        "dedicated_usd_per_month": _money(dedicated * HOURS_PER_MONTH),
        "savings": round(savings, 4) if savings is not None else None,
        "savings_formula": SAVINGS_FORMULA,
        "current_usd_per_hour": current["usd_per_hour"],
        "current_usd_per_month": current["usd_per_month"],
    }


def endpoints_for_dashboard() -> list[dict]:
    """Every endpoint with its live instances, hourly cost, memory use and models loaded."""
    instances = _live_instances()
    by_endpoint: dict[int, list[Instance]] = {}
    for instance in instances:
        by_endpoint.setdefault(instance.endpoint_id, []).append(instance)
    # Counted by endpoint, not instance: copies an endpoint places itself name no instance.
    loaded = dict(
        Placement.objects.filter(actual_state__in=RESIDENT_STATES)
        .filter(~Q(instance__status=Instance.Status.STOPPED) | Q(instance__isnull=True))
        .values_list("endpoint_id")
        .annotate(n=Count("id"))
    )
    rows = []
    for endpoint in endpoints_with_cost().order_by("name"):
        mine = by_endpoint.get(endpoint.pk, [])
        measured = [i for i in mine if memory_is_measured(i)]
        used = sum(i.memory_used_mb for i in measured)
        budget = sum(host_budget_mb(i) for i in measured)
        rows.append(
            {
                "endpoint": endpoint,
                "live_instances": endpoint.live_instances,
                "usd_per_hour": float(endpoint.usd_per_hour or 0),
                "usd_per_month": float(endpoint.usd_per_hour or 0) * HOURS_PER_MONTH,
                "memory_measured": bool(measured) or not mine,
                "host_memory_used_mb": used,
                "host_memory_budget_mb": budget,
                "host_memory_utilization": _fraction(used, budget),
                "models_loaded": loaded.get(endpoint.pk, 0),
            }
        )
    return rows


def endpoint_by_name(*, name: str) -> Endpoint:
    endpoint = Endpoint.objects.select_related("instance_type").filter(name=name).first()
    if endpoint is None:
        raise NotFound(f"No endpoint {name!r}.")
    return endpoint


def endpoint_detail(*, endpoint: Endpoint, now=None) -> dict:
    """Each live instance of ``endpoint`` as a memory bar of its resident models (most recently
    used first), its other placements, and invocations per model over the last hour."""
    from django.utils import timezone

    from deployments.models import VersionUsageMinute

    now = now or timezone.now()
    since = now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    traffic = {
        row["version_id"]: row
        for row in VersionUsageMinute.objects.filter(endpoint=endpoint, minute__gte=since)
        .values("version_id")
        .annotate(invocations=Sum("invocations"), cold_starts=Sum("cold_starts"))
    }
    placements = list(
        Placement.objects.filter(endpoint=endpoint)
        .select_related("version__model__tenant", "instance")
        .order_by(F("last_invoked_at").desc(nulls_last=True), "pk")
    )
    instances = [i for i in _live_instances() if i.endpoint_id == endpoint.pk]
    bars = []
    for instance in instances:
        mine = [p for p in placements if p.instance_id == instance.pk]
        resident = [p for p in mine if p.actual_state in RESIDENT_STATES]
        budget = float(instance.memory_budget_mb)
        used = sum(held_memory_mb(p) for p in resident)
        scale = max(budget, used) or 1.0
        segments = [
            {
                "placement": p,
                "memory_mb": held_memory_mb(p),
                "width_pct": round(held_memory_mb(p) / scale * 100, 2),
                "lru_rank": rank,
            }
            for rank, p in enumerate(resident, start=1)
        ]
        bars.append(
            {
                "instance": instance,
                "memory_measured": memory_is_measured(instance),
                "budget_mb": budget,
                "used_mb": used,
                "free_mb": max(budget - used, 0.0),
                "utilization": _fraction(used, budget),
                "over_budget": used > budget,
                "segments": segments,
                "free_pct": round(max(budget - used, 0.0) / scale * 100, 2),
            }
        )
    rows = [
        {
            "placement": p,
            "memory_mb": held_memory_mb(p),
            "invocations": (traffic.get(p.version_id) or {}).get("invocations") or 0,
            "cold_starts": (traffic.get(p.version_id) or {}).get("cold_starts") or 0,
        }
        for p in placements
    ]
    platform = Caller(label="endpoint", is_platform=True, tenant_ids=frozenset())
    return {
        "endpoint": endpoint,
        "usd_per_hour": float(endpoint_usd_per_hour(endpoint=endpoint)),
        "instances": bars,
        "placements": rows,
        "traffic": traffic_summary(caller=platform, since=since, endpoint=endpoint),
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


def fleet_trends(*, caller: Caller, hours: int = 6, bucket_minutes: int = 5, now=None) -> dict:
    """Series for the trend charts: ``[(bucket start, value)]`` per figure over ``hours``.

    Invocations per minute follow the caller's scope; memory utilization and cost per hour are
    fleet-wide and only returned to platform callers. Cost counts every sampled instance (SageMaker
    hosts too); memory utilization only those whose memory is measured.
    """
    from django.utils import timezone

    from deployments.models import InstanceUsageMinute, VersionUsageMinute

    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    bucket = timedelta(minutes=bucket_minutes)
    starts = []
    cursor = start
    while cursor <= end:
        starts.append(cursor)
        cursor += bucket

    def index(minute) -> int:
        return min(int((minute - start) / bucket), len(starts) - 1)

    rows = VersionUsageMinute.objects.filter(minute__gte=start, minute__lte=end)
    if not caller.is_platform:
        rows = rows.filter(tenant_id__in=caller.tenant_ids)
    invocations = [0.0] * len(starts)
    cold_starts = [0.0] * len(starts)
    for row in rows.values("minute").annotate(n=Sum("invocations"), c=Sum("cold_starts")):
        invocations[index(row["minute"])] += row["n"] or 0
        cold_starts[index(row["minute"])] += row["c"] or 0
    trends: dict = {
        "hours": hours,
        "bucket_minutes": bucket_minutes,
        "invocations_per_minute": [
            (s, v / bucket_minutes) for s, v in zip(starts, invocations, strict=True)
        ],
        "cold_starts": list(zip(starts, cold_starts, strict=True)),
    }
    if not caller.is_platform:
        return trends
    used = [0.0] * len(starts)
    budget = [0.0] * len(starts)
    cost = [0.0] * len(starts)
    minutes = [set() for _ in starts]
    # Cost over every sampled instance; memory over those whose memory is measured (as in
    # ``fleet_figures``).
    measured = memory_measured("instance__")
    for row in (
        InstanceUsageMinute.objects.filter(minute__gte=start, minute__lte=end)
        .values("minute")
        .annotate(
            used=Sum("host_memory_used_mb", filter=measured),
            budget=Sum("instance__memory_budget_mb", filter=measured),
            cost=Sum("instance__endpoint__instance_type__usd_per_hour"),
        )
    ):
        i = index(row["minute"])
        used[i] += row["used"] or 0
        budget[i] += row["budget"] or 0
        cost[i] += float(row["cost"] or 0)
        minutes[i].add(row["minute"])
    trends["memory_utilization_pct"] = [
        (s, (u / b * 100) if b else None) for s, u, b in zip(starts, used, budget, strict=True)
    ]
    trends["usd_per_hour"] = [
        (s, (c / len(m)) if m else None) for s, c, m in zip(starts, cost, minutes, strict=True)
    ]
    return trends
