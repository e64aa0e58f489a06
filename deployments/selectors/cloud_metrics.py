"""Reads of the cloud's own figures (``CloudMetricMinute``, written by the CloudWatch pass) for
the endpoint and overview pages: the cold-start figures Zendesk watched on its multi-model
endpoints (cache hit rate, loading, waiting and downloading times, models loaded), latency,
utilization, and their trends.

Every figure is aggregated in the database over an endpoint's variant rows (``component``
empty); an inference component's rows are read only for one endpoint's busiest components. A
page makes a fixed number of queries whatever the number of endpoints, models or minutes.
Times are stored as Sum and SampleCount in microseconds, so a window's mean is exact: the sum of
its Sums over the sum of its SampleCounts; the pages show milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Avg, Case, F, FloatField, Q, Sum, Value, When
from django.utils import timezone

from deployments.backends import backends_reporting_cloud_metrics
from deployments.models import BackgroundPass, CloudMetricMinute, Endpoint
from deployments.passes import CLOUD_METRICS
from deployments.selectors.traffic import TRAFFIC_WINDOW_MINUTES
from tenants.access import Caller

# How recent a minute must be for its gauges (models loaded, utilization) to count as "now".
LATEST_MINUTES = 15
TREND_HOURS = 6
TREND_BUCKET_MINUTES = 5
# Rows of the overview's table and of an endpoint's inference-component table.
OVERVIEW_ENDPOINTS = 10
TOP_COMPONENTS = 10

TIMES = {
    "model_latency": "ModelLatency",
    "loading_wait": "ModelLoadingWaitTime",
    "loading": "ModelLoadingTime",
    "downloading": "ModelDownloadingTime",
    "unloading": "ModelUnloadingTime",
}
GAUGES = {
    "loaded_models": ("LoadedModelCount", "Sum"),
    "cpu_utilization": ("CPUUtilization", "Average"),
    "memory_utilization": ("MemoryUtilization", "Average"),
    "gpu_memory_utilization": ("GPUMemoryUtilization", "Average"),
}
TREND_METRICS = (
    "Invocations",
    "ModelCacheHit",
    "ModelLoadingWaitTime",
    "ModelLatency",
    "CPUUtilization",
    "MemoryUtilization",
    "GPUMemoryUtilization",
)


def _ms(total_us: float, count: float) -> float | None:
    return round(total_us / count / 1000, 2) if count else None


def summarize(*, sums: dict[tuple[str, str], float], gauges: dict[str, float]) -> dict:
    """A window's figures from its sums per (metric, statistic) and its latest gauges."""
    requests = sums.get(("ModelCacheHit", "SampleCount"), 0.0)
    hits = sums.get(("ModelCacheHit", "Sum"), 0.0)
    figures: dict = {
        "invocations": int(round(sums.get(("Invocations", "Sum"), 0.0))),
        "cache_requests": int(round(requests)),
        "cache_hits": int(round(hits)),
        "cache_misses": int(round(requests - hits)),
        "cache_hit_rate": round(hits / requests, 4) if requests else None,
    }
    for name, metric in TIMES.items():
        count = sums.get((metric, "SampleCount"), 0.0)
        figures[f"{name}_ms"] = _ms(sums.get((metric, "Sum"), 0.0), count)
        figures[f"{name}_count"] = int(round(count))
    for name in GAUGES:
        value = gauges.get(name)
        # Utilization as a fraction (the pages' percent filter), models as a count.
        if value is not None and name != "loaded_models":
            value = round(value / 100, 4)
        figures[name] = value
    return figures


def _sums(rows: Iterable[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    return {(metric, statistic): total or 0.0 for metric, statistic, total in rows}


def _latest_gauges(rows: Iterable[tuple[int, str, str, datetime, float]]) -> dict[int, dict]:
    """Each endpoint's latest value of each gauge (rows ordered newest first)."""
    wanted = {value: name for name, value in GAUGES.items()}
    latest: dict[int, dict] = {}
    for endpoint_id, metric, statistic, _minute, value in rows:
        name = wanted.get((metric, statistic))
        if name is not None:
            latest.setdefault(endpoint_id, {}).setdefault(name, value)
    return latest


def _gauge_rows(endpoint_ids: Iterable[int] | None, since: datetime):
    rows = CloudMetricMinute.objects.filter(
        component="",
        minute__gte=since,
        metric__in=[metric for metric, _ in GAUGES.values()],
    )
    if endpoint_ids is not None:
        rows = rows.filter(endpoint_id__in=list(endpoint_ids))
    return rows.order_by("-minute").values_list(
        "endpoint_id", "metric", "statistic", "minute", "value"
    )


def _trends(rows, *, start: datetime, end: datetime, bucket_minutes: int) -> dict:
    """Per-bucket series from rows of (minute, metric, statistic, total, mean)."""
    bucket = timedelta(minutes=bucket_minutes)
    starts = []
    cursor = start
    while cursor <= end:
        starts.append(cursor)
        cursor += bucket
    sums: list[dict[tuple[str, str], float]] = [{} for _ in starts]
    means: list[dict[str, list[float]]] = [{} for _ in starts]
    for minute, metric, statistic, total, mean in rows:
        index = min(int((minute - start) / bucket), len(starts) - 1)
        key = (metric, statistic)
        sums[index][key] = sums[index].get(key, 0.0) + (total or 0.0)
        if statistic == "Average" and mean is not None:
            means[index].setdefault(metric, []).append(mean)

    def series(value) -> list[tuple[datetime, float | None]]:
        return [(s, value(b, m)) for s, b, m in zip(starts, sums, means, strict=True)]

    def average(metric: str):
        def value(_sums, bucket_means):
            values = bucket_means.get(metric)
            return round(sum(values) / len(values), 2) if values else None

        return value

    def mean_ms(metric: str):
        def value(bucket_sums, _means):
            return _ms(
                bucket_sums.get((metric, "Sum"), 0.0), bucket_sums.get((metric, "SampleCount"), 0.0)
            )

        return value

    def per_minute(value_of):
        def value(bucket_sums, _means):
            return round(value_of(bucket_sums) / bucket_minutes, 2)

        return value

    return {
        "hours": int((end - start) / timedelta(hours=1)),
        "bucket_minutes": bucket_minutes,
        "invocations_per_minute": series(per_minute(lambda b: b.get(("Invocations", "Sum"), 0.0))),
        "cache_misses_per_minute": series(
            per_minute(
                lambda b: (
                    b.get(("ModelCacheHit", "SampleCount"), 0.0)
                    - b.get(("ModelCacheHit", "Sum"), 0.0)
                )
            )
        ),
        "loading_wait_ms": series(mean_ms("ModelLoadingWaitTime")),
        "model_latency_ms": series(mean_ms("ModelLatency")),
        "cpu_utilization_pct": series(average("CPUUtilization")),
        "memory_utilization_pct": series(average("MemoryUtilization")),
        "gpu_memory_utilization_pct": series(average("GPUMemoryUtilization")),
    }


def _trend_rows(rows, *, start: datetime, end: datetime):
    return (
        rows.filter(component="", minute__gte=start, minute__lte=end, metric__in=TREND_METRICS)
        .values("minute", "metric", "statistic")
        .annotate(total=Sum("value"), mean=Avg("value"))
        .values_list("minute", "metric", "statistic", "total", "mean")
        .order_by()
    )


def last_pass() -> dict | None:
    """When the CloudWatch pass last ran, whether it succeeded, and what it could not read."""
    row = (
        BackgroundPass.objects.filter(job=CLOUD_METRICS)
        .values("finished_at", "succeeded", "errors", "summary")
        .first()
    )
    if row is None:
        return None
    summary = row["summary"] or {}
    return {
        "finished_at": row["finished_at"],
        "succeeded": row["succeeded"],
        "errors": row["errors"],
        "endpoint_errors": summary.get("errors") or {},
    }


def reports_cloud_metrics(endpoint: Endpoint) -> bool:
    """Whether the endpoint's backend reports the cloud's figures for it."""
    return endpoint.backend in backends_reporting_cloud_metrics()


def endpoint_cloud_figures(*, endpoint: Endpoint, now: datetime | None = None) -> dict | None:
    """The endpoint's last hour of cloud figures, its latest gauges, its trends and (inference
    components) its busiest components; None for an endpoint whose backend reports none."""
    if not reports_cloud_metrics(endpoint):
        return None
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    since = end - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    own = CloudMetricMinute.objects.filter(endpoint=endpoint)
    sums = _sums(
        own.filter(component="", minute__gte=since)
        .values("metric", "statistic")
        .annotate(total=Sum("value"))
        .values_list("metric", "statistic", "total")
        .order_by()
    )
    latest_rows = list(_gauge_rows([endpoint.pk], end - timedelta(minutes=LATEST_MINUTES)))
    gauges = _latest_gauges(latest_rows).get(endpoint.pk, {})
    start = end - timedelta(hours=TREND_HOURS)
    trend_rows = list(_trend_rows(own, start=start, end=end))
    trends = _trends(trend_rows, start=start, end=end, bucket_minutes=TREND_BUCKET_MINUTES)
    components = []
    if endpoint.mode == Endpoint.Mode.INFERENCE_COMPONENT:
        components = busiest_components(endpoint=endpoint, since=since)
    pass_record = last_pass()
    return {
        "figures": summarize(sums=sums, gauges=gauges),
        "multi_model": endpoint.mode == Endpoint.Mode.MME,
        "gpu": endpoint.instance_type.gpu_count > 0,
        "latest_minute": max((row[0] for row in trend_rows), default=None),
        "trends": trends,
        "components": components,
        "last_pass": pass_record,
        "error": (pass_record or {}).get("endpoint_errors", {}).get(endpoint.name),
        "window_minutes": TRAFFIC_WINDOW_MINUTES,
    }


def _conditional(metric: str, statistic: str):
    return Case(
        When(metric=metric, statistic=statistic, then=F("value")),
        default=Value(None),
        output_field=FloatField(),
    )


def busiest_components(*, endpoint: Endpoint, since: datetime) -> list[dict]:
    """The endpoint's inference components with the most invocations since ``since``: each
    one's invocations, mean model latency and mean normalized utilization."""
    rows = (
        CloudMetricMinute.objects.filter(endpoint=endpoint, minute__gte=since)
        .exclude(component="")
        .values("component")
        .annotate(
            invocations=Sum(_conditional("Invocations", "Sum")),
            latency_us=Sum(_conditional("ModelLatency", "Sum")),
            latency_count=Sum(_conditional("ModelLatency", "SampleCount")),
            cpu=Avg(_conditional("CPUUtilizationNormalized", "Average")),
            memory=Avg(_conditional("MemoryUtilizationNormalized", "Average")),
            gpu_memory=Avg(_conditional("GPUMemoryUtilizationNormalized", "Average")),
        )
        .order_by(F("invocations").desc(nulls_last=True), "component")[:TOP_COMPONENTS]
    )
    return [
        {
            "component": row["component"],
            "invocations": int(round(row["invocations"] or 0)),
            "model_latency_ms": _ms(row["latency_us"] or 0.0, row["latency_count"] or 0.0),
            "cpu_utilization": None if row["cpu"] is None else round(row["cpu"] / 100, 4),
            "memory_utilization": None if row["memory"] is None else round(row["memory"] / 100, 4),
            "gpu_memory_utilization": (
                None if row["gpu_memory"] is None else round(row["gpu_memory"] / 100, 4)
            ),
        }
        for row in rows
    ]


def fleet_cloud_figures(*, caller: Caller, now: datetime | None = None) -> dict | None:
    """The overview's cloud figures (operators only): the last hour over every live endpoint
    that reports them, the endpoints with the most cache misses (then invocations) with their
    own figures, and the fleet's trends; None for a member or a fleet with no such endpoint."""
    if not caller.is_platform:
        return None
    live = Endpoint.objects.filter(backend__in=backends_reporting_cloud_metrics()).exclude(
        status=Endpoint.Status.RETIRED
    )
    endpoints = live.count()
    if not endpoints:
        return None
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    since = end - timedelta(minutes=TRAFFIC_WINDOW_MINUTES)
    rows = CloudMetricMinute.objects.filter(
        endpoint__backend__in=backends_reporting_cloud_metrics(), component=""
    ).exclude(endpoint__status=Endpoint.Status.RETIRED)
    hour = rows.filter(minute__gte=since)
    sums = _sums(
        hour.values("metric", "statistic")
        .annotate(total=Sum("value"))
        .values_list("metric", "statistic", "total")
        .order_by()
    )
    ranked = list(
        hour.filter(metric__in=["ModelCacheHit", "Invocations"])
        .values("endpoint_id", "endpoint__name", "endpoint__mode")
        .annotate(
            misses=Sum(
                Case(
                    When(metric="ModelCacheHit", statistic="SampleCount", then=F("value")),
                    When(metric="ModelCacheHit", statistic="Sum", then=-F("value")),
                    default=Value(0.0),
                    output_field=FloatField(),
                )
            ),
            invocations=Sum(_conditional("Invocations", "Sum")),
        )
        .order_by(
            F("misses").desc(nulls_last=True),
            F("invocations").desc(nulls_last=True),
            "endpoint__name",
        )[:OVERVIEW_ENDPOINTS]
    )
    shown = [row["endpoint_id"] for row in ranked]
    per_endpoint: dict[int, dict[tuple[str, str], float]] = {}
    for endpoint_id, metric, statistic, total in (
        hour.filter(endpoint_id__in=shown)
        .values("endpoint_id", "metric", "statistic")
        .annotate(total=Sum("value"))
        .values_list("endpoint_id", "metric", "statistic", "total")
        .order_by()
    ):
        per_endpoint.setdefault(endpoint_id, {})[(metric, statistic)] = total or 0.0
    # Every endpoint's latest gauges: models loaded add up over the fleet; the table shows each.
    recent = rows.filter(minute__gte=end - timedelta(minutes=LATEST_MINUTES))
    latest = _latest_gauges(
        recent.filter(Q(metric="LoadedModelCount", statistic="Sum") | Q(endpoint_id__in=shown))
        .filter(metric__in=[metric for metric, _ in GAUGES.values()])
        .order_by("-minute")
        .values_list("endpoint_id", "metric", "statistic", "minute", "value")
    )
    loaded = [g["loaded_models"] for g in latest.values() if "loaded_models" in g]
    start = end - timedelta(hours=TREND_HOURS)
    trend_rows = list(_trend_rows(rows, start=start, end=end))
    trends = _trends(trend_rows, start=start, end=end, bucket_minutes=TREND_BUCKET_MINUTES)
    figures = summarize(sums=sums, gauges={"loaded_models": sum(loaded)} if loaded else {})
    return {
        "figures": figures,
        "endpoints": endpoints,
        "rows": [
            {
                "name": row["endpoint__name"],
                "mode": row["endpoint__mode"],
                "figures": summarize(
                    sums=per_endpoint.get(row["endpoint_id"], {}),
                    gauges=latest.get(row["endpoint_id"], {}),
                ),
            }
            for row in ranked
        ],
        "trends": trends,
        "latest_minute": max((row[0] for row in trend_rows), default=None),
        "last_pass": last_pass(),
        "window_minutes": TRAFFIC_WINDOW_MINUTES,
    }
