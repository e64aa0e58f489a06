"""The control plane at 1,000 / 10,000 / 100,000 tenant models: dashboard, fleet API, reconciler.

For each size it seeds a fleet into its own PostgreSQL database with bulk inserts shaped like the
rows the platform's services write (tenants, one intent classifier each with one ready version,
placed on local multi-model endpoints of 100–500 models per instance, one live deployment per
model, an hour of traffic for a tenth of the models with the endpoint and fleet rollups, events),
then times each request in process (median of ``--repeat`` after one warm-up), counts the
database queries and the size of its answer on one more call, and times one reconciler pass
against a stand-in for the Triton servers (``bench/triton_standin.py``: one process answering
every instance's port, listing exactly what the database says is loaded, so the pass repairs
nothing).

    python bench/control_plane.py [--sizes 1000,10000,100000] [--repeat 5]

Without DATABASE_URL it uses ``postgres://postgres@127.0.0.1:5432/tenantml_bench``, dropped and
created again for each size; a DATABASE_URL of its own must name a PostgreSQL database whose
name starts with ``tenantml_bench`` (it is dropped too). The seeding (``seed_fleet``) is
importable; ``tests/test_bench_control_plane.py`` checks its shapes on a small fleet.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.db.models import Model

BENCH_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tenantml_bench"
BENCH_DATABASE_PREFIX = "tenantml_bench"
STANDIN = Path(__file__).resolve().parent / "triton_standin.py"
# argv[0] of the stand-in: the local backend only takes a process named tritonserver for one.
STANDIN_ARGV0 = "/opt/tenantml-bench/bin/tritonserver"
STANDIN_START_TIMEOUT_S = 60.0

MODEL_NAME = "intents"
MODEL_KIND = "intent-classifier"
PREMIUM_SHARE = 0.03
ACTIVE_SHARE = 0.10
USAGE_MINUTES = 60
FLEET_TREND_MINUTES = 6 * 60
# Budgets leave room above what an instance holds, as an 80 % utilization target does.
BUDGET_HEADROOM = 0.80
INSERT_BATCH = 5000

REQUESTS = (
    "fleet_costs",
    "fleet_utilization",
    "overview",
    "overview_poll",
    "overview_poll_unchanged",
    "endpoints_page",
    "endpoint_page",
    "tenants_page",
    "tenant_page",
    "what_if",
    "tenants_api",
)


# --- Seeding -----------------------------------------------------------------------------------


@dataclass
class SeededFleet:
    """What ``seed_fleet`` wrote, and what a benchmark needs to address it."""

    models: int
    endpoints: dict[str, int]  # endpoint name -> models placed on it
    instances: int
    # port -> the models the stand-in must list there ({"modelName", "modelUrl"})
    loaded_by_port: dict[int, list[dict]]
    metrics_ports: list[int]
    busiest_endpoint: str
    tenant_with_traffic: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def instance_sizes(*, models: int, rng: random.Random, low: int, high: int) -> list[int]:
    """How many models each instance holds: drawn between ``low`` and ``high`` (deterministic
    for ``rng``), the last draws adjusted so every instance stays within the range (a fleet
    smaller than ``low`` is one instance)."""
    sizes: list[int] = []
    remaining = models
    while remaining > 0:
        take = rng.randint(low, high)
        if remaining - take < low:
            take = remaining if remaining <= high else remaining - low
        sizes.append(take)
        remaining -= take
    return sizes


def insert_rows(model: type[Model], rows: Iterable[dict]) -> int:
    """Insert ``rows`` (field attname -> value; missing fields take their defaults, timestamps
    now) in bulk: COPY on PostgreSQL, batched INSERTs elsewhere. Returns the rows written."""
    from django.db import connection
    from django.db.models import DateTimeField, DecimalField, JSONField
    from django.utils import timezone

    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return 0
    rows = itertools.chain([first], rows)
    now = timezone.now()
    # Rows that bring their own keys keep them; the others get the table's sequence.
    fields = [
        f for f in model._meta.concrete_fields if not (f.primary_key and f.attname not in first)
    ]
    postgres = connection.vendor == "postgresql"
    needs_prep = (JSONField,) if postgres else (JSONField, DateTimeField, DecimalField)
    preps = [
        (lambda value, f=f: f.get_db_prep_save(value, connection))
        if isinstance(f, needs_prep)
        else None
        for f in fields
    ]
    defaults = []
    for f in fields:
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            defaults.append(lambda: now)
        else:  # the field's default, else "" for text and None for the rest, as Django does
            defaults.append(f.get_default)
    names = [f.attname for f in fields]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)

    def values(row: dict) -> tuple:
        out = []
        for name, default, prep in zip(names, defaults, preps, strict=True):
            value = row[name] if name in row else default()
            out.append(prep(value) if prep is not None and value is not None else value)
        return tuple(out)

    written = 0
    with connection.cursor() as cursor:
        if postgres:
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(values(row))
                    written += 1
        else:
            marks = ", ".join(["%s"] * len(fields))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            while batch := [values(row) for row in itertools.islice(rows, INSERT_BATCH)]:
                cursor.executemany(sql, batch)
                written += len(batch)
    return written


def _next_ids(*models: type[Model]) -> list[int]:
    """The first free primary key of each table (rows are inserted with explicit keys)."""
    from django.db.models import Max

    return [(m.objects.aggregate(top=Max("pk"))["top"] or 0) + 1 for m in models]


def _reset_sequences(*models: type[Model]) -> None:
    from django.core.management.color import no_style
    from django.db import connection

    statements = connection.ops.sequence_reset_sql(no_style(), list(models))
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _histogram(rng: random.Random, invocations: int, cold_starts: int) -> tuple[dict, float, float]:
    """A minute's latency histogram (the platform's bucket keys, non-empty buckets only), the
    latency sum and the slowest request: warm requests of a few ms, cold starts of seconds."""
    from deployments.usage import bucket_for

    warm = invocations - cold_starts
    fast = int(warm * (0.55 + 0.3 * rng.random()))
    slower = int((warm - fast) * 0.8)
    slowest = warm - fast - slower
    histogram: dict[str, int] = defaultdict(int)
    latency_sum = 0.0
    latency_max = 0.0
    for count, latency_ms in (
        (fast, 4.0 + 4.0 * rng.random()),
        (slower, 9.0 + 12.0 * rng.random()),
        (slowest, 30.0 + 60.0 * rng.random()),
        (cold_starts, 500.0 + 2000.0 * rng.random()),
    ):
        if count <= 0:
            continue
        histogram[bucket_for(latency_ms)] += count
        latency_sum += count * latency_ms
        latency_max = max(latency_max, latency_ms)
    return dict(histogram), round(latency_sum, 3), round(latency_max, 3)


def seed_usage(
    *,
    placements: list[dict],
    instances: list[dict],
    tenant_of_version: dict[int, int],
    active_versions: list[int],
    minute: datetime,
    rng: random.Random,
) -> dict[str, int]:
    """An hour of traffic for ``active_versions`` and the rollups kept beside it.

    ``VersionUsageMinute`` for each active version and each of the last 60 minutes;
    ``EndpointUsageMinute`` per endpoint and minute, the sums of that endpoint's version rows
    (histograms merged key by key); ``InstanceUsageMinute`` per instance and minute (memory
    held, models loaded, its models' traffic); ``FleetUsageMinute`` per minute for the last six
    hours (the fleet as seeded). Returns rows written per table.
    """
    from deployments.models import (
        EndpointUsageMinute,
        FleetUsageMinute,
        InstanceType,
        InstanceUsageMinute,
        VersionUsageMinute,
    )

    placement_of = {p["version_id"]: p for p in placements}
    minutes = [minute - timedelta(minutes=back) for back in range(USAGE_MINUTES)]
    by_endpoint: dict[tuple[int, datetime], dict] = {}
    by_instance: dict[tuple[int, datetime], list[int]] = defaultdict(lambda: [0, 0])

    def version_rows() -> Iterator[dict]:
        for version_id in active_versions:
            placement = placement_of[version_id]
            rate = rng.choice((2, 5, 10, 20, 60, 200))  # requests a minute, heavy-tailed
            for at in minutes:
                invocations = max(1, int(rate * (0.5 + rng.random())))
                cold_starts = 1 if rng.random() < 0.02 else 0
                errors = 1 if invocations > 5 and rng.random() < 0.01 else 0
                histogram, latency_sum, latency_max = _histogram(rng, invocations, cold_starts)
                row = {
                    "version_id": version_id,
                    "endpoint_id": placement["endpoint_id"],
                    "tenant_id": tenant_of_version[version_id],
                    "minute": at,
                    "invocations": invocations,
                    "errors": errors,
                    "cold_starts": cold_starts,
                    "cache_hits": invocations - cold_starts - errors,
                    "latency_ms_sum": latency_sum,
                    "latency_ms_max": latency_max,
                    "latency_histogram": histogram,
                }
                total = by_endpoint.get((placement["endpoint_id"], at))
                if total is None:
                    total = by_endpoint[(placement["endpoint_id"], at)] = {
                        "endpoint_id": placement["endpoint_id"],
                        "minute": at,
                        "invocations": 0,
                        "errors": 0,
                        "cold_starts": 0,
                        "cache_hits": 0,
                        "latency_ms_sum": 0.0,
                        "latency_ms_max": 0.0,
                        "latency_histogram": {},
                    }
                for key in ("invocations", "errors", "cold_starts", "cache_hits"):
                    total[key] += row[key]
                total["latency_ms_sum"] += latency_sum
                total["latency_ms_max"] = max(total["latency_ms_max"], latency_max)
                merged = total["latency_histogram"]
                for bucket, count in histogram.items():
                    merged[bucket] = merged.get(bucket, 0) + count
                on_instance = by_instance[(placement["instance_id"], at)]
                on_instance[0] += invocations
                on_instance[1] += cold_starts
                yield row

    written = {"VersionUsageMinute": insert_rows(VersionUsageMinute, version_rows())}
    written["EndpointUsageMinute"] = insert_rows(
        EndpointUsageMinute,
        (
            {**total, "latency_ms_sum": round(total["latency_ms_sum"], 3)}
            for _, total in sorted(by_endpoint.items(), key=lambda item: (item[0][0], item[0][1]))
        ),
    )
    held: dict[int, float] = defaultdict(float)
    loaded: dict[int, int] = defaultdict(int)
    for placement in placements:
        held[placement["instance_id"]] += placement["host_memory_mb"]
        loaded[placement["instance_id"]] += 1
    written["InstanceUsageMinute"] = insert_rows(
        InstanceUsageMinute,
        (
            {
                "instance_id": instance["id"],
                "minute": at,
                "host_memory_used_mb": round(held[instance["id"]], 1),
                "models_loaded": loaded[instance["id"]],
                "invocations": by_instance.get((instance["id"], at), (0, 0))[0],
                "cold_starts": by_instance.get((instance["id"], at), (0, 0))[1],
            }
            for instance in instances
            for at in minutes
        ),
    )
    local = InstanceType.objects.get(name="local")
    # The dedicated baseline: one cheapest catalog instance per model (each fits any type).
    cheapest = InstanceType.objects.filter(available=True).order_by("usd_per_hour").first()
    fleet = {
        "instances": len(instances),
        "memory_measured_instances": len(instances),
        "host_memory_used_mb": round(sum(held.values()), 1),
        "host_memory_budget_mb": float(sum(i["memory_budget_mb"] for i in instances)),
        "models_loaded": len(placements),
        "models_placed": len(placements),
        "usd_per_hour": round(float(local.usd_per_hour) * len(instances), 4),
        "dedicated_usd_per_hour": round(float(cheapest.usd_per_hour) * len(placements), 4),
    }
    written["FleetUsageMinute"] = insert_rows(
        FleetUsageMinute,
        (
            {**fleet, "minute": minute - timedelta(minutes=back)}
            for back in range(FLEET_TREND_MINUTES)
        ),
    )
    return written


def _registry_rows(*, models: int, rng: random.Random, now: datetime) -> tuple[list, list]:
    """Tenant rows (a few percent premium) and one ready, measured version row per tenant's
    model; versions carry their Triton name and deployment time for the rows that follow."""
    from models_registry.models import ModelVersion, TenantModel, triton_model_name
    from tenants.models import Tenant

    tenant_start, model_start, version_start = _next_ids(Tenant, TenantModel, ModelVersion)
    tenants, versions = [], []
    for index in range(models):
        slug = f"t{index + 1:05d}"
        created = now - timedelta(days=30, minutes=index % 1440)
        premium = rng.random() < PREMIUM_SHARE
        tenants.append(
            {
                "id": tenant_start + index,
                "slug": slug,
                "name": f"Tenant {index + 1:05d}",
                "tier": Tenant.Tier.PREMIUM if premium else Tenant.Tier.STANDARD,
                "created_at": created,
                "updated_at": created,
            }
        )
        trained = created + timedelta(days=1)
        versions.append(
            {
                "id": version_start + index,
                "model_id": model_start + index,
                "number": 1,
                "status": ModelVersion.Status.READY,
                "artifact_uri": f"artifacts/{slug}/{MODEL_NAME}/v1",
                "package_uri": f"packages/{slug}/{MODEL_NAME}/v1/model.tar.gz",
                "sha256": hashlib.sha256(f"{slug}/{MODEL_NAME}/v1".encode()).hexdigest(),
                "size_bytes": rng.randint(20, 26) * 1024 * 1024,
                "host_memory_mb": round(rng.uniform(90.0, 140.0), 1),
                "metrics": {"macro_f1": round(rng.uniform(0.8, 0.97), 4)},
                "promoted_at": trained,
                "created_at": trained,
                "updated_at": trained,
                # Not columns: what the rows after these need.
                "tenant_id": tenant_start + index,
                "pinned": premium,
                "deployed_at": trained + timedelta(hours=1),
                "triton_name": triton_model_name(tenant_slug=slug, model_name=MODEL_NAME, number=1),
            }
        )
    return tenants, versions


def _insert_registry(*, tenants: list[dict], versions: list[dict]) -> None:
    """Tenants, their models (the version active) and the versions."""
    from models_registry.models import ModelVersion, TenantModel
    from tenants.models import Tenant

    insert_rows(Tenant, tenants)
    insert_rows(
        TenantModel,
        (
            {
                "id": version["model_id"],
                "tenant_id": version["tenant_id"],
                "name": MODEL_NAME,
                "kind": MODEL_KIND,
                "active_version_id": version["id"],
                "created_at": tenant["created_at"],
                "updated_at": version["created_at"],
            }
            for tenant, version in zip(tenants, versions, strict=True)
        ),
    )
    insert_rows(ModelVersion, versions)


@dataclass
class _Serving:
    """What ``_seed_serving`` placed: rows the usage and events refer to, and the ports."""

    endpoints: dict[int, str] = field(default_factory=dict)  # id -> name
    endpoint_models: dict[str, int] = field(default_factory=dict)
    instances: list[dict] = field(default_factory=list)  # id, label, memory_budget_mb
    placements: list[dict] = field(default_factory=list)
    loaded_by_port: dict[int, list[dict]] = field(default_factory=dict)
    metrics_ports: list[int] = field(default_factory=list)


def _seed_serving(
    *,
    versions: list[dict],
    sizes: list[int],
    instances_per_endpoint: int,
    ports: Iterator[int],
    now: datetime,
) -> _Serving:
    """Local MME endpoints of up to ``instances_per_endpoint`` instances, holding ``sizes``
    models each, with each instance's budget above what it holds (through the ORM: few rows)."""
    from django.conf import settings

    from deployments.models import Endpoint, Instance, InstanceType

    local = InstanceType.objects.get(name="local")
    var_dir = Path(settings.VAR_DIR) / "triton"
    serving = _Serving()
    first = 0
    for number, start in enumerate(range(0, len(sizes), instances_per_endpoint), start=1):
        chunk = sizes[start : start + instances_per_endpoint]
        endpoint = Endpoint.objects.create(
            name=f"local-{MODEL_KIND}-{number:02d}",
            backend=Endpoint.Backend.LOCAL,
            mode=Endpoint.Mode.MME,
            status=Endpoint.Status.IN_SERVICE,
            instance_type=local,
            model_kind=MODEL_KIND,
            min_instances=1,
            max_instances=len(chunk),
        )
        serving.endpoints[endpoint.pk] = endpoint.name
        serving.endpoint_models[endpoint.name] = sum(chunk)
        for ordinal, size in enumerate(chunk):
            members = versions[first : first + size]
            first += size
            held_mb = sum(v["host_memory_mb"] for v in members)
            port, metrics_port = next(ports), next(ports)
            instance = Instance.objects.create(
                endpoint=endpoint,
                ordinal=ordinal,
                status=Instance.Status.HEALTHY,
                host="127.0.0.1",
                port=port,
                metrics_port=metrics_port,
                external_id=str(var_dir / "instances" / f"{endpoint.name}-{ordinal}"),
                memory_budget_mb=math.ceil(held_mb / BUDGET_HEADROOM / 1024) * 1024,
                started_at=now - timedelta(days=2),
                last_health_at=now - timedelta(seconds=30),
            )
            serving.instances.append(
                {
                    "id": instance.pk,
                    "label": f"{endpoint.name}/{ordinal}",
                    "memory_budget_mb": instance.memory_budget_mb,
                }
            )
            serving.metrics_ports.append(metrics_port)
            serving.loaded_by_port[port] = [
                {"modelName": v["triton_name"], "modelUrl": str(var_dir / "models" / v["sha256"])}
                for v in members
            ]
            serving.placements += [
                {"version_id": v["id"], "endpoint_id": endpoint.pk, "instance_id": instance.pk}
                for v in members
            ]
    return serving


def _insert_placements_and_deployments(
    *, versions: list[dict], serving: _Serving, active: set[int], rng: random.Random, now
) -> None:
    """One placement per version, loaded (pinned for premium tenants), and its live deployment;
    ``active`` versions were invoked in the last two minutes."""
    from deployments.models import Deployment, Endpoint, Placement

    placement_start, deployment_start = _next_ids(Placement, Deployment)
    for index, (version, placement) in enumerate(zip(versions, serving.placements, strict=True)):
        deployed_at = version["deployed_at"]
        placement.update(
            id=placement_start + index,
            desired_state=Placement.DesiredState.PINNED
            if version["pinned"]
            else Placement.DesiredState.LOADED,
            actual_state=Placement.ActualState.LOADED,
            host_memory_mb=version["host_memory_mb"],
            load_time_ms=round(rng.uniform(400.0, 2500.0), 1),
            loaded_at=deployed_at,
            created_at=deployed_at,
            updated_at=deployed_at,
            last_warmed_at=now - timedelta(minutes=rng.randint(1, 59)),
        )
        if version["id"] in active:
            placement["last_invoked_at"] = now - timedelta(seconds=rng.randint(1, 120))
    insert_rows(Placement, serving.placements)
    insert_rows(
        Deployment,
        (
            {
                "id": deployment_start + index,
                "model_id": version["model_id"],
                "mode": Endpoint.Mode.MME,
                "backend": Endpoint.Backend.LOCAL,
                "endpoint_id": placement["endpoint_id"],
                "replicas": 1,
                "live_version_id": version["id"],
                "status": Deployment.Status.LIVE,
                "rollout_started_at": version["deployed_at"] - timedelta(seconds=20),
                "live_since": version["deployed_at"],
                "created_at": version["deployed_at"] - timedelta(seconds=20),
                "updated_at": version["deployed_at"],
            }
            for index, (version, placement) in enumerate(
                zip(versions, serving.placements, strict=True)
            )
        ),
    )


def _insert_events(*, versions: list[dict], serving: _Serving) -> int:
    """What a deploy records for each model: requested, loaded on its instance, switched."""
    from deployments.models import Event

    label = {instance["id"]: instance["label"] for instance in serving.instances}

    def events() -> Iterator[dict]:
        for version, placement in zip(versions, serving.placements, strict=True):
            at = version["deployed_at"]
            model = version["triton_name"].rsplit(".", 1)[0].replace(".", "/")
            common = {"tenant_id": version["tenant_id"], "version_id": version["id"]}
            yield {
                **common,
                "created_at": at - timedelta(seconds=20),
                "kind": "deployment.requested",
                "actor": "api",
                "message": f"{model}: deploy v1 as mme on the local backend.",
                "data": {"mode": "mme", "backend": "local", "replicas": 1},
            }
            yield {
                **common,
                "created_at": at - timedelta(seconds=2),
                "kind": "placement.loaded",
                "actor": "rollout",
                "endpoint_id": placement["endpoint_id"],
                "instance_id": placement["instance_id"],
                "message": (
                    f"{model} v1 loaded on {label[placement['instance_id']]} in "
                    f"{placement['load_time_ms']:,.0f} ms, "
                    f"{placement['host_memory_mb']:,.0f} MB resident."
                ),
                "data": {
                    "load_time_ms": placement["load_time_ms"],
                    "host_memory_mb": placement["host_memory_mb"],
                },
            }
            yield {
                **common,
                "created_at": at,
                "kind": "deployment.switched",
                "actor": "rollout",
                "endpoint_id": placement["endpoint_id"],
                "message": (
                    f"{model}: traffic now goes to v1 on "
                    f"{serving.endpoints[placement['endpoint_id']]}."
                ),
                "data": {"previous": None},
            }

    return insert_rows(Event, events())


def seed_fleet(
    *,
    models: int,
    seed: int = 20261207,
    models_per_instance: tuple[int, int] = (100, 500),
    instances_per_endpoint: int = 20,
    ports: Iterator[int] | None = None,
    now: datetime | None = None,
) -> SeededFleet:
    """Seed ``models`` tenants, each with one live intent classifier, placed on local endpoints.

    Every row is the shape the platform's services write: a ready version with a measured
    memory, one placement loaded on an instance (pinned for premium tenants), one live
    deployment, a few events; an hour of traffic for a tenth of the models (``seed_usage``).
    ``ports`` hands out each instance's port and then its metrics port (default from 20000: the
    database only). Deterministic for ``seed``; one transaction.
    """
    from django.db import transaction
    from django.utils import timezone

    from deployments.models import Deployment, Placement
    from models_registry.models import ModelVersion, TenantModel
    from tenants.models import Tenant

    started = time.perf_counter()
    rng = random.Random(seed)
    now = now or timezone.now()
    low, high = models_per_instance
    sizes = instance_sizes(models=models, rng=rng, low=low, high=high)
    with transaction.atomic():
        tenants, versions = _registry_rows(models=models, rng=rng, now=now)
        _insert_registry(tenants=tenants, versions=versions)
        serving = _seed_serving(
            versions=versions,
            sizes=sizes,
            instances_per_endpoint=instances_per_endpoint,
            ports=ports if ports is not None else itertools.count(20000),
            now=now,
        )
        active = sorted(rng.sample(range(models), max(1, int(models * ACTIVE_SHARE))))
        active_versions = [versions[index]["id"] for index in active]
        _insert_placements_and_deployments(
            versions=versions, serving=serving, active=set(active_versions), rng=rng, now=now
        )
        rows = {
            "Tenant": len(tenants),
            "TenantModel": len(versions),
            "ModelVersion": len(versions),
            "Endpoint": len(serving.endpoints),
            "Instance": len(serving.instances),
            "Placement": len(serving.placements),
            "Deployment": len(versions),
            "Event": _insert_events(versions=versions, serving=serving),
        }
        rows |= seed_usage(
            placements=serving.placements,
            instances=serving.instances,
            tenant_of_version={v["id"]: v["tenant_id"] for v in versions},
            active_versions=active_versions,
            minute=now.replace(second=0, microsecond=0),
            rng=rng,
        )
        _reset_sequences(Tenant, TenantModel, ModelVersion, Placement, Deployment)
    return SeededFleet(
        models=models,
        endpoints=serving.endpoint_models,
        instances=len(serving.instances),
        loaded_by_port=serving.loaded_by_port,
        metrics_ports=serving.metrics_ports,
        busiest_endpoint=max(serving.endpoint_models.items(), key=lambda item: item[1])[0],
        tenant_with_traffic=tenants[active[0]]["slug"],
        rows=rows,
        seconds=time.perf_counter() - started,
    )


def seed_access(*, actor: str = "bench") -> tuple[AbstractBaseUser, str]:
    """A staff user for the dashboard and a platform API token; returns (user, token secret)."""
    from django.contrib.auth import get_user_model

    from tenants.services import issue_token

    user = get_user_model().objects.create_user(
        username="bench-operator", password="not-used-bench", is_staff=True
    )
    secret = issue_token(name="bench-platform", tenant=None, actor=actor).secret
    return user, secret


# --- The database and the stand-in -------------------------------------------------------------


def bench_database_url() -> str:
    """DATABASE_URL, set to the benchmark's own database when unset; refuses any other one."""
    url = os.environ.setdefault("DATABASE_URL", BENCH_DATABASE_URL)
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgres", "postgresql") or not name.startswith(BENCH_DATABASE_PREFIX):
        raise SystemExit(
            f"DATABASE_URL must name a PostgreSQL database called {BENCH_DATABASE_PREFIX}*: "
            "the benchmark drops and creates it for each size."
        )
    return url


def recreate_database(url: str) -> None:
    """Drop and create the benchmark's database (through the server's ``postgres`` database)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


class PortPool:
    """Free TCP ports, each held bound until ``release`` so no two instances get the same one."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        self._held.append(probe)
        return probe.getsockname()[1]

    def release(self) -> None:
        """Let the stand-in bind them."""
        for probe in self._held:
            probe.close()
        self._held.clear()


@dataclass
class Standin:
    """The running stand-in process and its listing file."""

    process: subprocess.Popen
    listing: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> dict[int, dict[str, int]]:
        """Stop it, remove its listing, and return what each instance port was asked."""
        output = ""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                output, _ = self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.listing.unlink(missing_ok=True)
        for line in output.splitlines():
            if line.startswith("requests "):
                return {int(port): asked for port, asked in json.loads(line[9:]).items()}
        return {}


def start_standin(fleet: SeededFleet) -> Standin:
    """Start one stand-in serving every instance port of ``fleet``; returns once all listen."""
    handle, name = tempfile.mkstemp(prefix="tenantml-standin-", suffix=".json")
    listing = Path(name)
    with os.fdopen(handle, "w") as out:
        json.dump({str(port): models for port, models in fleet.loaded_by_port.items()}, out)
    argv = [STANDIN_ARGV0, str(STANDIN), f"--models-file={listing}"]
    argv += [f"--sagemaker-port={port}" for port in fleet.loaded_by_port]
    argv += [f"--metrics-port={port}" for port in fleet.metrics_ports]
    process = subprocess.Popen(
        argv, executable=sys.executable, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    standin = Standin(process=process, listing=listing)
    deadline = time.monotonic() + STANDIN_START_TIMEOUT_S
    line = ""
    while time.monotonic() < deadline and process.poll() is None:
        line = process.stdout.readline()
        if line.startswith("ready"):
            return standin
    standin.stop()
    raise RuntimeError(f"The Triton stand-in did not start (rc {process.returncode}): {line!r}")


# --- Measuring ---------------------------------------------------------------------------------


def figures_version(client) -> str:
    """The digest the overview's figures carry (what its refresh sends back as If-None-Match)."""
    import re

    page = client.get("/dashboard/").content.decode()
    return re.search(r'data-figures-version="([0-9a-f]+)"', page).group(1)


def measure(call: Callable[[], object], *, repeat: int) -> dict:
    """One warm-up call, ``repeat`` timed calls (median), then one call counting its queries;
    every answer must be 200 (or 204, a refresh with nothing new)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def checked():
        response = call()
        if response.status_code not in (200, 204):
            raise RuntimeError(
                f"{response.status_code} from {response.request.get('PATH_INFO')}: "
                f"{response.content[:500]!r}"
            )
        return response

    checked()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        checked()
        samples.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as queries:
        response = checked()
    return {
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "queries": len(queries.captured_queries),
        "kb": round(len(response.content) / 1024, 1),
        "samples_ms": [round(s * 1000, 2) for s in samples],
    }


def measure_requests(
    *, fleet: SeededFleet, user: AbstractBaseUser, secret: str, repeat: int
) -> dict:
    """Every dashboard and API request of the benchmark, by name."""
    from django.test import Client

    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    staff = Client()
    staff.force_login(user)
    shown = {"etag": f'"{figures_version(staff)}"'}

    def poll_unchanged():
        # As the page does: send the figures it shows; a 200 (the last hour's window moved past a
        # minute of traffic) shows new ones, which the next poll sends.
        response = staff.get(
            "/dashboard/",
            HTTP_HX_REQUEST="true",
            HTTP_HX_TARGET="overview-figures",
            HTTP_IF_NONE_MATCH=shown["etag"],
        )
        if response.status_code == 200:
            shown["etag"] = response["ETag"]
        return response

    calls: dict[str, Callable[[], object]] = {
        "fleet_costs": lambda: api.get("/api/v1/fleet/costs"),
        "fleet_utilization": lambda: api.get("/api/v1/fleet/utilization"),
        "overview": lambda: staff.get("/dashboard/"),
        # The page's refresh also sends If-None-Match and gets 204 while nothing changed; without
        # it this is the refresh's answer when a figure did change.
        "overview_poll": lambda: staff.get(
            "/dashboard/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="overview-figures"
        ),
        # What the refresh gets while its figures hold still: 204, nothing to render or send.
        "overview_poll_unchanged": poll_unchanged,
        "endpoints_page": lambda: staff.get("/dashboard/endpoints/"),
        "endpoint_page": lambda: staff.get(f"/dashboard/endpoints/{fleet.busiest_endpoint}/"),
        "tenants_page": lambda: staff.get("/dashboard/tenants/"),
        "tenant_page": lambda: staff.get(f"/dashboard/tenants/{fleet.tenant_with_traffic}/"),
        "what_if": lambda: staff.post(
            "/dashboard/what-if/",
            {"instance_type": "ml.m5.xlarge", "target_utilization": "0.8", "replicas": "1"},
        ),
        "tenants_api": lambda: api.get("/api/v1/tenants/"),
    }
    results = {}
    for name in REQUESTS:
        try:
            results[name] = r = measure(calls[name], repeat=repeat)
        except Exception as exc:  # measured on: the failure is reported with the table
            results[name] = {"median_ms": None, "queries": None, "kb": None, "error": repr(exc)}
            print(f"  {name:<18} FAILED: {exc!r}"[:400])
            continue
        print(f"  {name:<18} {r['median_ms']:>10,.1f} ms {r['queries']:>6} q {r['kb']:>9,.1f} kb")
    return results


def measure_sample() -> dict:
    """The minute sampler, as the platform runs it every minute: a first pass (it ranks every
    tenant's share for the first time) and a timed second one (the steady state). The requests
    are then measured with its ranking fresh, as on a running platform."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from deployments.services.fleet import sample_fleet_utilization

    started = time.perf_counter()
    sample_fleet_utilization()
    first_s = time.perf_counter() - started
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        sampled = sample_fleet_utilization()
        seconds = time.perf_counter() - started
    print(
        f"  sample_pass        {seconds * 1000:>10,.1f} ms {len(queries):>6} q  "
        f"({sampled} instances; first pass {first_s:,.2f} s)"
    )
    return {
        "median_ms": round(seconds * 1000, 2),
        "seconds": round(seconds, 3),
        "first_pass_seconds": round(first_s, 3),
        "queries": len(queries),
        "kb": None,
    }


def measure_reconcile(*, fleet: SeededFleet) -> dict:
    """One warm-up reconciler pass and one timed pass; both must find nothing to repair."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from deployments.services.reconciler import reconcile_fleet

    def checked_pass():
        report = reconcile_fleet()
        problems = []
        if report.instances_checked != fleet.instances:
            problems.append(f"checked {report.instances_checked} of {fleet.instances} instances")
        if report.changed or report.errors:
            problems.append(
                f"repaired something: restarted {len(report.instances_restarted)}, "
                f"reloaded {len(report.reloaded)}, missing {len(report.marked_missing)}, "
                f"orphans {len(report.orphans_unloaded)}, trimmed {len(report.trimmed)}, "
                f"errors {report.errors[:3]}"
            )
        if problems:
            raise RuntimeError(
                "The reconciler pass did not find the fleet as seeded: " + "; ".join(problems)
            )
        return report

    checked_pass()
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        report = checked_pass()
        seconds = time.perf_counter() - started
    print(
        f"  reconcile_pass     {seconds * 1000:>10,.1f} ms {len(queries.captured_queries):>6} q"
        f"  ({report.instances_checked} of {fleet.instances} instances checked, none restarted,"
        " nothing repaired)"
    )
    return {
        "median_ms": round(seconds * 1000, 2),
        "seconds": round(seconds, 3),
        "queries": len(queries.captured_queries),
        "kb": 0.0,
        "instances_checked": report.instances_checked,
        "instances_restarted": len(report.instances_restarted),
        "repaired": report.changed,
    }


def check_ports_reached(*, fleet: SeededFleet, asked: dict[int, dict[str, int]]) -> int:
    """Every instance port was pinged and listed by both reconciler passes (the stand-in's own
    count); returns the number of ports reached."""
    reached = [
        port
        for port in fleet.loaded_by_port
        if asked.get(port, {}).get("GET /ping", 0) >= 2
        and asked.get(port, {}).get("GET /models", 0) >= 2
    ]
    if len(reached) != fleet.instances:
        raise RuntimeError(
            f"The stand-in saw both passes on {len(reached)} of {fleet.instances} instance ports."
        )
    print(f"  the stand-in answered /ping and /models on all {len(reached)} ports in both passes")
    return len(reached)


def run_size(*, models: int, repeat: int, url: str, django_ready: bool) -> dict:
    """Seed one fleet of ``models`` in a fresh database and measure everything on it."""
    import harness

    print(f"\n== {models:,} tenant models ==")
    if django_ready:
        from django.db import connections

        connections.close_all()
    recreate_database(url)
    started = time.perf_counter()
    if django_ready:
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
    else:
        harness.setup_django()
    migrate_s = time.perf_counter() - started
    ports = PortPool()
    fleet = seed_fleet(models=models, ports=ports)
    user, secret = seed_access()
    ports.release()
    print(
        f"  seeded in {fleet.seconds:,.1f} s (migrate {migrate_s:,.1f} s): "
        f"{fleet.instances} instances on {len(fleet.endpoints)} endpoints; "
        + ", ".join(f"{name} {count:,}" for name, count in fleet.rows.items())
    )
    from django.db import connection

    from deployments.models import Instance

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would soon after a bulk load
    sample = measure_sample()
    standin = start_standin(fleet)
    try:
        Instance.objects.update(pid=standin.pid)
        results = measure_requests(fleet=fleet, user=user, secret=secret, repeat=repeat)
        results["sample_pass"] = sample
        try:
            results["reconcile_pass"] = measure_reconcile(fleet=fleet)
        except Exception as exc:
            results["reconcile_pass"] = {"median_ms": None, "queries": None, "kb": None}
            results["reconcile_pass"]["error"] = repr(exc)
            print(f"  reconcile_pass     FAILED: {exc!r}"[:400])
    finally:
        asked = standin.stop()
    if "error" not in results["reconcile_pass"]:
        try:
            results["reconcile_pass"]["ports_reached"] = check_ports_reached(
                fleet=fleet, asked=asked
            )
        except RuntimeError as exc:
            results["reconcile_pass"]["error"] = str(exc)
            print(f"  reconcile_pass     FAILED: {exc}")
    return {
        **results,
        "seeding": {
            "seconds": round(fleet.seconds, 1),
            "migrate_seconds": round(migrate_s, 1),
            "rows": fleet.rows,
            "endpoints": len(fleet.endpoints),
            "instances": fleet.instances,
            "busiest_endpoint": fleet.busiest_endpoint,
            "busiest_endpoint_models": fleet.endpoints[fleet.busiest_endpoint],
        },
    }


def summary(sizes: dict[str, dict]) -> dict:
    """The top-level figures: the slowest request at 10k and 100k, the 100k pass and page."""

    def worst(size: str) -> tuple[float | None, str | None]:
        if size not in sizes:
            return None, None
        name = max(REQUESTS, key=lambda n: sizes[size][n]["median_ms"])
        return sizes[size][name]["median_ms"], name

    worst_10k, worst_10k_name = worst("10000")
    worst_100k, worst_100k_name = worst("100000")
    at_100k = sizes.get("100000")
    return {
        "worst_ms_10k": worst_10k,
        "worst_request_10k": worst_10k_name,
        "worst_ms_100k": worst_100k,
        "worst_request_100k": worst_100k_name,
        "reconcile_pass_s_100k": at_100k["reconcile_pass"]["seconds"] if at_100k else None,
        "sample_pass_s_100k": at_100k["sample_pass"]["seconds"] if at_100k else None,
        "largest_page_kb_100k": max(at_100k[n]["kb"] for n in REQUESTS) if at_100k else None,
    }


def main() -> None:
    """Run every size, print the table and write ``bench/results/control_plane.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    counts = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    url = bench_database_url()

    import harness

    sizes: dict[str, dict] = {}
    for index, models in enumerate(counts):
        sizes[str(models)] = run_size(
            models=models, repeat=args.repeat, url=url, django_ready=index > 0
        )
    columns = ["request"]
    for models in counts:
        columns += [f"{models:,} ms", "queries", "kb"]
    table = []
    for name in (*REQUESTS, "sample_pass", "reconcile_pass"):
        row = [name]
        for models in counts:
            r = sizes[str(models)][name]
            row += ["FAILED", "", ""] if "error" in r else [r["median_ms"], r["queries"], r["kb"]]
        table.append(row)
    table.append(
        ["seeding (s)"]
        + [
            value
            for models in counts
            for value in (sizes[str(models)]["seeding"]["seconds"], "", "")
        ]
    )
    harness.print_table(
        f"Control plane, median of {args.repeat} after one warm-up (in process, PostgreSQL)",
        columns,
        table,
    )
    failures = [
        f"{models:,} models, {name}: {result['error']}"
        for models in counts
        for name, result in sizes[str(models)].items()
        if isinstance(result, dict) and "error" in result
    ]
    if failures:
        print("\nFAILED (no results written):\n  " + "\n  ".join(failures), file=sys.stderr)
        raise SystemExit(1)
    totals = summary(sizes)
    print("\n" + ", ".join(f"{key} {value}" for key, value in totals.items()))
    harness.write_results("control_plane", {"repeat": args.repeat, "sizes": sizes, **totals})


if __name__ == "__main__":
    main()
