"""CloudWatch as the stand-in runs it: SageMaker's metrics published, scaling alarms evaluated.

moto's CloudWatch only stores what it is given. Once every scaling period (one period stands for
one CloudWatch minute; ``autoscaling.py`` owns the clock) the stand-in:

1. publishes into moto the metrics SageMaker publishes for what it runs, stamped with the
   period's end, with AWS's namespaces, dimensions and units (``MetricPublisher``):

   - ``AWS/SageMaker``, per endpoint variant (EndpointName, VariantName): Invocations,
     InvocationsPerInstance, Invocation4XXErrors, Invocation5XXErrors (None; 0 in an idle
     period), ModelLatency and OverheadLatency (Microseconds, as statistic sets, only in periods
     with invocations); on multi-model endpoints also ModelCacheHit (None: 1 per invocation
     whose model was loaded, so its Average is the hit ratio), ModelLoadingWaitTime,
     ModelLoadingTime, ModelDownloadingTime and ModelUnloadingTime (Microseconds) from what the
     runtime's MME loader really did;
   - ``AWS/SageMaker``, per inference component (InferenceComponentName): Invocations,
     Invocation4XXErrors, Invocation5XXErrors, NoCapacityInvocationFailures (None; 0 in an idle
     period), InvocationsPerCopy (while it has copies), ModelLatency and OverheadLatency;
   - ``/aws/sagemaker/Endpoints``, one datapoint per instance (EndpointName, VariantName):
     CPUUtilization (Percent, summed over cores as SageMaker's is) and MemoryUtilization
     (Percent of the instance type's memory) of the instance's Triton processes and their
     python-backend stubs (psutil), and LoadedModelCount (None) on multi-model endpoints.
     GPUMemoryUtilization is not published: the stand-in has no GPU. A test or operator that
     needs it puts it with PutMetricData, and target tracking on it reads what was put;

2. evaluates the metric alarms whose actions name an Application Auto Scaling policy, on the
   datapoints that reached moto during the period (its own and any PutMetricData), one
   datapoint per period whatever the alarm's Period, honouring EvaluationPeriods,
   DatapointsToAlarm and TreatMissingData, and writes their state and reason into moto (so
   DescribeAlarms shows it). Alarms that act on nothing keep the state they are given
   (SetAlarmState), as the rollback alarms of rolling updates rely on.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil

from deployments.sagemaker_standin.fleet import INFERENCE_COMPONENT, MME, Fleet
from deployments.sagemaker_standin.instance_types import instance_memory_mb
from deployments.sagemaker_standin.moto_state import MotoState
from deployments.sagemaker_standin.usage import PeriodUsage, Samples

__all__ = [
    "AlarmEvaluator",
    "FiredAlarm",
    "INSTANCE_NAMESPACE",
    "INVOCATION_NAMESPACE",
    "MetricPublisher",
    "NewDatapoints",
    "aggregate",
    "alarm_state",
    "breaches",
    "metric_value",
]

logger = logging.getLogger(__name__)

INVOCATION_NAMESPACE = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
MICROSECONDS = "Microseconds"
PERCENT = "Percent"
NO_UNIT = "None"
MIB = 1024 * 1024
# The part of an alarm action's ARN that names an Application Auto Scaling policy.
SCALING_POLICY_ARN_PART = ":scalingPolicy:"

# -- publishing ------------------------------------------------------------------------------


def _datum(
    name: str, dimensions: dict[str, str], value: float, unit: str, timestamp: datetime
) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Dimensions": [{"Name": key, "Value": val} for key, val in dimensions.items()],
        "Value": float(value),
        "Unit": unit,
        "Timestamp": timestamp,
    }


def _statistics(
    name: str, dimensions: dict[str, str], samples: Samples, unit: str, timestamp: datetime
) -> list[dict[str, Any]]:
    if not samples.count:
        return []
    return [
        {
            "MetricName": name,
            "Dimensions": [{"Name": key, "Value": val} for key, val in dimensions.items()],
            "StatisticValues": samples.statistic_values(),
            "Unit": unit,
            "Timestamp": timestamp,
        }
    ]


@dataclass(frozen=True)
class _InstanceView:
    pids: tuple[int, ...]
    instance_type: str
    loaded_models: int


@dataclass(frozen=True)
class _VariantView:
    endpoint_name: str
    variant_name: str
    kind: str
    instances: tuple[_InstanceView, ...]


class MetricPublisher:
    """Turns a period's usage and the processes the fleet runs into SageMaker's datapoints."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        # psutil measures CPU between two calls on the same Process object.
        self._processes: dict[int, psutil.Process] = {}
        self._measured: set[int] = set()

    def publish(self, usage: PeriodUsage, timestamp: datetime) -> dict[str, list[dict]]:
        """Put the period's datapoints into moto; what was put, by namespace."""
        datapoints = self.datapoints(usage, timestamp)
        for namespace, data in datapoints.items():
            self.fleet.moto.put_metric_data(namespace, data)
        return datapoints

    def datapoints(self, usage: PeriodUsage, timestamp: datetime) -> dict[str, list[dict]]:
        variants, components = self._views()
        invocations: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        self._measured = set()
        for view in variants:
            invocations += self._variant_metrics(view, usage, timestamp)
            instances += self._instance_metrics(view, timestamp)
        for name, copies in components:
            invocations += self._component_metrics(name, copies, usage, timestamp)
        # Processes gone since the last period are forgotten; the others keep their CPU baseline.
        for pid in [pid for pid in self._processes if pid not in self._measured]:
            del self._processes[pid]
        return {INVOCATION_NAMESPACE: invocations, INSTANCE_NAMESPACE: instances}

    def _views(self) -> tuple[list[_VariantView], list[tuple[str, int]]]:
        """What the fleet runs now, read under its lock (measured after)."""
        variants = []
        with self.fleet.lock:
            for endpoint in self.fleet.endpoints.values():
                deployment = endpoint.deployment
                if deployment is None or endpoint.deleting:
                    continue
                views = []
                for instance in deployment.instances:
                    processes = [instance.process, *(copy.process for copy in instance.copies)]
                    views.append(
                        _InstanceView(
                            pids=tuple(p.pid for p in processes if p is not None and p.pid),
                            instance_type=instance.instance_type,
                            loaded_models=len(instance.models),
                        )
                    )
                variants.append(
                    _VariantView(
                        endpoint.name, deployment.variant_name, deployment.kind, tuple(views)
                    )
                )
            components = [
                (component.name, len(component.copies))
                for component in self.fleet.components.values()
                if component.status != "Deleting"
            ]
        return variants, components

    def _variant_metrics(
        self, view: _VariantView, usage: PeriodUsage, timestamp: datetime
    ) -> list[dict[str, Any]]:
        dimensions = {"EndpointName": view.endpoint_name, "VariantName": view.variant_name}
        counts = usage.variants.get((view.endpoint_name, view.variant_name))
        if counts is None:
            counts = PeriodUsage().variant(view.endpoint_name, view.variant_name)
        found = [
            _datum("Invocations", dimensions, counts.invocations, NO_UNIT, timestamp),
            _datum(
                "InvocationsPerInstance",
                dimensions,
                counts.invocations_per_instance,
                NO_UNIT,
                timestamp,
            ),
            _datum("Invocation4XXErrors", dimensions, counts.errors_4xx, NO_UNIT, timestamp),
            _datum("Invocation5XXErrors", dimensions, counts.errors_5xx, NO_UNIT, timestamp),
            *_statistics(
                "ModelLatency", dimensions, counts.model_latency_us, MICROSECONDS, timestamp
            ),
            *_statistics(
                "OverheadLatency", dimensions, counts.overhead_latency_us, MICROSECONDS, timestamp
            ),
        ]
        if view.kind == MME:
            found += _statistics("ModelCacheHit", dimensions, counts.cache_hits, NO_UNIT, timestamp)
            for name, samples in (
                ("ModelLoadingWaitTime", counts.loading_wait_us),
                ("ModelLoadingTime", counts.loading_us),
                ("ModelDownloadingTime", counts.downloading_us),
                ("ModelUnloadingTime", counts.unloading_us),
            ):
                found += _statistics(name, dimensions, samples, MICROSECONDS, timestamp)
        return found

    def _instance_metrics(self, view: _VariantView, timestamp: datetime) -> list[dict[str, Any]]:
        dimensions = {"EndpointName": view.endpoint_name, "VariantName": view.variant_name}
        found = []
        for instance in view.instances:
            if not instance.pids and view.kind == INFERENCE_COMPONENT:
                # An instance holding no copy runs nothing: idle, not unmeasured.
                cpu_percent, rss_bytes = 0.0, 0
            else:
                cpu_percent, rss_bytes = self._measure(instance.pids)
            memory_percent = 100.0 * rss_bytes / (instance_memory_mb(instance.instance_type) * MIB)
            found.append(_datum("CPUUtilization", dimensions, cpu_percent, PERCENT, timestamp))
            found.append(
                _datum("MemoryUtilization", dimensions, memory_percent, PERCENT, timestamp)
            )
            if view.kind == MME:
                found.append(
                    _datum(
                        "LoadedModelCount", dimensions, instance.loaded_models, NO_UNIT, timestamp
                    )
                )
        return found

    def _component_metrics(
        self, name: str, copies: int, usage: PeriodUsage, timestamp: datetime
    ) -> list[dict[str, Any]]:
        dimensions = {"InferenceComponentName": name}
        counts = usage.components.get(name) or PeriodUsage().component(name)
        found = [
            _datum("Invocations", dimensions, counts.invocations, NO_UNIT, timestamp),
            _datum("Invocation4XXErrors", dimensions, counts.errors_4xx, NO_UNIT, timestamp),
            _datum("Invocation5XXErrors", dimensions, counts.errors_5xx, NO_UNIT, timestamp),
            _datum(
                "NoCapacityInvocationFailures",
                dimensions,
                counts.no_capacity_failures,
                NO_UNIT,
                timestamp,
            ),
            *_statistics(
                "ModelLatency", dimensions, counts.model_latency_us, MICROSECONDS, timestamp
            ),
            *_statistics(
                "OverheadLatency", dimensions, counts.overhead_latency_us, MICROSECONDS, timestamp
            ),
        ]
        if copies:
            found.append(
                _datum(
                    "InvocationsPerCopy",
                    dimensions,
                    counts.invocations / copies,
                    NO_UNIT,
                    timestamp,
                )
            )
        return found

    def _measure(self, pids: Iterable[int]) -> tuple[float, int]:
        """CPU percent (summed over cores) and resident bytes of servers and their children."""
        cpu_percent, rss_bytes = 0.0, 0
        for pid in pids:
            try:
                root = self._process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in family:
                try:
                    tracked = self._process(process.pid)
                    cpu_percent += tracked.cpu_percent(interval=None)
                    rss_bytes += tracked.memory_info().rss
                    self._measured.add(process.pid)
                except psutil.Error:
                    continue
        return cpu_percent, rss_bytes

    def _process(self, pid: int) -> psutil.Process:
        process = self._processes.get(pid)
        if process is None or not process.is_running():
            process = self._processes[pid] = psutil.Process(pid)
        return process

    def forget(self) -> None:
        self._processes.clear()
        self._measured = set()


# -- reading datapoints back -----------------------------------------------------------------


class NewDatapoints:
    """The datapoints that reached moto's CloudWatch since the last period (any source)."""

    def __init__(self, moto: MotoState) -> None:
        self.moto = moto
        self._list: list[Any] | None = None
        self._seen = 0

    def take(self) -> list[Any]:
        stored = self.moto.cloudwatch.metric_data
        if stored is not self._list or len(stored) < self._seen:
            # moto was reset: its list is a new one.
            self._list, self._seen = stored, 0
        end = len(stored)
        found, self._seen = stored[self._seen : end], end
        return found

    def forget(self) -> None:
        self._list, self._seen = None, 0


def _sample(datapoint: Any) -> tuple[float, float, float, float]:
    """(count, sum, minimum, maximum) of one moto datapoint, single value or statistic set."""
    if hasattr(datapoint, "sample_count"):
        return (
            float(datapoint.sample_count),
            float(datapoint.sum),
            float(datapoint.min),
            float(datapoint.max),
        )
    value = float(datapoint.value)
    return 1.0, value, value, value


def aggregate(samples: Iterable[tuple[float, float, float, float]], statistic: str) -> float | None:
    """A CloudWatch statistic (Sum, Average, Minimum, Maximum, SampleCount) of samples given
    as (count, sum, minimum, maximum); None when there are none or the statistic is unknown."""
    samples = [s for s in samples if s[0] > 0]
    if not samples:
        return None
    count = sum(s[0] for s in samples)
    total = sum(s[1] for s in samples)
    return {
        "Sum": total,
        "Average": total / count,
        "Minimum": min(s[2] for s in samples),
        "Maximum": max(s[3] for s in samples),
        "SampleCount": count,
    }.get(statistic)


def metric_value(
    datapoints: Iterable[Any],
    *,
    namespace: str,
    name: str,
    dimensions: dict[str, str],
    statistic: str,
    unit: str | None = None,
) -> float | None:
    """The statistic of the datapoints of one metric (its dimensions matched as a set)."""
    wanted = set(dimensions.items())
    samples = [
        _sample(point)
        for point in datapoints
        if point.namespace == namespace
        and point.name == name
        and {(d.name, d.value) for d in point.dimensions} == wanted
        and (unit is None or point.unit == unit)
    ]
    return aggregate(samples, statistic)


# -- alarms ----------------------------------------------------------------------------------

_OPERATORS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}


def breaches(value: float, operator: str, threshold: float) -> bool | None:
    """Whether a datapoint breaches the threshold; None for operators the stand-in lacks."""
    known = _OPERATORS.get(operator)
    return None if known is None else known[0](value, threshold)


def alarm_state(
    recent: list[float | None],
    *,
    operator: str,
    threshold: float,
    datapoints_to_alarm: int,
    treat_missing_data: str,
) -> str | None:
    """The state CloudWatch gives an alarm over its last EvaluationPeriods datapoints (None:
    missing) — ALARM, OK or INSUFFICIENT_DATA — or None to keep its state."""
    verdicts: list[bool] = []
    for value in recent:
        if value is not None:
            breached = breaches(value, operator, threshold)
            if breached is None:
                return None
            verdicts.append(breached)
        elif treat_missing_data == "breaching":
            verdicts.append(True)
        elif treat_missing_data == "notBreaching":
            verdicts.append(False)
    if not verdicts:
        # All missing: "ignore" keeps the state, "missing" (the default) knows nothing.
        return None if treat_missing_data == "ignore" else "INSUFFICIENT_DATA"
    if sum(verdicts) >= datapoints_to_alarm:
        return "ALARM"
    return "OK"


@dataclass(frozen=True)
class FiredAlarm:
    """An alarm in ALARM after this period's evaluation: what its actions act on."""

    name: str
    value: float
    threshold: float
    actions: tuple[str, ...]


@dataclass
class _History:
    alarm: Any
    recent: deque


class AlarmEvaluator:
    """Evaluates the chosen metric alarms once a period and keeps their state in moto."""

    def __init__(self, moto: MotoState) -> None:
        self.moto = moto
        self._histories: dict[str, _History] = {}

    def evaluate(
        self,
        datapoints: list[Any],
        timestamp: datetime,
        *,
        chosen: Callable[[Any], bool] = lambda alarm: acts_on_scaling(alarm),
    ) -> list[FiredAlarm]:
        """Add this period's datapoint to each chosen alarm; the alarms in ALARM now."""
        fired = []
        alarms = list(self.moto.cloudwatch.alarms.values())
        for name in [n for n in self._histories if n not in {a.name for a in alarms}]:
            del self._histories[name]
        for alarm in alarms:
            if (
                alarm.metric_data_queries
                or alarm.extended_statistic
                or not alarm.metric_name
                or not chosen(alarm)
            ):
                continue  # metric-math and percentile alarms are not evaluated by the stand-in
            value = metric_value(
                datapoints,
                namespace=alarm.namespace,
                name=alarm.metric_name,
                dimensions={d.name: d.value for d in alarm.dimensions},
                statistic=alarm.statistic or "Average",
                unit=alarm.unit,
            )
            periods = max(1, int(alarm.evaluation_periods or 1))
            history = self._histories.get(alarm.name)
            if history is None or history.alarm is not alarm:
                # New, or put again (a changed alarm starts over).
                history = self._histories[alarm.name] = _History(alarm, deque(maxlen=periods))
            history.recent.append((timestamp, value))
            recent = [v for _, v in history.recent]
            state = alarm_state(
                recent,
                operator=alarm.comparison_operator,
                threshold=float(alarm.threshold),
                datapoints_to_alarm=int(alarm.datapoints_to_alarm or periods),
                treat_missing_data=alarm.treat_missing_data or "missing",
            )
            if state is not None and state != alarm.state_value:
                reason, data = self._reason(alarm, history, state, timestamp)
                self.moto.set_alarm_state(alarm.name, state, reason, data)
                logger.info("alarm %s: %s (%s)", alarm.name, state, reason)
            if alarm.state_value == "ALARM" and value is not None and alarm.actions_enabled:
                fired.append(
                    FiredAlarm(
                        alarm.name, value, float(alarm.threshold), tuple(alarm.alarm_actions or ())
                    )
                )
        return fired

    def _reason(
        self, alarm: Any, history: _History, state: str, timestamp: datetime
    ) -> tuple[str, str]:
        points = [(at, v) for at, v in history.recent if v is not None]
        if state == "INSUFFICIENT_DATA" or not points:
            missing = len(history.recent)
            reason = (
                f"Insufficient Data: {missing} datapoint{'s were' if missing > 1 else ' was'} "
                "unknown."
            )
        else:
            words = _OPERATORS[alarm.comparison_operator][1]
            shown = ", ".join(f"{v:g} ({at:%d/%m/%y %H:%M:%S})" for at, v in reversed(points))
            verb = "was" if len(points) == 1 else "were"
            negation = "" if state == "ALARM" else "not "
            reason = (
                f"Threshold Crossed: {len(points)} datapoint{'s' if len(points) > 1 else ''} "
                f"[{shown}] {verb} {negation}{words} the threshold ({float(alarm.threshold):g})."
            )
        data = {
            "version": "1.0",
            "queryDate": f"{timestamp:%Y-%m-%dT%H:%M:%S.000+0000}",
            "statistic": alarm.statistic,
            "period": alarm.period,
            "recentDatapoints": [v for _, v in points],
            "threshold": float(alarm.threshold),
        }
        return reason, json.dumps(data)

    def forget(self) -> None:
        self._histories.clear()


def acts_on_scaling(alarm: Any) -> bool:
    """Whether an alarm's actions name an Application Auto Scaling policy."""
    return any(
        SCALING_POLICY_ARN_PART in action
        for action in [*(alarm.alarm_actions or []), *(alarm.ok_actions or [])]
    )
