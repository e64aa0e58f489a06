"""Reads for the endpoint pages: every endpoint with its cost and memory, and one endpoint's
instances drawn as memory bars with its models in a searchable, paginated table.

A page stays small at any size: a bar draws an instance's largest models and sums the rest as
"N more"; the model table shows one page of rows; every figure is aggregated in the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.paginator import Page, Paginator
from django.db.models import (
    Count,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from deployments.models import Endpoint, Instance, Placement, VersionUsageMinute
from deployments.placement.rows import held_memory_mb
from deployments.selectors.costs import HOURS_PER_MONTH
from deployments.selectors.fleet import (
    RESIDENT,
    endpoint_usd_per_hour,
    endpoints_with_cost,
    fraction,
    held_host_mb,
    host_budget_mb,
    memory_is_measured,
)
from deployments.selectors.generation import generation_by_version, kind_generates
from deployments.selectors.traffic import TRAFFIC_WINDOW_MINUTES, traffic_summary
from models_registry.models import ModelVersion
from tenants.access import Caller

ENDPOINTS_PER_PAGE = 50
PLACEMENTS_PER_PAGE = 50
# Instances drawn as memory bars on one page of an endpoint (thousands of models per endpoint
# come on many instances).
INSTANCES_PER_PAGE = 10
# The largest models a memory bar draws one by one; the rest of the instance is one segment.
SEGMENTS_PER_INSTANCE = 8


def _live(instances: QuerySet[Instance]) -> QuerySet[Instance]:
    return instances.exclude(status=Instance.Status.STOPPED)


def endpoints_page(*, page_number=1, per_page: int = ENDPOINTS_PER_PAGE) -> Page:
    """One page of endpoints (by name), each row with its live instances, hourly cost, memory
    use over its measured instances and models loaded."""
    page = Paginator(endpoints_with_cost().order_by("name", "pk"), per_page).get_page(page_number)
    endpoints = list(page.object_list)
    ids = [e.pk for e in endpoints]
    budgets: dict[int, float] = {}
    has_instances: set[int] = set()
    for instance in _live(Instance.objects.filter(endpoint_id__in=ids)).select_related(
        "endpoint__instance_type"
    ):
        has_instances.add(instance.endpoint_id)
        if memory_is_measured(instance):
            budgets[instance.endpoint_id] = budgets.get(instance.endpoint_id, 0.0) + (
                host_budget_mb(instance)
            )
    resident = Placement.objects.filter(RESIDENT, endpoint_id__in=ids).filter(
        Q(instance__isnull=True) | ~Q(instance__status=Instance.Status.STOPPED)
    )
    loaded = dict(resident.values_list("endpoint_id").annotate(n=Count("id")))
    used = dict(
        resident.filter(instance__isnull=False)
        .exclude(instance__host="")
        .values_list("endpoint_id")
        .annotate(mb=Sum(held_host_mb()))
    )
    rows = []
    for endpoint in endpoints:
        budget = budgets.get(endpoint.pk, 0.0)
        memory_used = used.get(endpoint.pk) or 0.0
        rows.append(
            {
                "endpoint": endpoint,
                "live_instances": endpoint.live_instances,
                "usd_per_hour": float(endpoint.usd_per_hour or 0),
                "usd_per_month": float(endpoint.usd_per_hour or 0) * HOURS_PER_MONTH,
                "memory_measured": endpoint.pk in budgets or endpoint.pk not in has_instances,
                "host_memory_used_mb": memory_used,
                "host_memory_budget_mb": budget,
                "host_memory_utilization": fraction(memory_used, budget),
                "models_loaded": loaded.get(endpoint.pk, 0),
            }
        )
    page.object_list = rows
    return page


@dataclass(frozen=True)
class ResidentTotals:
    models: int
    memory_mb: float


def _memory_bars(endpoint: Endpoint, instances: list[Instance]) -> list[dict]:
    """Each live instance as a bar: its largest resident models, drawn most recently used first,
    then one segment for the rest, then free memory."""
    resident = Placement.objects.filter(RESIDENT, instance__in=instances)
    per_instance = [F("instance_id")]
    # The version's figure is read only for a copy without its own (a join would read every
    # version of the fleet to rank one endpoint's copies).
    held = Coalesce(
        "host_memory_mb",
        Subquery(
            ModelVersion.objects.filter(pk=OuterRef("version_id"))
            .order_by()
            .values("host_memory_mb")
        ),
        Value(0.0),
        output_field=FloatField(),
    )
    # One pass over the instances' resident copies: each one's rank by size and its instance's
    # totals; only the largest come back, then are read with their names.
    ranked = (
        resident.annotate(
            size_rank=Window(RowNumber(), partition_by=per_instance, order_by=[held.desc(), "pk"]),
            instance_models=Window(Count("pk"), partition_by=per_instance),
            instance_mb=Window(Sum(held), partition_by=per_instance),
        )
        .filter(size_rank__lte=SEGMENTS_PER_INSTANCE)
        .order_by()
        .values_list("pk", "instance_id", "instance_models", "instance_mb")
    )
    totals: dict[int, ResidentTotals] = {}
    drawn: list[int] = []
    for pk, instance_id, models, mb in ranked:
        drawn.append(pk)
        totals[instance_id] = ResidentTotals(models=models, memory_mb=mb or 0.0)
    by_instance: dict[int, list[Placement]] = {}
    for placement in (
        Placement.objects.filter(pk__in=drawn)
        .select_related("version__model__tenant")
        .order_by(F("last_invoked_at").desc(nulls_last=True), "pk")
    ):
        mine = by_instance.setdefault(placement.instance_id, [])
        # Drawn most recently used first: 1 is the most recently used of the drawn models.
        placement.lru_rank = len(mine) + 1
        placement.memory_mb = held_memory_mb(placement)
        mine.append(placement)
    bars = []
    shared = endpoint.mode == Endpoint.Mode.SHARED_BASE
    for instance in instances:
        total = totals.get(instance.pk, ResidentTotals(0, 0.0))
        heads_mb = total.memory_mb
        # A shared-base instance also holds its encoder, once, whatever the number of heads.
        encoder_mb = float(instance.shared_base_memory_mb or 0.0) if shared else 0.0
        if encoder_mb:
            total = ResidentTotals(total.models, total.memory_mb + encoder_mb)
        budget = float(instance.memory_budget_mb)
        scale = max(budget, total.memory_mb) or 1.0
        shown = by_instance.get(instance.pk, [])
        segments = [
            {
                "placement": p,
                "memory_mb": p.memory_mb,
                "width_pct": round(p.memory_mb / scale * 100, 2),
                "lru_rank": p.lru_rank,
            }
            for p in shown
        ]
        rest_mb = max(heads_mb - sum(p.memory_mb for p in shown), 0.0)
        rest = total.models - len(shown)
        bars.append(
            {
                "instance": instance,
                "memory_measured": memory_is_measured(instance),
                "budget_mb": budget,
                "used_mb": total.memory_mb,
                "free_mb": max(budget - total.memory_mb, 0.0),
                "utilization": fraction(total.memory_mb, budget),
                "over_budget": total.memory_mb > budget,
                "models": total.models,
                "segments": segments,
                "more": (
                    {
                        "models": rest,
                        "memory_mb": rest_mb,
                        "width_pct": round(rest_mb / scale * 100, 2),
                    }
                    if rest > 0
                    else None
                ),
                "free_pct": round(max(budget - total.memory_mb, 0.0) / scale * 100, 2),
                "shared_base": (
                    {
                        "encoder_mb": encoder_mb,
                        "encoder_loaded": bool(encoder_mb),
                        "width_pct": round(encoder_mb / scale * 100, 2),
                        "heads": total.models,
                        "heads_mb": heads_mb,
                        "heads_kb": round(heads_mb * 1024, 1),
                    }
                    if shared
                    else None
                ),
            }
        )
    return bars


def endpoint_detail(
    *, endpoint: Endpoint, search: str = "", page_number=1, instance_page_number=1, now=None
) -> dict:
    """One page of ``endpoint``'s live instances as memory bars (by ordinal), one page of its
    models (searchable by tenant or model name, most recently used first) with their last
    hour's traffic, and the endpoint's cost and traffic."""
    now = now or timezone.now()
    since = now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    instance_page = Paginator(
        _live(endpoint.instances.all()).select_related("endpoint").order_by("ordinal"),
        INSTANCES_PER_PAGE,
    ).get_page(instance_page_number)
    instances = list(instance_page.object_list)
    placements = (
        Placement.objects.filter(endpoint=endpoint)
        .select_related("version__model__tenant", "instance")
        .order_by(F("last_invoked_at").desc(nulls_last=True), "pk")
    )
    search = search.strip()
    if search:
        placements = placements.filter(
            Q(version__model__tenant__slug__icontains=search)
            | Q(version__model__name__icontains=search)
        )
    page = Paginator(placements, PLACEMENTS_PER_PAGE).get_page(page_number)
    versions = {p.version_id for p in page.object_list}
    traffic = {
        version_id: (invocations or 0, cold_starts or 0)
        for version_id, invocations, cold_starts in VersionUsageMinute.objects.filter(
            endpoint=endpoint, minute__gte=since, version_id__in=versions
        )
        .values("version_id")
        .annotate(invocations=Sum("invocations"), cold_starts=Sum("cold_starts"))
        .values_list("version_id", "invocations", "cold_starts")
    }
    generating = {p.version_id for p in page.object_list if kind_generates(p.version.model.kind)}
    generation = generation_by_version(version_ids=generating, since=since, endpoint=endpoint)
    page.object_list = [
        {
            "placement": p,
            "memory_mb": held_memory_mb(p),
            "invocations": traffic.get(p.version_id, (0, 0))[0],
            "cold_starts": traffic.get(p.version_id, (0, 0))[1],
            "generates": p.version_id in generating,
            "generation": generation.get(p.version_id),
        }
        for p in page.object_list
    ]
    platform = Caller(label="endpoint", is_platform=True, tenant_ids=frozenset())
    return {
        "endpoint": endpoint,
        "usd_per_hour": float(endpoint_usd_per_hour(endpoint=endpoint)),
        "instances": _memory_bars(endpoint, instances),
        "instance_page": instance_page,
        "placements": page,
        "search": search,
        "segments_per_instance": SEGMENTS_PER_INSTANCE,
        "traffic": traffic_summary(caller=platform, since=since, endpoint=endpoint),
        # Generation figures get a column only where a model on the page generates text.
        "generating": bool(generating),
    }
