"""What the stand-in's invocations did in the current scaling period, counted as SageMaker counts.

The runtime records each InvokeEndpoint here: per endpoint variant (EndpointName, VariantName)
and per inference component, the invocations that reached a model, their model and overhead
latency in microseconds, the model's 4xx and 5xx answers, and on multi-model endpoints the cache
hits and the downloading, loading, waiting and unloading times of the models it loaded. An
invocation of a component with no copies is counted as a no-capacity failure of that component.
Once a period the scaling loop takes the counts (``take``), publishes them to CloudWatch and
acts on them; counting starts again from zero.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

__all__ = ["ComponentUsage", "PeriodUsage", "Samples", "Trace", "Usage", "VariantUsage"]


@dataclass
class Samples:
    """A figure's samples in one period, kept as CloudWatch's statistic set."""

    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)

    def statistic_values(self) -> dict[str, float]:
        """PutMetricData's StatisticValues for these samples (only when there are some)."""
        return {
            "SampleCount": float(self.count),
            "Sum": self.total,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
        }


@dataclass
class VariantUsage:
    """An endpoint variant's invocations in one period."""

    invocations: int = 0
    # Each invocation adds 1 / the variant's instance count at the time, as SageMaker does.
    invocations_per_instance: float = 0.0
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_latency_us: Samples = field(default_factory=Samples)
    overhead_latency_us: Samples = field(default_factory=Samples)
    # Multi-model endpoints: 1 per invocation whose model was loaded already, else 0.
    cache_hits: Samples = field(default_factory=Samples)
    loading_wait_us: Samples = field(default_factory=Samples)
    loading_us: Samples = field(default_factory=Samples)
    downloading_us: Samples = field(default_factory=Samples)
    unloading_us: Samples = field(default_factory=Samples)


@dataclass
class ComponentUsage:
    """An inference component's invocations in one period."""

    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    no_capacity_failures: int = 0
    model_latency_us: Samples = field(default_factory=Samples)
    overhead_latency_us: Samples = field(default_factory=Samples)


@dataclass
class PeriodUsage:
    """Everything counted in one period, by variant and by component."""

    variants: dict[tuple[str, str], VariantUsage] = field(default_factory=dict)
    components: dict[str, ComponentUsage] = field(default_factory=dict)

    def variant(self, endpoint_name: str, variant_name: str) -> VariantUsage:
        return self.variants.setdefault((endpoint_name, variant_name), VariantUsage())

    def component(self, name: str) -> ComponentUsage:
        return self.components.setdefault(name, ComponentUsage())


@dataclass
class Trace:
    """One invocation as the runtime saw it, filled in on its way through."""

    endpoint_name: str
    variant_name: str | None = None
    component_name: str | None = None
    instance_count: int = 0
    # None until the request reached a model container.
    model_status: int | None = None
    model_latency_us: float = 0.0
    # Multi-model endpoints only (None elsewhere).
    cache_hit: bool | None = None
    loading_wait_us: float | None = None
    loading_us: float | None = None
    downloading_us: float | None = None
    unloading_us: list[float] = field(default_factory=list)


class Usage:
    """The counts of the period under way, shared by the runtime's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._period = PeriodUsage()

    def record(self, trace: Trace, *, total_us: float) -> None:
        """Count one invocation that reached (or tried to reach) a model container."""
        if trace.variant_name is None or trace.model_status is None:
            return
        status = trace.model_status
        overhead_us = max(0.0, total_us - trace.model_latency_us)
        with self._lock:
            variant = self._period.variant(trace.endpoint_name, trace.variant_name)
            variant.invocations += 1
            variant.invocations_per_instance += 1.0 / max(1, trace.instance_count)
            variant.model_latency_us.add(trace.model_latency_us)
            variant.overhead_latency_us.add(overhead_us)
            if 400 <= status < 500:
                variant.errors_4xx += 1
            elif status >= 500 or status == 0:  # 0: the container did not answer
                variant.errors_5xx += 1
            if trace.cache_hit is not None:
                variant.cache_hits.add(1.0 if trace.cache_hit else 0.0)
            for samples, value in (
                (variant.loading_wait_us, trace.loading_wait_us),
                (variant.loading_us, trace.loading_us),
                (variant.downloading_us, trace.downloading_us),
            ):
                if value is not None:
                    samples.add(value)
            for value in trace.unloading_us:
                variant.unloading_us.add(value)
            if trace.component_name is not None:
                component = self._period.component(trace.component_name)
                component.invocations += 1
                component.model_latency_us.add(trace.model_latency_us)
                component.overhead_latency_us.add(overhead_us)
                if 400 <= status < 500:
                    component.errors_4xx += 1
                elif status >= 500 or status == 0:
                    component.errors_5xx += 1

    def no_capacity(self, component_name: str) -> None:
        """Count an invocation refused because the component has no copy to serve it."""
        with self._lock:
            self._period.component(component_name).no_capacity_failures += 1

    def take(self) -> PeriodUsage:
        """The period's counts; counting starts again from zero."""
        with self._lock:
            period, self._period = self._period, PeriodUsage()
        return period
