"""The proxy's counters, exposed on ``/metrics`` through ``prometheus_client``.

``ProxyMetrics`` counts in process, per model version: requests by protocol and exact status
code, cold starts, and a latency histogram; ``ProxyCollector`` turns those counts into metric
families at scrape time (the counting is not done twice). A fleet has thousands of tenant
models, so only the first ``PROXY_METRICS_MAX_VERSIONS`` versions seen get their own ``model`` and
``model_version`` labels; the rest are summed under ``model="other", model_version="other"``.
The same requests also go to the per-minute time series (``deployments.usage``) the dashboard
reads.

Beside them, gauges of each periodic job's last pass (reconciler, warm-up, sampler, usage
flush), read from its ``BackgroundPass`` row (``deployments.passes``) in one query: how long it
took, what it went over, its queries, whether it succeeded and when it finished.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from deployments.models import BackgroundPass
from deployments.proxy.routing import ROUTES

logger = logging.getLogger(__name__)

BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "other"
# The labels of a request that never reached a live version (unknown model, bad token...).
NO_MODEL = "none"


class ProxyMetrics:
    """Counters and histograms for this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting from zero (a fresh process's view)."""
        with self._lock:
            # (model, model_version, protocol, status code) → requests
            self.requests: dict[tuple[str, str, str, str], int] = defaultdict(int)
            # (model, model_version) → cold starts
            self.cold_starts: dict[tuple[str, str], int] = defaultdict(int)
            # (model, model_version, protocol) → counts per bucket, the last one past every bound
            self.histogram: dict[tuple[str, str, str], list[int]] = {}
            self.latency_sum: dict[tuple[str, str, str], float] = defaultdict(float)
            self.upstream_errors: dict[str, int] = defaultdict(int)
            self.rate_limited = 0
            self._versions: set[tuple[str, str]] = set()

    def _labels(self, model: str, model_version: str) -> tuple[str, str]:
        if not model:
            return NO_MODEL, NO_MODEL
        key = (model, model_version)
        if key in self._versions:
            return key
        if len(self._versions) < settings.TENANTML_PROXY_METRICS_MAX_VERSIONS:
            self._versions.add(key)
            return key
        return OTHER, OTHER

    def observe(
        self,
        *,
        model: str,
        model_version: str,
        protocol: str,
        status: int,
        seconds: float,
        cold_start: bool,
    ) -> None:
        """Count one answered request (``model`` empty: it reached no live version)."""
        with self._lock:
            model, model_version = self._labels(model, model_version)
            self.requests[(model, model_version, protocol, str(status))] += 1
            if cold_start:
                self.cold_starts[(model, model_version)] += 1
            key = (model, model_version, protocol)
            counts = self.histogram.get(key)
            if counts is None:
                counts = self.histogram[key] = [0] * (len(BUCKETS_S) + 1)
            for index, bound in enumerate(BUCKETS_S):
                if seconds <= bound:
                    counts[index] += 1
                    break
            else:
                counts[-1] += 1
            self.latency_sum[key] += seconds

    def upstream_error(self, kind: str) -> None:
        with self._lock:
            self.upstream_errors[kind] += 1

    def limited(self) -> None:
        with self._lock:
            self.rate_limited += 1


METRICS = ProxyMetrics()


class ProxyCollector(Collector):
    """The metric families of a ``ProxyMetrics`` and of the route cache, read at scrape time."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        requests = CounterMetricFamily(
            "tenantml_proxy_requests",
            "Requests answered by the proxy, by model version, protocol and status code.",
            labels=["model", "model_version", "protocol", "code"],
        )
        cold_starts = CounterMetricFamily(
            "tenantml_proxy_cold_starts",
            "Requests that loaded their model first.",
            labels=["model", "model_version"],
        )
        duration = HistogramMetricFamily(
            "tenantml_proxy_request_duration_seconds",
            "Time to answer, in the proxy.",
            labels=["model", "model_version", "protocol"],
        )
        upstream_errors = CounterMetricFamily(
            "tenantml_proxy_upstream_errors",
            "Failed calls to serving instances.",
            labels=["kind"],
        )
        with metrics._lock:
            for labels, count in sorted(metrics.requests.items()):
                requests.add_metric(list(labels), count)
            for labels, count in sorted(metrics.cold_starts.items()):
                cold_starts.add_metric(list(labels), count)
            for labels, counts in sorted(metrics.histogram.items()):
                buckets, running = [], 0
                for bound, count in zip((*BUCKETS_S, float("inf")), counts, strict=True):
                    running += count
                    buckets.append((_bound(bound), running))
                duration.add_metric(list(labels), buckets, metrics.latency_sum[labels])
            for kind, count in sorted(metrics.upstream_errors.items()):
                upstream_errors.add_metric([kind], count)
            rate_limited = metrics.rate_limited
        yield requests
        yield cold_starts
        yield duration
        yield upstream_errors
        yield CounterMetricFamily(
            "tenantml_proxy_rate_limited", "Requests refused with 429.", value=rate_limited
        )
        yield CounterMetricFamily(
            "tenantml_proxy_route_cache_hits",
            "Route lookups served from memory.",
            value=ROUTES.hits,
        )
        yield CounterMetricFamily(
            "tenantml_proxy_route_cache_misses",
            "Routing-table lookups that read the database.",
            value=ROUTES.misses,
        )
        yield GaugeMetricFamily(
            "tenantml_proxy_routes_cached", "Routes held in memory.", value=len(ROUTES)
        )


def _bound(seconds: float) -> str:
    return "+Inf" if seconds == float("inf") else repr(seconds)


# Each gauge of a job's last pass: its name, its help text, and how it is read from the row.
PASS_GAUGES: tuple[tuple[str, str, Callable[[BackgroundPass], float]], ...] = (
    (
        "tenantml_background_pass_duration_seconds",
        "How long the job's last pass took.",
        lambda row: row.duration_s,
    ),
    (
        "tenantml_background_pass_items",
        "What the job's last pass went over (instances checked, placements considered...).",
        lambda row: row.items,
    ),
    (
        "tenantml_background_pass_queries",
        "Database queries the job's last pass made.",
        lambda row: row.queries,
    ),
    (
        "tenantml_background_pass_succeeded",
        "1 if the job's last pass finished without raising, else 0.",
        lambda row: 1 if row.succeeded else 0,
    ),
    (
        "tenantml_background_pass_finished_timestamp_seconds",
        "When the job's last pass finished (Unix time).",
        lambda row: row.finished_at.timestamp(),
    ),
)


class BackgroundPassCollector(Collector):
    """The gauges of every periodic job's last pass, from the ``BackgroundPass`` rows.

    One query, blocking (the proxy scrapes off the event loop). Without the database it yields
    nothing and logs why: the proxy's own figures are still worth scraping.
    """

    def collect(self) -> Iterator[Metric]:
        try:
            rows = list(
                BackgroundPass.objects.only(
                    "job", "duration_s", "items", "queries", "succeeded", "finished_at"
                ).order_by("job")
            )
        except DatabaseError:
            logger.warning("/metrics without the background passes: the database did not answer.")
            return
        for name, help_text, value in PASS_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["job"])
            for row in rows:
                family.add_metric([row.job], value(row))
            yield family


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ProxyCollector(METRICS))
REGISTRY.register(BackgroundPassCollector())
# The web process's own CPU, memory and open files (Linux /proc; nothing elsewhere).
ProcessCollector(registry=REGISTRY)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """Everything ``/metrics`` serves, in the format the scraper's Accept header asks for (the
    Prometheus text format unless it asks for OpenMetrics), with its content type. Blocking."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type
