"""The cloud figures' trend charts (CloudWatch's own minutes of SageMaker endpoints), drawn as
the dashboard's other charts are (``deployments.dashboard.charts``: server-side SVG, no
JavaScript), from ``deployments.selectors.cloud_metrics`` trends."""

from __future__ import annotations

from django.utils.safestring import SafeString, mark_safe

from deployments.dashboard.charts import Series, line_chart


def _ms_format(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.2f}".rstrip("0").rstrip(".") + " ms"


def cloud_charts(
    trends: dict,
    *,
    prefix: str,
    multi_model: bool = True,
    utilization: bool = True,
    gpu: bool = False,
) -> list[dict]:
    """Traffic and cache misses, loading wait and latency, and (for one endpoint) utilization;
    each chart's id starts with ``prefix``."""
    hours = trends["hours"]
    traffic = [Series("invocations / min", trends["invocations_per_minute"])]
    if multi_model:
        traffic.append(Series("cache misses / min", trends["cache_misses_per_minute"]))
    times = [Series("model latency", trends["model_latency_ms"])]
    if multi_model:
        times.insert(0, Series("loading wait", trends["loading_wait_ms"]))
    charts = [
        (
            f"{prefix}-traffic",
            line_chart(
                title=f"CloudWatch invocations{' and cache misses' if multi_model else ''}, "
                f"last {hours} h",
                series=traffic,
                y_label="requests per minute",
                chart_id=f"{prefix}-traffic",
            ),
        ),
        (
            f"{prefix}-times",
            line_chart(
                title=f"CloudWatch {'loading wait and ' if multi_model else ''}model latency "
                f"(mean), last {hours} h",
                series=times,
                y_label="milliseconds",
                value_format=_ms_format,
                chart_id=f"{prefix}-times",
            ),
        ),
    ]
    if utilization:
        series = [
            Series("CPU", trends["cpu_utilization_pct"]),
            Series("memory", trends["memory_utilization_pct"]),
        ]
        if gpu:
            series.append(Series("GPU memory", trends["gpu_memory_utilization_pct"]))
        charts.append(
            (
                f"{prefix}-utilization",
                line_chart(
                    title=f"CloudWatch utilization per instance (mean), last {hours} h",
                    series=series,
                    y_label="% (CPU: summed over cores)",
                    unit=" %",
                    chart_id=f"{prefix}-utilization",
                ),
            )
        )
    return [{"id": chart_id, "svg": _safe(svg)} for chart_id, svg in charts]


def _safe(svg: str) -> SafeString:
    # line_chart escapes every piece of text it writes.
    return mark_safe(svg)  # noqa: S308
