"""Proxy metrics in Prometheus text format, with bounded label cardinality.

Per version: requests by protocol and status class, cold starts, and a latency histogram. A
fleet has thousands of tenant models, so only the first ``PROXY_METRICS_MAX_VERSIONS`` versions
seen get their own label; the rest are summed under ``version="other"``. The same requests also
go to the per-minute time series (``deployments.usage``) the dashboard reads.

Beside them, gauges of each periodic job's last pass (reconciler, warm-up, sampler, usage flush),
read from its ``BackgroundPass`` row (``deployments.passes``): how long it took, what it went
over, its queries, whether it succeeded and when it finished.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from django.conf import settings

from deployments.models import BackgroundPass

BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "other"


class ProxyMetrics:
    """Counters and histograms for this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting from zero (a fresh process's view)."""
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.cold_starts: dict[str, int] = defaultdict(int)
        self.histogram: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.upstream_errors: dict[str, int] = defaultdict(int)
        self.rate_limited = 0
        self._versions: set[str] = set()

    def _label(self, version: str) -> str:
        if version in self._versions:
            return version
        if len(self._versions) < settings.TENANTML_PROXY_METRICS_MAX_VERSIONS:
            self._versions.add(version)
            return version
        return OTHER

    def observe(
        self, *, version: str, protocol: str, status: int, seconds: float, cold_start: bool
    ) -> None:
        """Count one answered request."""
        with self._lock:
            label = self._label(version) if version else "none"
            self.requests[(label, protocol, f"{status // 100}xx")] += 1
            if cold_start:
                self.cold_starts[label] += 1
            key = (label, protocol)
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

    def render(self, *, route_hits: int, route_misses: int, routes_cached: int) -> str:
        """The Prometheus exposition of everything counted so far."""
        lines = [
            "# HELP tenantml_proxy_requests_total Requests answered by the proxy.",
            "# TYPE tenantml_proxy_requests_total counter",
        ]
        with self._lock:
            for (version, protocol, code), count in sorted(self.requests.items()):
                lines.append(
                    f'tenantml_proxy_requests_total{{version="{version}",protocol="{protocol}",'
                    f'code="{code}"}} {count}'
                )
            lines += [
                "# HELP tenantml_proxy_cold_starts_total Requests that loaded their model first.",
                "# TYPE tenantml_proxy_cold_starts_total counter",
            ]
            for version, count in sorted(self.cold_starts.items()):
                lines.append(f'tenantml_proxy_cold_starts_total{{version="{version}"}} {count}')
            lines += [
                "# HELP tenantml_proxy_request_duration_seconds Time to answer, in the proxy.",
                "# TYPE tenantml_proxy_request_duration_seconds histogram",
            ]
            for (version, protocol), counts in sorted(self.histogram.items()):
                labels = f'version="{version}",protocol="{protocol}"'
                running = 0
                for bound, count in zip((*BUCKETS_S, "+Inf"), counts, strict=True):
                    running += count
                    lines.append(
                        f'tenantml_proxy_request_duration_seconds_bucket{{{labels},le="{bound}"}}'
                        f" {running}"
                    )
                lines.append(f"tenantml_proxy_request_duration_seconds_count{{{labels}}} {running}")
                lines.append(
                    f"tenantml_proxy_request_duration_seconds_sum{{{labels}}} "
                    f"{self.latency_sum[(version, protocol)]:.6f}"
                )
            lines += [
                "# HELP tenantml_proxy_upstream_errors_total Failed calls to serving instances.",
                "# TYPE tenantml_proxy_upstream_errors_total counter",
            ]
            for kind, count in sorted(self.upstream_errors.items()):
                lines.append(f'tenantml_proxy_upstream_errors_total{{kind="{kind}"}} {count}')
            lines += [
                "# HELP tenantml_proxy_rate_limited_total Requests refused with 429.",
                "# TYPE tenantml_proxy_rate_limited_total counter",
                f"tenantml_proxy_rate_limited_total {self.rate_limited}",
            ]
        lines += [
            "# HELP tenantml_proxy_route_cache_hits_total Route lookups served from memory.",
            "# TYPE tenantml_proxy_route_cache_hits_total counter",
            f"tenantml_proxy_route_cache_hits_total {route_hits}",
            "# HELP tenantml_proxy_route_cache_misses_total Routing-table lookups that read the "
            "database.",
            "# TYPE tenantml_proxy_route_cache_misses_total counter",
            f"tenantml_proxy_route_cache_misses_total {route_misses}",
            "# HELP tenantml_proxy_routes_cached Routes held in memory.",
            "# TYPE tenantml_proxy_routes_cached gauge",
            f"tenantml_proxy_routes_cached {routes_cached}",
        ]
        return "\n".join(lines) + "\n"


METRICS = ProxyMetrics()

# Each gauge of a job's last pass: its name, its help text, and how it is read from the row.
PASS_GAUGES = (
    (
        "tenantml_background_pass_duration_seconds",
        "How long the job's last pass took.",
        lambda row: f"{row.duration_s:.6f}",
    ),
    (
        "tenantml_background_pass_items",
        "What the job's last pass went over (instances checked, placements considered...).",
        lambda row: str(row.items),
    ),
    (
        "tenantml_background_pass_queries",
        "Database queries the job's last pass made.",
        lambda row: str(row.queries),
    ),
    (
        "tenantml_background_pass_succeeded",
        "1 if the job's last pass finished without raising, else 0.",
        lambda row: "1" if row.succeeded else "0",
    ),
    (
        "tenantml_background_pass_finished_timestamp_seconds",
        "When the job's last pass finished (Unix time).",
        lambda row: f"{row.finished_at.timestamp():.3f}",
    ),
)


def render_background_passes() -> str:
    """The gauges of every periodic job's last pass, from the ``BackgroundPass`` rows (one
    query; blocking, so the proxy calls it off the event loop)."""
    rows = list(
        BackgroundPass.objects.only(
            "job", "duration_s", "items", "queries", "succeeded", "finished_at"
        ).order_by("job")
    )
    lines = []
    for name, help_text, value in PASS_GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{job="{_label_value(row.job)}"}} {value(row)}' for row in rows]
    return "\n".join(lines) + "\n"


def _label_value(text: str) -> str:
    # Prometheus label values escape backslashes, double quotes and newlines.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
