"""Reads of cost: the fleet's hourly cost, each tenant's and model version's share, the dedicated
baseline savings are measured against, and the what-if projection.

Everything here is aggregated in the database, so a request reads a few rows whatever the size of
the fleet. A holder (an instance, or an endpoint whose backend places copies itself) costs its
price (an endpoint: price × its live instances); each model resident on it pays price × its
memory ÷ all resident memory there, or an equal part when none is measured (DESIGN's cost model).
The dedicated baseline prices each distinct model size once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import Count, F, QuerySet, Sum

from deployments.models import Endpoint, Instance, InstanceType, Placement
from deployments.placement.rows import instance_spec
from deployments.selectors.traffic import TRAFFIC_WINDOW_MINUTES, requests_per_version
from models_registry.models import ModelVersion, TenantModel
from tenants.access import Caller
from tenants.models import Tenant

HOURS_PER_MONTH = 730
SAVINGS_FORMULA = "savings = 1 − actual hourly cost / dedicated hourly cost"
DEDICATED_BASELINE = (
    "one cheapest-fitting catalog instance per placed model × its replicas, "
    "sized by measured memory"
)
# Rows of the longest lists (tenants, endpoints) a summary carries; the rest are paginated.
TOP_ROWS = 10


def money(value: float) -> float:
    """A dollar figure as the API reports it (4 decimals)."""
    return round(float(value), 4)


def megabytes(value: float) -> float:
    """A memory figure as the API reports it (1 decimal)."""
    return round(float(value), 1)


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _in(values) -> tuple[str, list]:
    values = sorted(values)
    return ", ".join(["%s"] * len(values)), list(values)


def _shares_sql(tenant_ids: frozenset[int] | None) -> tuple[str, list]:
    """``WITH ... share AS (tenant_id, version_id, mb, usd_per_hour)``: every resident copy's
    share of its holder's price; only ``tenant_ids``' copies when given (the holders' totals
    still count every copy on them)."""
    resident_states, resident_params = _in(Placement.RESIDENT_STATES)
    stopped = Instance.Status.STOPPED
    params: list = [*resident_params, stopped]
    holder_filter = share_filter = ""
    if tenant_ids is not None:
        marks, ids = _in(tenant_ids or {0})
        holder_filter = (
            f"WHERE r.holder IN (SELECT s.holder FROM resident s WHERE s.tenant_id IN ({marks}))"
        )
        share_filter = f"WHERE r.tenant_id IN ({marks})"
    sql = f"""
        WITH resident AS (
            SELECT p.version_id AS version_id, p.endpoint_id AS endpoint_id,
                   p.instance_id AS instance_id, m.tenant_id AS tenant_id,
                   COALESCE(p.host_memory_mb, v.host_memory_mb, 0) AS mb,
                   CASE WHEN p.instance_id IS NULL THEN -p.endpoint_id
                        ELSE p.instance_id END AS holder
            FROM {_table(Placement)} p
            JOIN {_table(ModelVersion)} v ON v.id = p.version_id
            JOIN {_table(TenantModel)} m ON m.id = v.model_id
            LEFT JOIN {_table(Instance)} i ON i.id = p.instance_id
            WHERE p.actual_state IN ({resident_states})
              AND (p.instance_id IS NULL OR i.status <> %s)
        ),
        holder AS (
            SELECT r.holder AS holder, MIN(r.endpoint_id) AS endpoint_id,
                   MIN(r.instance_id) AS instance_id, SUM(r.mb) AS total_mb, COUNT(*) AS copies
            FROM resident r
            {holder_filter}
            GROUP BY r.holder
        ),
        priced AS (
            SELECT h.holder AS holder, h.total_mb AS total_mb, h.copies AS copies,
                   CAST(t.usd_per_hour AS DOUBLE PRECISION) * (CASE
                       WHEN h.instance_id IS NULL THEN (
                           SELECT COUNT(*) FROM {_table(Instance)} li
                           WHERE li.endpoint_id = h.endpoint_id AND li.status <> %s)
                       ELSE 1 END) AS usd_per_hour
            FROM holder h
            JOIN {_table(Endpoint)} e ON e.id = h.endpoint_id
            JOIN {_table(InstanceType)} t ON t.id = e.instance_type_id
        ),
        share AS (
            SELECT r.tenant_id AS tenant_id, r.version_id AS version_id, r.mb AS mb,
                   CASE WHEN pr.total_mb > 0 THEN pr.usd_per_hour * r.mb / pr.total_mb
                        ELSE pr.usd_per_hour / pr.copies END AS usd_per_hour
            FROM resident r JOIN priced pr ON pr.holder = r.holder
            {share_filter}
        )
    """
    if tenant_ids is not None:
        params += ids
    params.append(stopped)
    if tenant_ids is not None:
        params += ids
    return sql, params


def _scope(caller: Caller) -> frozenset[int] | None:
    return None if caller.is_platform else caller.tenant_ids


@dataclass(frozen=True)
class TenantCosts:
    """One page of tenants' cost shares (most expensive first), how many tenants pay a share,
    and what all of them pay together."""

    rows: list[dict]
    count: int
    attributed_usd_per_hour: float


def tenant_costs(*, caller: Caller, limit: int = TOP_ROWS, offset: int = 0) -> TenantCosts:
    """``[{tenant, usd_per_hour, usd_per_month, memory_mb}]`` for the tenants the caller sees,
    most expensive first (ties by slug), ``limit`` rows from ``offset``."""
    shares, params = _shares_sql(_scope(caller))
    sql = f"""{shares}
        SELECT ten.slug, SUM(s.usd_per_hour), SUM(s.mb),
               COUNT(*) OVER (), SUM(SUM(s.usd_per_hour)) OVER ()
        FROM share s JOIN {_table(Tenant)} ten ON ten.id = s.tenant_id
        GROUP BY s.tenant_id, ten.slug
        ORDER BY ROUND(CAST(SUM(s.usd_per_hour) AS NUMERIC), 4) DESC, ten.slug
        LIMIT %s OFFSET %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit, offset])
        fetched = cursor.fetchall()
        if fetched or offset == 0:
            count = fetched[0][3] if fetched else 0
            attributed = float(fetched[0][4]) if fetched else 0.0
        else:  # past the last page: the totals still say how many there are
            cursor.execute(
                f"{shares} SELECT COUNT(DISTINCT tenant_id), SUM(usd_per_hour) FROM share", params
            )
            count, total = cursor.fetchone()
            attributed = float(total or 0)
    rows = [
        {
            "tenant": slug,
            "usd_per_hour": money(usd),
            "usd_per_month": money(usd * HOURS_PER_MONTH),
            "memory_mb": megabytes(mb),
        }
        for slug, usd, mb, _, _ in fetched
    ]
    return TenantCosts(rows=rows, count=count, attributed_usd_per_hour=attributed)


def version_costs(*, caller: Caller) -> list[dict]:
    """``[{tenant, model, version, usd_per_hour, memory_mb}]``: each resident version of the
    caller's tenants and its share, by tenant, model and version."""
    shares, params = _shares_sql(_scope(caller))
    sql = f"""{shares}
        SELECT ten.slug, m.name, v.number, SUM(s.usd_per_hour), SUM(s.mb)
        FROM share s
        JOIN {_table(ModelVersion)} v ON v.id = s.version_id
        JOIN {_table(TenantModel)} m ON m.id = v.model_id
        JOIN {_table(Tenant)} ten ON ten.id = m.tenant_id
        GROUP BY s.version_id, ten.slug, m.name, v.number
        ORDER BY ten.slug, m.name, v.number
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [
            {
                "tenant": slug,
                "model": name,
                "version": number,
                "usd_per_hour": money(usd),
                "memory_mb": megabytes(mb),
            }
            for slug, name, number, usd, mb in cursor.fetchall()
        ]


def live_instances() -> QuerySet[Instance]:
    """Instances that are not stopped: what bills."""
    return Instance.objects.exclude(status=Instance.Status.STOPPED)


def actual_usd_per_hour() -> float:
    """Every live instance at its catalog price (SageMaker's hosts at their running count)."""
    total = live_instances().aggregate(usd=Sum("endpoint__instance_type__usd_per_hour"))["usd"]
    return float(total or 0)


def endpoint_costs(*, limit: int | None = TOP_ROWS, offset: int = 0) -> tuple[list[dict], int]:
    """``[{endpoint, instance_type, live_instances, usd_per_hour}]`` of endpoints with live
    instances, by name, and how many there are."""
    rows = (
        live_instances()
        .values("endpoint_id")
        .annotate(
            endpoint_name=F("endpoint__name"),
            type_name=F("endpoint__instance_type__name"),
            live_instances=Count("id"),
            usd_per_hour=Sum("endpoint__instance_type__usd_per_hour"),
        )
        .order_by("endpoint_name")
    )
    count = rows.count()
    page = rows[offset : offset + limit] if limit is not None else rows[offset:]
    return [
        {
            "endpoint": row["endpoint_name"],
            "instance_type": row["type_name"],
            "live_instances": row["live_instances"],
            "usd_per_hour": money(row["usd_per_hour"]),
        }
        for row in page
    ], count


@dataclass(frozen=True)
class PlacedSize:
    """Placed model versions of one kind and one measured size, and their copies."""

    kind: str
    host_memory_mb: float
    gpu_memory_mb: float
    versions: int
    copies: int


def _placed_versions_sql(tenant_ids: frozenset[int] | None) -> tuple[str, list]:
    """``WITH placed AS (version_id, kind, host_mb, gpu_mb, copies, pinned)``: each placed
    version (a placement not marked unloaded), at the largest memory any of its copies holds,
    with its copies summed."""
    params: list = [Placement.DesiredState.PINNED, Placement.DesiredState.UNLOADED]
    tenant_filter = ""
    if tenant_ids is not None:
        marks, ids = _in(tenant_ids or {0})
        tenant_filter = f"AND m.tenant_id IN ({marks})"
        params += ids
    sql = f"""
        WITH placed AS (
            SELECT p.version_id AS version_id, m.kind AS kind,
                   MAX(COALESCE(p.host_memory_mb, v.host_memory_mb, 0)) AS host_mb,
                   MAX(COALESCE(p.gpu_memory_mb, v.gpu_memory_mb, 0)) AS gpu_mb,
                   SUM(CASE WHEN p.copies > 0 THEN p.copies ELSE 1 END) AS copies,
                   MAX(CASE WHEN p.desired_state = %s THEN 1 ELSE 0 END) AS pinned
            FROM {_table(Placement)} p
            JOIN {_table(ModelVersion)} v ON v.id = p.version_id
            JOIN {_table(TenantModel)} m ON m.id = v.model_id
            WHERE p.desired_state <> %s {tenant_filter}
            GROUP BY p.version_id, m.kind
        )
    """
    return sql, params


def placed_sizes(*, caller: Caller) -> list[PlacedSize]:
    """The placed versions the caller sees, grouped by kind and measured size."""
    placed, params = _placed_versions_sql(_scope(caller))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""{placed}
            SELECT kind, host_mb, gpu_mb, COUNT(*), SUM(copies) FROM placed
            GROUP BY kind, host_mb, gpu_mb ORDER BY kind, host_mb, gpu_mb""",
            params,
        )
        return [
            PlacedSize(
                kind=kind,
                host_memory_mb=float(host),
                gpu_memory_mb=float(gpu),
                versions=versions,
                copies=int(copies),
            )
            for kind, host, gpu, versions, copies in cursor.fetchall()
        ]


def catalog_specs() -> list:
    """The catalog's available types as the solver sees them."""
    return [instance_spec(t) for t in InstanceType.objects.filter(available=True)]


def dedicated_baseline_usd_per_hour(
    *, sizes: list[PlacedSize], catalog: list | None = None
) -> float:
    """One cheapest-fitting instance of the catalog per model copy (the savings baseline),
    looked up once per distinct size.

    A model no catalog type holds alone is priced at the most expensive type per copy, so the
    baseline never silently drops a model.
    """
    from deployments.exceptions import CapacityExceeded
    from deployments.placement.solver import (
        DEDICATED_MODE,
        ModelSpec,
        PlacementPolicy,
        cheapest_fitting_type,
    )

    catalog = catalog_specs() if catalog is None else catalog
    if not catalog:
        return 0.0
    policy = PlacementPolicy(mode=DEDICATED_MODE)
    most_expensive = max(t.usd_per_hour for t in catalog)
    total = 0.0
    for size in sizes:
        model = ModelSpec(
            key=f"{size.kind} of {size.host_memory_mb} MB",
            kind=size.kind,
            host_memory_mb=size.host_memory_mb,
            gpu_memory_mb=size.gpu_memory_mb,
        )
        try:
            price = cheapest_fitting_type(model, catalog, policy).usd_per_hour
        except CapacityExceeded:
            price = most_expensive
        total += price * size.copies
    return total


# What ``fleet_costs`` adds to the headline figures unless ``lists=False``.
LIST_KEYS = (
    "tenants",
    "tenants_count",
    "unattributed_usd_per_hour",
    "endpoints",
    "endpoints_count",
    "models",
)


def headline_costs(costs: dict) -> dict:
    """``costs`` without its lists: what ``fleet_costs(lists=False)`` returns."""
    return {key: value for key, value in costs.items() if key not in LIST_KEYS}


def fleet_costs(*, caller: Caller, lists: bool = True) -> dict:
    """Cost per hour and month, the dedicated baseline and savings, and the most expensive
    tenants (a platform caller: the fleet, with idle capacity and the costliest endpoints; any
    other caller: its tenants' share, with each resident version's).

    ``lists=False`` leaves out the lists and idle capacity: the headline figures alone, for the
    overview's frequent refresh.
    """
    fleet = caller.is_platform
    tenant_slugs = sorted(
        Tenant.objects.filter(pk__in=caller.tenant_ids).values_list("slug", flat=True)
    )
    # A tenant's cost is its share, so its shares are read even for the headline figures.
    tenants = tenant_costs(caller=caller) if (lists or not fleet) else None
    sizes = placed_sizes(caller=caller)
    dedicated = dedicated_baseline_usd_per_hour(sizes=sizes)
    actual = actual_usd_per_hour() if fleet else tenants.attributed_usd_per_hour
    savings = (1 - actual / dedicated) if dedicated > 0 else None
    costs = {
        "scope": "fleet" if fleet else "tenant",
        "tenants_in_scope": tenant_slugs,
        "hours_per_month": HOURS_PER_MONTH,
        "usd_per_hour": money(actual),
        "usd_per_month": money(actual * HOURS_PER_MONTH),
        "dedicated_usd_per_hour": money(dedicated),
        "dedicated_usd_per_month": money(dedicated * HOURS_PER_MONTH),
        "savings": round(savings, 4) if savings is not None else None,
        "savings_formula": SAVINGS_FORMULA,
        "dedicated_baseline": DEDICATED_BASELINE,
        "placed_models": sum(size.versions for size in sizes),
    }
    if not lists:
        return costs
    # Keep LIST_KEYS in step with what is added here.
    costs["tenants"] = tenants.rows
    costs["tenants_count"] = tenants.count
    if fleet:
        costs["unattributed_usd_per_hour"] = money(
            max(actual - tenants.attributed_usd_per_hour, 0.0)
        )
        endpoints, endpoint_count = endpoint_costs()
        costs["endpoints"] = endpoints
        costs["endpoints_count"] = endpoint_count
    else:
        costs["models"] = version_costs(caller=caller)
    return costs


def what_if_costs(*, instance_type, target_utilization: float, replicas: int, now=None) -> dict:
    """Project the placed fleet onto ``instance_type`` alone (the MME solver) before deploying.

    Raises CapacityExceeded (a DomainError) when a placed model does not fit that type.
    """
    from django.utils import timezone

    from deployments.placement.solver import ModelSpec, PlacementPolicy, solve

    now = now or timezone.now()
    fleet = Caller(label="what-if", is_platform=True, tenant_ids=frozenset())
    placed, params = _placed_versions_sql(None)
    with connection.cursor() as cursor:
        cursor.execute(
            f"{placed} SELECT version_id, kind, host_mb, gpu_mb, copies, pinned FROM placed", params
        )
        versions = cursor.fetchall()
    requests = requests_per_version(since=now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES))
    specs = [
        ModelSpec(
            key=f"{version_id:012d}",
            kind=kind,
            host_memory_mb=float(host),
            gpu_memory_mb=float(gpu),
            requests_per_hour=float(requests.get(version_id, 0)),
            pinned=bool(pinned),
            replicas=replicas,
        )
        for version_id, kind, host, gpu, _, pinned in versions
    ]
    sizes = placed_sizes(caller=fleet)
    dedicated = dedicated_baseline_usd_per_hour(
        sizes=[
            PlacedSize(s.kind, s.host_memory_mb, s.gpu_memory_mb, s.versions, s.versions * replicas)
            for s in sizes
        ]
    )
    spec = instance_spec(instance_type)
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
    current = actual_usd_per_hour()
    return {
        "instance_type": instance_type.name,
        "target_utilization": round(float(target_utilization), 2),
        "replicas": replicas,
        "placed_models": len(specs),
        "instances": instances,
        "endpoints": endpoints,
        "usd_per_hour": money(hourly),
        "usd_per_month": money(hourly * HOURS_PER_MONTH),
        "dedicated_usd_per_hour": money(dedicated),
        "dedicated_usd_per_month": money(dedicated * HOURS_PER_MONTH),
        "savings": round(savings, 4) if savings is not None else None,
        "savings_formula": SAVINGS_FORMULA,
        "current_usd_per_hour": money(current),
        "current_usd_per_month": money(current * HOURS_PER_MONTH),
    }
