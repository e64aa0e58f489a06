"""Reads of cost: the fleet's hourly cost, each tenant's and model version's share, the dedicated
baseline savings are measured against, and the what-if projection.

Everything here is aggregated in the database, so a request reads a few rows whatever the size of
the fleet. A holder (an instance, or an endpoint whose backend places copies itself) costs its
price (an endpoint: price × its live instances); each model resident on it pays price × its
memory ÷ all resident memory there, or an equal part when none is measured (DESIGN's cost model).
On a shared-base instance the encoder's part of the price (its measured memory's share of what
is resident there) is paid by the tenants' heads in proportion to their requests over the last
``TRAFFIC_WINDOW_MINUTES`` (equal parts with no traffic), and the rest by head memory: every
tenant pays for the encoder time it uses and the head it keeps.
The dedicated baseline prices each distinct model size once.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, F, QuerySet, Sum
from django.utils import timezone

from deployments.models import Endpoint, Instance, InstanceType, Placement, VersionUsageMinute
from deployments.placement.rows import instance_spec
from deployments.selectors.traffic import TRAFFIC_WINDOW_MINUTES
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
# How old the minute sampler's ranking of tenants may be and still be shown (three passes).
SNAPSHOT_FRESH = timedelta(minutes=3)


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


# A copy's holder as one integer: its instance, or (negated) the endpoint that places it itself.
_HOLDER = "CASE WHEN p.instance_id IS NULL THEN -p.endpoint_id ELSE p.instance_id END"
# A copy's measured host memory: on its instance, else its version's, else 0.
_HELD_MB = "COALESCE(p.host_memory_mb, v.host_memory_mb, 0)"


def _resident_live() -> tuple[str, list]:
    """Copies resident on a live instance (or held by their endpoint); ``p``, ``i`` aliases."""
    marks, states = _in(Placement.RESIDENT_STATES)
    return (
        f"p.actual_state IN ({marks}) AND (p.instance_id IS NULL OR i.status <> %s)",
        [*states, Instance.Status.STOPPED],
    )


def _shares_sql(tenant_ids: frozenset[int] | None) -> tuple[str, list]:
    """``WITH ... share AS (tenant_id, version_id, mb, usd_per_hour)``: every resident copy's
    share of its holder's price; only ``tenant_ids``' copies when given (the holders' totals
    still count every copy on them, but only their holders are read)."""
    resident, resident_params = _resident_live()
    holder_filter = share_filter = ""
    holder_params: list = []
    share_params: list = []
    if tenant_ids is not None:
        marks, ids = _in(tenant_ids or {0})
        # Only the holders these tenants' copies are on, found through the indexes on
        # (instance, state) and (endpoint, state), not by reading the fleet.
        theirs = f"""
            SELECT q.{{column}} FROM {_table(Placement)} q
            JOIN {_table(ModelVersion)} qv ON qv.id = q.version_id
            JOIN {_table(TenantModel)} qm ON qm.id = qv.model_id
            WHERE qm.tenant_id IN ({marks}) AND q.instance_id IS {{null}}"""
        holder_filter = (
            f"AND (p.instance_id IN ({theirs.format(column='instance_id', null='NOT NULL')})"
            f" OR (p.instance_id IS NULL AND p.endpoint_id IN "
            f"({theirs.format(column='endpoint_id', null='NULL')})))"
        )
        holder_params = [*ids, *ids]
        share_filter = f"AND m.tenant_id IN ({marks})"
        share_params = list(ids)
    sql = f"""
        WITH traffic AS (
            SELECT u.version_id AS version_id, u.endpoint_id AS endpoint_id,
                   SUM(u.invocations) AS requests
            FROM {_table(VersionUsageMinute)} u
            JOIN {_table(Endpoint)} te ON te.id = u.endpoint_id
            WHERE te.mode = %s AND u.minute >= %s
            GROUP BY u.version_id, u.endpoint_id
        ),
        holder AS (
            SELECT {_HOLDER} AS holder, MIN(p.endpoint_id) AS endpoint_id,
                   MIN(p.instance_id) AS instance_id, SUM({_HELD_MB}) AS total_mb,
                   COUNT(*) AS copies, MAX(i.shared_base_memory_mb) AS encoder_mb,
                   SUM(COALESCE(tr.requests, 0)) AS requests
            FROM {_table(Placement)} p
            JOIN {_table(ModelVersion)} v ON v.id = p.version_id
            LEFT JOIN {_table(Instance)} i ON i.id = p.instance_id
            LEFT JOIN traffic tr
                ON tr.version_id = p.version_id AND tr.endpoint_id = p.endpoint_id
            WHERE {resident} {holder_filter}
            GROUP BY {_HOLDER}
        ),
        priced AS (
            SELECT h.holder AS holder, h.total_mb AS total_mb, h.copies AS copies,
                   h.encoder_mb AS encoder_mb, h.requests AS requests,
                   CAST(t.usd_per_hour AS DOUBLE PRECISION)
                   * (CASE WHEN h.instance_id IS NULL THEN COALESCE(lc.n, 0) ELSE 1 END)
                   AS usd_per_hour
            FROM holder h
            JOIN {_table(Endpoint)} e ON e.id = h.endpoint_id
            JOIN {_table(InstanceType)} t ON t.id = e.instance_type_id
            LEFT JOIN (
                SELECT li.endpoint_id AS endpoint_id, COUNT(*) AS n
                FROM {_table(Instance)} li WHERE li.status <> %s GROUP BY li.endpoint_id
            ) lc ON lc.endpoint_id = h.endpoint_id
        ),
        share AS (
            SELECT m.tenant_id AS tenant_id, p.version_id AS version_id, {_HELD_MB} AS mb,
                   CASE WHEN pr.encoder_mb > 0 THEN pr.usd_per_hour * (
                            {_HELD_MB} / (pr.encoder_mb + pr.total_mb)
                            + pr.encoder_mb / (pr.encoder_mb + pr.total_mb) * (
                                CASE WHEN pr.requests > 0
                                     THEN CAST(COALESCE(tr.requests, 0) AS DOUBLE PRECISION)
                                          / pr.requests
                                     ELSE 1.0 / pr.copies END))
                        WHEN pr.total_mb > 0 THEN pr.usd_per_hour * {_HELD_MB} / pr.total_mb
                        ELSE pr.usd_per_hour / pr.copies END AS usd_per_hour
            FROM {_table(Placement)} p
            JOIN {_table(ModelVersion)} v ON v.id = p.version_id
            JOIN {_table(TenantModel)} m ON m.id = v.model_id
            LEFT JOIN {_table(Instance)} i ON i.id = p.instance_id
            JOIN priced pr ON pr.holder = {_HOLDER}
            LEFT JOIN traffic tr
                ON tr.version_id = p.version_id AND tr.endpoint_id = p.endpoint_id
            WHERE {resident} {share_filter}
        )
    """
    since = timezone.now() - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    params = [
        Endpoint.Mode.SHARED_BASE,
        since,
        *resident_params,
        *holder_params,
        Instance.Status.STOPPED,
        *resident_params,
        *share_params,
    ]
    return sql, params


def _scope(caller: Caller) -> frozenset[int] | None:
    return None if caller.is_platform else caller.tenant_ids


@dataclass(frozen=True)
class TenantCosts:
    """One page of tenants' cost shares (most expensive first), how many tenants pay a share,
    what all of them pay together, and the minute sampler's pass they come from (None: read
    now)."""

    rows: list[dict]
    count: int
    attributed_usd_per_hour: float
    as_of: datetime | None = None


def _cost_row(slug: str, usd: float, mb: float) -> dict:
    return {
        "tenant": slug,
        "usd_per_hour": money(usd),
        "usd_per_month": money(usd * HOURS_PER_MONTH),
        "memory_mb": megabytes(mb),
    }


def _per_tenant_sql(tenant_ids: frozenset[int] | None) -> tuple[str, list]:
    """``WITH ... per_tenant AS (tenant_id, slug, usd_per_hour, rank_usd_per_hour, mb)``."""
    shares, params = _shares_sql(tenant_ids)
    sql = f"""{shares},
        per_tenant AS (
            SELECT s.tenant_id AS tenant_id, ten.slug AS slug,
                   SUM(s.usd_per_hour) AS usd_per_hour,
                   CAST(ROUND(CAST(SUM(s.usd_per_hour) AS NUMERIC), 4) AS DOUBLE PRECISION)
                   AS rank_usd_per_hour,
                   SUM(s.mb) AS mb
            FROM share s JOIN {_table(Tenant)} ten ON ten.id = s.tenant_id
            GROUP BY s.tenant_id, ten.slug
        )
    """
    return sql, params


def snapshot_taken_at(*, now: datetime | None = None) -> datetime | None:
    """When the minute sampler last ranked every tenant's share, if that is recent enough to
    show (``SNAPSHOT_FRESH_S``); None when the platform's sampler is not running."""
    from django.utils import timezone

    from deployments.models import BackgroundPass
    from deployments.passes import SAMPLE

    now = now or timezone.now()
    taken = (
        BackgroundPass.objects.filter(job=SAMPLE, succeeded=True)
        .values_list("finished_at", flat=True)
        .first()
    )
    return taken if taken is not None and now - taken <= SNAPSHOT_FRESH else None


def tenant_costs(*, caller: Caller, limit: int = TOP_ROWS, offset: int = 0) -> TenantCosts:
    """``[{tenant, usd_per_hour, usd_per_month, memory_mb}]`` for the tenants the caller sees,
    most expensive first (ties by slug), ``limit`` rows from ``offset``.

    A platform caller reads the ranking the minute sampler keeps (``TenantCost``) while it is
    fresh; otherwise, and for any other caller (whose tenants' holders are few), the shares are
    computed now.
    """
    from deployments.models import TenantCost

    taken = snapshot_taken_at() if caller.is_platform else None
    if taken is not None:
        totals = TenantCost.objects.aggregate(n=Count("pk"), usd=Sum("usd_per_hour"))
        page = TenantCost.objects.order_by("-rank_usd_per_hour", "slug")[offset : offset + limit]
        return TenantCosts(
            rows=[_cost_row(t.slug, t.usd_per_hour, t.memory_mb) for t in page],
            count=totals["n"],
            attributed_usd_per_hour=float(totals["usd"] or 0),
            as_of=taken,
        )
    per_tenant, params = _per_tenant_sql(_scope(caller))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""{per_tenant}
            SELECT slug, usd_per_hour, mb, COUNT(*) OVER (), SUM(usd_per_hour) OVER ()
            FROM per_tenant ORDER BY rank_usd_per_hour DESC, slug LIMIT %s OFFSET %s""",
            [*params, limit, offset],
        )
        fetched = cursor.fetchall()
        if fetched or offset == 0:
            count = fetched[0][3] if fetched else 0
            attributed = float(fetched[0][4]) if fetched else 0.0
        else:  # past the last page: the totals still say how many there are
            cursor.execute(
                f"{per_tenant} SELECT COUNT(*), SUM(usd_per_hour) FROM per_tenant", params
            )
            count, total = cursor.fetchone()
            attributed = float(total or 0)
    return TenantCosts(
        rows=[_cost_row(slug, usd, mb) for slug, usd, mb, _, _ in fetched],
        count=count,
        attributed_usd_per_hour=attributed,
    )


@dataclass(frozen=True)
class TenantCostPage:
    """One page of the tenants' cost list: its rows, its number and the pages there are."""

    costs: TenantCosts
    number: int
    pages: int
    first_rank: int


def tenant_costs_page(*, caller: Caller, number, per_page: int) -> TenantCostPage:
    """Page ``number`` (a positive whole number, else the first; past the end, the last, as
    Django's paginator does) of ``tenant_costs``."""
    raw = str(number or "")
    number = int(raw) if raw.isdigit() and 0 < int(raw) < 10**9 else 1
    costs = tenant_costs(caller=caller, limit=per_page, offset=(number - 1) * per_page)
    pages = max(1, math.ceil(costs.count / per_page))
    if number > pages:
        number = pages
        costs = tenant_costs(caller=caller, limit=per_page, offset=(number - 1) * per_page)
    return TenantCostPage(
        costs=costs, number=number, pages=pages, first_rank=(number - 1) * per_page + 1
    )


def refresh_tenant_costs() -> int:
    """Rank every tenant's share now into ``TenantCost`` (the minute sampler's job): a row is
    written only where its figures changed, and a tenant with nothing resident loses its row.
    Returns the number of tenants paying a share."""
    from deployments.models import TenantCost

    per_tenant, params = _per_tenant_sql(None)
    table = _table(TenantCost)
    resident, resident_params = _resident_live()
    with transaction.atomic(), connection.cursor() as cursor:
        # (WHERE 1 = 1 keeps SQLite from reading ON CONFLICT as a join's ON.)
        cursor.execute(
            f"""{per_tenant}
            INSERT INTO {table} (tenant_id, slug, usd_per_hour, rank_usd_per_hour, memory_mb)
            SELECT tenant_id, slug, usd_per_hour, rank_usd_per_hour, mb FROM per_tenant
            WHERE 1 = 1
            ON CONFLICT (tenant_id) DO UPDATE SET
                slug = excluded.slug,
                usd_per_hour = excluded.usd_per_hour,
                rank_usd_per_hour = excluded.rank_usd_per_hour,
                memory_mb = excluded.memory_mb
            WHERE {table}.usd_per_hour <> excluded.usd_per_hour
               OR {table}.memory_mb <> excluded.memory_mb
               OR {table}.slug <> excluded.slug""",
            params,
        )
        cursor.execute(
            f"""DELETE FROM {table} WHERE NOT EXISTS (
                SELECT 1 FROM {_table(Placement)} p
                JOIN {_table(ModelVersion)} v ON v.id = p.version_id
                JOIN {_table(TenantModel)} m ON m.id = v.model_id
                LEFT JOIN {_table(Instance)} i ON i.id = p.instance_id
                WHERE m.tenant_id = {table}.tenant_id AND {resident})""",
            resident_params,
        )
    return TenantCost.objects.count()


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
    """Placed copies of one measured size (host and GPU memory)."""

    host_memory_mb: float
    gpu_memory_mb: float
    copies: int


def placed_sizes(*, caller: Caller) -> tuple[list[PlacedSize], int]:
    """The placed copies (placements not marked unloaded) of the caller's tenants grouped by
    measured size, and how many model versions they are."""
    params: list = [Placement.DesiredState.UNLOADED]
    tenant_join = tenant_filter = ""
    scope = _scope(caller)
    if scope is not None:
        marks, ids = _in(scope or {0})
        tenant_join = f"JOIN {_table(TenantModel)} m ON m.id = v.model_id"
        tenant_filter = f"AND m.tenant_id IN ({marks})"
        params += ids
    placed = f"""
        FROM {_table(Placement)} p
        JOIN {_table(ModelVersion)} v ON v.id = p.version_id
        {tenant_join}
        WHERE p.desired_state <> %s {tenant_filter}"""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT {_HELD_MB}, COALESCE(p.gpu_memory_mb, v.gpu_memory_mb, 0),
                   SUM(CASE WHEN p.copies > 0 THEN p.copies ELSE 1 END)
            {placed} GROUP BY 1, 2 ORDER BY 1, 2""",
            params,
        )
        sizes = [
            PlacedSize(host_memory_mb=float(host), gpu_memory_mb=float(gpu), copies=int(copies))
            for host, gpu, copies in cursor.fetchall()
        ]
        cursor.execute(f"SELECT COUNT(DISTINCT p.version_id) {placed}", params)
        versions = cursor.fetchone()[0]
    return sizes, versions


def catalog_specs() -> list:
    """The catalog's available types as the solver sees them."""
    return [instance_spec(t) for t in InstanceType.objects.filter(available=True)]


def dedicated_baseline_usd_per_hour(
    *, sizes: list[PlacedSize], catalog: list | None = None
) -> float:
    """One cheapest-fitting instance of the catalog per model copy (the savings baseline),
    looked up once per distinct size (which type holds a model alone depends on its memory
    only).

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
            key=f"a model of {size.host_memory_mb} MB",
            kind="",
            host_memory_mb=size.host_memory_mb,
            gpu_memory_mb=size.gpu_memory_mb,
        )
        try:
            price = cheapest_fitting_type(model, catalog, policy).usd_per_hour
        except CapacityExceeded:
            price = most_expensive
        total += price * size.copies
    return total


def _against_dedicated(usd_per_hour: float, dedicated_usd_per_hour: float) -> dict:
    """A cost per hour and month, the dedicated baseline's, and the savings between them."""
    savings = 1 - usd_per_hour / dedicated_usd_per_hour if dedicated_usd_per_hour > 0 else None
    return {
        "usd_per_hour": money(usd_per_hour),
        "usd_per_month": money(usd_per_hour * HOURS_PER_MONTH),
        "dedicated_usd_per_hour": money(dedicated_usd_per_hour),
        "dedicated_usd_per_month": money(dedicated_usd_per_hour * HOURS_PER_MONTH),
        "savings": round(savings, 4) if savings is not None else None,
        "savings_formula": SAVINGS_FORMULA,
    }


# What ``fleet_costs`` adds to the headline figures unless ``lists=False``.
LIST_KEYS = (
    "tenants",
    "tenants_count",
    "tenants_as_of",
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
    sizes, placed_versions = placed_sizes(caller=caller)
    dedicated = dedicated_baseline_usd_per_hour(sizes=sizes)
    actual = actual_usd_per_hour() if fleet else tenants.attributed_usd_per_hour
    costs = {
        "scope": "fleet" if fleet else "tenant",
        "tenants_in_scope": tenant_slugs,
        "hours_per_month": HOURS_PER_MONTH,
        **_against_dedicated(actual, dedicated),
        "dedicated_baseline": DEDICATED_BASELINE,
        "placed_models": placed_versions,
    }
    if not lists:
        return costs
    # Keep LIST_KEYS in step with what is added here.
    costs["tenants"] = tenants.rows
    costs["tenants_count"] = tenants.count
    costs["tenants_as_of"] = tenants.as_of.isoformat() if tenants.as_of else None
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

    The placed versions are read grouped by kind, measured memory and last hour's requests (what
    packing reads), and the plan is counted per group (``placement.count_plan``: the instances
    ``solve`` would open, without naming each model's place), so a fleet of 100,000 models is a
    few thousand groups. Raises CapacityExceeded (a DomainError) when a placed model does not
    fit that type.
    """
    from django.utils import timezone

    from deployments.models import VersionUsageMinute
    from deployments.placement.solver import ModelGroup, PlacementPolicy, count_plan

    now = now or timezone.now()
    since = now - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    with connection.cursor() as cursor:
        # Each placed version at the largest memory any of its copies holds, with its requests.
        cursor.execute(
            f"""WITH placed AS (
                SELECT p.version_id AS version_id, m.kind AS kind, MAX({_HELD_MB}) AS host_mb,
                       MAX(COALESCE(p.gpu_memory_mb, v.gpu_memory_mb, 0)) AS gpu_mb
                FROM {_table(Placement)} p
                JOIN {_table(ModelVersion)} v ON v.id = p.version_id
                JOIN {_table(TenantModel)} m ON m.id = v.model_id
                WHERE p.desired_state <> %s
                GROUP BY p.version_id, m.kind
            ), traffic AS (
                SELECT u.version_id AS version_id, SUM(u.invocations) AS requests
                FROM {_table(VersionUsageMinute)} u WHERE u.minute >= %s GROUP BY u.version_id
            )
            SELECT pl.kind, pl.host_mb, pl.gpu_mb, COALESCE(t.requests, 0), COUNT(*)
            FROM placed pl LEFT JOIN traffic t ON t.version_id = pl.version_id
            GROUP BY pl.kind, pl.host_mb, pl.gpu_mb, COALESCE(t.requests, 0)""",
            [Placement.DesiredState.UNLOADED, since],
        )
        groups = [
            ModelGroup(
                kind=kind,
                host_memory_mb=float(host),
                gpu_memory_mb=float(gpu),
                requests_per_hour=float(requests),
                count=count,
            )
            for kind, host, gpu, requests, count in cursor.fetchall()
        ]
    by_size = Counter()
    for group in groups:
        by_size[(group.host_memory_mb, group.gpu_memory_mb)] += group.count
    dedicated = dedicated_baseline_usd_per_hour(
        sizes=[PlacedSize(host, gpu, count * replicas) for (host, gpu), count in by_size.items()]
    )
    placed_models = sum(group.count for group in groups)
    if groups:
        plan = count_plan(
            groups=groups,
            instance_types=[instance_spec(instance_type)],
            policy=PlacementPolicy(target_utilization=target_utilization),
            replicas=replicas,
        )
        hourly = plan.usd_per_hour
        instances = sum(e.instances for e in plan.endpoints)
        endpoints = [
            {
                "endpoint": e.name,
                "kind": e.kind,
                "mode": e.mode,
                "instances": e.instances,
                "models": e.models,
            }
            for e in plan.endpoints
        ]
    else:
        hourly, instances, endpoints = 0.0, 0, []
    current = actual_usd_per_hour()
    return {
        "instance_type": instance_type.name,
        "target_utilization": round(float(target_utilization), 2),
        "replicas": replicas,
        "placed_models": placed_models,
        "instances": instances,
        "endpoints": endpoints,
        **_against_dedicated(hourly, dedicated),
        "current_usd_per_hour": money(current),
        "current_usd_per_month": money(current * HOURS_PER_MONTH),
    }
