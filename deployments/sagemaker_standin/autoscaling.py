"""Application Auto Scaling as the stand-in runs it, on the clock CloudWatch's minutes follow.

moto's Application Auto Scaling only stores scalable targets and policies. The stand-in's
scaling loop (``ScalingLoop``: a thread started and stopped with the server) acts on them once
every scaling period:

- **The clock.** One period stands for one CloudWatch minute. It lasts 60 s by default
  (``manage.py sagemaker_standin --scaling-period-s``); tests shorten it at run time with
  ``POST /_standin/clock {"period_s": 0.5, "scale_in_periods": 3}`` (``GET /_standin/clock``
  shows it, ``POST /_standin/reset`` restores the defaults). ``scale_in_periods`` is how many
  consecutive periods below target a target-tracking policy waits before scaling in (AWS's
  low alarm wants 15 one-minute datapoints, the default). Cooldowns are counted in periods, a
  period being 60 s of AWS time.
- **Each period** the loop takes the runtime's usage (``usage.py``), publishes SageMaker's
  metrics and evaluates the alarms that act on scaling policies (``cloudwatch.py``), then for
  each scalable target of namespace ``sagemaker`` that the fleet runs —
  ``inference-component/<name>`` (``sagemaker:inference-component:DesiredCopyCount``) and
  ``endpoint/<endpoint>/variant/<variant>`` (``sagemaker:variant:DesiredInstanceCount``) —
  brings its capacity within MinCapacity..MaxCapacity and applies its policies:

  - *target tracking* on ``SageMakerInferenceComponentInvocationsPerCopy`` or
    ``SageMakerVariantInvocationsPerInstance`` (computed from the period's invocations over the
    copies or instances running) or on a ``CustomizedMetricSpecification`` (e.g.
    ``GPUMemoryUtilization`` in ``/aws/sagemaker/Endpoints``, read from the datapoints put
    into CloudWatch during the period): above target it scales out at once to
    ceil(current × value / target), outside its ScaleOutCooldown; below target it scales in
    to the same figure after ``scale_in_periods`` periods in a row, outside its
    ScaleInCooldown and unless DisableScaleIn. A component with MinCapacity 0 and no
    invocations for that long goes to 0 copies. With no copy (or instance) there is no
    per-copy metric, so target tracking cannot scale out from 0: that is the step policy's job;
  - *step scaling*, each period an alarm whose AlarmActions name the policy is in ALARM (as
    CloudWatch re-invokes scaling actions every period while in ALARM): the step whose
    bounds hold the breach (value − threshold) gives a ChangeInCapacity, ExactCapacity or
    PercentChangeInCapacity (with MinAdjustmentMagnitude), outside the policy's Cooldown.

  Between several policies the largest capacity wins, as on AWS, so a scale in happens only
  when every policy with a figure agrees; a target whose component or endpoint is changing is
  left until it is InService, and SuspendedState is honoured.
- **Actions** go through the fleet's own paths (UpdateInferenceComponentRuntimeConfig's copy
  count, UpdateEndpointWeightsAndCapacities' resize), so Triton processes really start and
  stop; each is a scaling activity, InProgress until the fleet's change is done, that
  ``DescribeScalingActivities`` returns (moto lacks the call).

Where it differs from AWS: target tracking creates no CloudWatch alarms (the loop reads the
policy's metric itself); other predefined metrics (the high-resolution concurrency ones) and
metric-math specifications are not evaluated; a period is evaluated as one datapoint whatever
an alarm's Period.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from deployments.sagemaker_standin.cloudwatch import (
    AlarmEvaluator,
    FiredAlarm,
    MetricPublisher,
    NewDatapoints,
    metric_value,
)
from deployments.sagemaker_standin.errors import StandinError
from deployments.sagemaker_standin.fleet import Fleet
from deployments.sagemaker_standin.moto_state import INFERENCE_COMPONENT_COPIES
from deployments.sagemaker_standin.usage import PeriodUsage

__all__ = [
    "Autoscaler",
    "Clock",
    "InvalidClock",
    "ScalingLoop",
    "adjusted_capacity",
    "bounded",
    "chosen_capacity",
    "step_for",
    "target_tracking_capacity",
]

logger = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 60.0
DEFAULT_SCALE_IN_PERIODS = 15
# The AWS time one period stands for, which cooldowns are counted in.
AWS_PERIOD_S = 60
# Application Auto Scaling's default cooldowns for SageMaker targets.
DEFAULT_COOLDOWN_S = 300
MIN_PERIOD_S = 0.05
VARIANT_INSTANCES = "sagemaker:variant:DesiredInstanceCount"
COMPONENT_COPIES = INFERENCE_COMPONENT_COPIES
PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
PER_COPY = "SageMakerInferenceComponentInvocationsPerCopy"
COMPONENT = "component"
VARIANT = "variant"
OUT, IN = "out", "in"


class InvalidClock(ValueError):
    """A clock setting that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Clock:
    """How long a period lasts and how many periods below target precede a scale in."""

    period_s: float = DEFAULT_PERIOD_S
    scale_in_periods: int = DEFAULT_SCALE_IN_PERIODS

    def describe(self) -> dict[str, Any]:
        return {"period_s": self.period_s, "scale_in_periods": self.scale_in_periods}

    def changed(self, params: dict[str, Any]) -> Clock:
        """This clock with the fields ``params`` gives, validated."""
        unknown = sorted(set(params) - {"period_s", "scale_in_periods"})
        if unknown:
            raise InvalidClock(f"Unknown clock field(s): {', '.join(unknown)}.")
        clock = self
        if "period_s" in params:
            period_s = params["period_s"]
            if isinstance(period_s, bool) or not isinstance(period_s, int | float):
                raise InvalidClock("period_s must be a number of seconds.")
            if not MIN_PERIOD_S <= float(period_s) <= 3600:
                raise InvalidClock(f"period_s must be between {MIN_PERIOD_S} and 3600 seconds.")
            clock = replace(clock, period_s=float(period_s))
        if "scale_in_periods" in params:
            periods = params["scale_in_periods"]
            if isinstance(periods, bool) or not isinstance(periods, int) or periods < 1:
                raise InvalidClock("scale_in_periods must be a whole number of at least 1.")
            clock = replace(clock, scale_in_periods=periods)
        return clock


# -- the arithmetic (pure) -------------------------------------------------------------------


def bounded(capacity: int, minimum: int | None, maximum: int | None) -> int:
    """A capacity within the target's MinCapacity..MaxCapacity."""
    if maximum is not None:
        capacity = min(capacity, int(maximum))
    if minimum is not None:
        capacity = max(capacity, int(minimum))
    return capacity


def target_tracking_capacity(current: int, value: float, target: float) -> int:
    """The capacity that brings a per-unit metric back to its target: ceil(current × value /
    target), so any traffic keeps at least one unit and none at all gives 0."""
    return math.ceil(round(current * value / target, 9))


def step_for(steps: list[dict[str, Any]], breach: float) -> dict[str, Any] | None:
    """The step adjustment whose bounds (relative to the alarm threshold) hold ``breach``.

    Above the threshold a lower bound is inclusive and an upper one exclusive; below it, the
    other way round; a missing bound is infinite.
    """
    for step in steps:
        lower = step.get("MetricIntervalLowerBound")
        upper = step.get("MetricIntervalUpperBound")
        if breach >= 0:
            fits = (lower is None or breach >= float(lower)) and (
                upper is None or breach < float(upper)
            )
        else:
            fits = (lower is None or breach > float(lower)) and (
                upper is None or breach <= float(upper)
            )
        if fits:
            return step
    return None


def adjusted_capacity(
    current: int, adjustment_type: str, adjustment: int, min_magnitude: int | None = None
) -> int:
    """A step's new capacity: ChangeInCapacity, ExactCapacity or PercentChangeInCapacity (a
    change under one unit rounded away from zero, a larger one toward zero, at least
    MinAdjustmentMagnitude)."""
    if adjustment_type == "ExactCapacity":
        return adjustment
    if adjustment_type == "PercentChangeInCapacity":
        change = current * adjustment / 100
        whole = (1 if change > 0 else -1) if 0 < abs(change) < 1 else int(change)
        if min_magnitude and whole and abs(whole) < min_magnitude:
            whole = min_magnitude if whole > 0 else -min_magnitude
        return current + whole
    return current + adjustment


def chosen_capacity(current: int, wanted: list[int]) -> int | None:
    """What several policies' capacities come to: the largest wins, so a scale in happens only
    when every policy with a figure asks for less; None when nothing changes."""
    if not wanted:
        return None
    largest = max(wanted)
    return None if largest == current else largest


# -- the autoscaler --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A scalable target the fleet runs, as this period finds it."""

    target: Any
    kind: str
    name: str
    variant_name: str | None
    current: int
    live: int
    busy: bool

    @property
    def unit(self) -> str:
        return "copy count" if self.kind == COMPONENT else "instance count"


@dataclass(frozen=True)
class _Opinion:
    capacity: int
    policy: Any
    cause: str


def _cooldown_periods(seconds: Any) -> int:
    seconds = DEFAULT_COOLDOWN_S if seconds is None else int(seconds)
    return math.ceil(seconds / AWS_PERIOD_S)


def _now() -> datetime:
    return datetime.now(UTC)


class Autoscaler:
    """Applies the ``sagemaker`` namespace's targets and policies to the fleet, once a period."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.moto = fleet.moto
        self._lock = threading.Lock()
        self._activities: list[dict[str, Any]] = []
        self._below: dict[str, int] = {}
        self._last: dict[tuple[str, str], int] = {}
        self._period = 0
        self._ids = itertools.count(1)
        self._unsupported: set[str] = set()

    def run_period(
        self,
        *,
        usage: PeriodUsage,
        datapoints: list[Any],
        fired: list[FiredAlarm],
        clock: Clock,
    ) -> None:
        """Settle finished activities, then scale every target its policies say to."""
        self._period += 1
        self._settle()
        backend = self.moto.autoscaling
        policies = [p for p in backend.policies.values() if p.service_namespace == "sagemaker"]
        for target in backend.describe_scalable_targets("sagemaker", None, None):
            view = self._view(target)
            if view is None:
                continue
            mine = [
                p
                for p in policies
                if p.resource_id == target.resource_id
                and p.scalable_dimension == target.scalable_dimension
            ]
            self._scale(view, mine, usage, datapoints, fired, clock)

    # -- one target --------------------------------------------------------------------------

    def _view(self, target: Any) -> _Target | None:
        parts = target.resource_id.split("/")
        with self.fleet.lock:
            if target.scalable_dimension == COMPONENT_COPIES and parts[0] == "inference-component":
                component = self.fleet.components.get("/".join(parts[1:]))
                if component is None or component.status in ("Creating", "Deleting", "Failed"):
                    return None
                return _Target(
                    target=target,
                    kind=COMPONENT,
                    name=component.name,
                    variant_name=None,
                    current=component.desired_copies,
                    live=len(component.copies),
                    busy=component.status != "InService",
                )
            if (
                target.scalable_dimension == VARIANT_INSTANCES
                and len(parts) == 4
                and parts[0] == "endpoint"
                and parts[2] == "variant"
            ):
                endpoint = self.fleet.endpoints.get(parts[1])
                deployment = endpoint.deployment if endpoint is not None else None
                moto_endpoint = self.moto.endpoint(parts[1])
                if (
                    deployment is None
                    or endpoint.deleting
                    or moto_endpoint is None
                    or deployment.variant_name != parts[3]
                ):
                    return None
                return _Target(
                    target=target,
                    kind=VARIANT,
                    name=endpoint.name,
                    variant_name=deployment.variant_name,
                    current=deployment.desired_count,
                    live=len(deployment.instances),
                    busy=moto_endpoint.endpoint_status != "InService",
                )
        return None

    def _scale(
        self,
        view: _Target,
        policies: list[Any],
        usage: PeriodUsage,
        datapoints: list[Any],
        fired: list[FiredAlarm],
        clock: Clock,
    ) -> None:
        minimum, maximum = view.target.min_capacity, view.target.max_capacity
        opinions: list[_Opinion] = []
        within = bounded(view.current, minimum, maximum)
        if within != view.current:
            edge = "minimum" if within > view.current else "maximum"
            opinions.append(_Opinion(within, None, f"{edge} capacity was set to {within}"))
        for policy in policies:
            if policy.policy_type == "TargetTrackingScaling":
                opinion = self._track(view, policy, usage, datapoints, clock)
            elif policy.policy_type == "StepScaling":
                opinion = self._step(view, policy, fired)
            else:
                opinion = None
            if opinion is not None:
                opinions.append(opinion)
        if within != view.current:
            # Outside its bounds the target first goes to the nearest one.
            capacity = within
        else:
            capacity = chosen_capacity(view.current, [o.capacity for o in opinions])
        if capacity is None or view.busy:
            return
        direction = OUT if capacity > view.current else IN
        suspended = view.target.suspended_state or {}
        if suspended.get(
            "DynamicScalingOutSuspended" if direction == OUT else "DynamicScalingInSuspended"
        ):
            return
        deciding = next(o for o in opinions if o.capacity == capacity)
        if not self._apply(view, capacity, deciding.cause):
            return
        for opinion in opinions:
            if opinion.policy is not None and opinion.capacity == capacity:
                self._last[(opinion.policy.policy_arn, direction)] = self._period
                if direction == IN:
                    self._below.pop(opinion.policy.policy_arn, None)

    def _cooling(self, policy: Any, direction: str, cooldown_s: Any) -> bool:
        last = self._last.get((policy.policy_arn, direction))
        return last is not None and self._period - last < _cooldown_periods(cooldown_s)

    def _track(
        self,
        view: _Target,
        policy: Any,
        usage: PeriodUsage,
        datapoints: list[Any],
        clock: Clock,
    ) -> _Opinion | None:
        config = policy.target_tracking_scaling_policy_configuration or {}
        key = policy.policy_arn
        value = self._tracked_value(view, config, usage, datapoints)
        if value is None or not config.get("TargetValue"):
            # No figure this period (no copy, no datapoint): nothing to track, and the
            # periods below target start again.
            self._below.pop(key, None)
            return None
        target_value = float(config["TargetValue"])
        capacity = bounded(
            target_tracking_capacity(view.current, value, target_value),
            view.target.min_capacity,
            view.target.max_capacity,
        )
        keep = _Opinion(view.current, policy, "")
        if value > target_value:
            self._below[key] = 0
            if capacity <= view.current or self._cooling(
                policy, OUT, config.get("ScaleOutCooldown")
            ):
                return keep
            return _Opinion(
                capacity,
                policy,
                f"target tracking policy {policy.policy_name}: {value:g} above the target "
                f"{target_value:g}",
            )
        if value == target_value:
            self._below[key] = 0
            return keep
        below = self._below[key] = self._below.get(key, 0) + 1
        if (
            capacity >= view.current
            or below < clock.scale_in_periods
            or config.get("DisableScaleIn")
            or self._cooling(policy, IN, config.get("ScaleInCooldown"))
        ):
            return keep
        return _Opinion(
            capacity,
            policy,
            f"target tracking policy {policy.policy_name}: {value:g} below the target "
            f"{target_value:g} for {below} periods",
        )

    def _tracked_value(
        self,
        view: _Target,
        config: dict[str, Any],
        usage: PeriodUsage,
        datapoints: list[Any],
    ) -> float | None:
        predefined = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if predefined == PER_COPY and view.kind == COMPONENT:
            if not view.live:
                return None
            counts = usage.components.get(view.name)
            return (counts.invocations if counts else 0) / view.live
        if predefined == PER_INSTANCE and view.kind == VARIANT:
            if not view.live:
                return None
            counts = usage.variants.get((view.name, view.variant_name or ""))
            return counts.invocations_per_instance if counts else 0.0
        custom = config.get("CustomizedMetricSpecification") or {}
        if not predefined and custom.get("MetricName"):
            return metric_value(
                datapoints,
                namespace=custom.get("Namespace") or "",
                name=custom["MetricName"],
                dimensions={d["Name"]: d["Value"] for d in custom.get("Dimensions") or []},
                statistic=custom.get("Statistic") or "Average",
                unit=custom.get("Unit"),
            )
        what = predefined or "a metric-math CustomizedMetricSpecification"
        if what not in self._unsupported:
            self._unsupported.add(what)
            logger.warning("target tracking on %s is not evaluated by the stand-in", what)
        return None

    def _step(self, view: _Target, policy: Any, fired: list[FiredAlarm]) -> _Opinion | None:
        arn = policy.policy_arn
        alarm = next(
            (
                alarm
                for alarm in fired
                if any(action == arn or action.startswith(f"{arn}:") for action in alarm.actions)
            ),
            None,
        )
        if alarm is None:
            return None
        config = policy.step_scaling_policy_configuration or {}
        step = step_for(config.get("StepAdjustments") or [], alarm.value - alarm.threshold)
        if step is None:
            return None
        capacity = bounded(
            adjusted_capacity(
                view.current,
                config.get("AdjustmentType") or "ChangeInCapacity",
                int(step["ScalingAdjustment"]),
                config.get("MinAdjustmentMagnitude"),
            ),
            view.target.min_capacity,
            view.target.max_capacity,
        )
        if capacity != view.current and self._cooling(
            policy, OUT if capacity > view.current else IN, config.get("Cooldown")
        ):
            return _Opinion(view.current, policy, "")
        return _Opinion(
            capacity,
            policy,
            f"monitor alarm {alarm.name} in state ALARM triggered policy {policy.policy_name}",
        )

    # -- actions and activities --------------------------------------------------------------

    def _apply(self, view: _Target, capacity: int, cause: str) -> bool:
        try:
            if view.kind == COMPONENT:
                self.fleet.set_component_copies(view.name, capacity)
            else:
                self.fleet.update_weights_and_capacities(
                    view.name,
                    [{"VariantName": view.variant_name, "DesiredInstanceCount": capacity}],
                )
        except StandinError as error:
            # Busy or gone since this period looked: the next period tries again.
            logger.info("scaling %s to %s deferred: %s", view.name, capacity, error.message)
            return False
        logger.info("scaling %s %s to %s (%s)", view.name, view.unit, capacity, cause)
        with self._lock:
            self._activities.append(
                {
                    "ActivityId": f"standin-{next(self._ids):06d}",
                    "ServiceNamespace": "sagemaker",
                    "ResourceId": view.target.resource_id,
                    "ScalableDimension": view.target.scalable_dimension,
                    "Description": f"Setting desired {view.unit} to {capacity}.",
                    "Cause": (
                        f"At {_now():%Y-%m-%dT%H:%M:%SZ} a {cause} changing the desired "
                        f"capacity from {view.current} to {capacity}."
                    ),
                    "StartTime": _now(),
                    "StatusCode": "InProgress",
                    "StatusMessage": f"Setting desired {view.unit} to {capacity}.",
                    "_kind": view.kind,
                    "_name": view.name,
                    "_capacity": capacity,
                }
            )
        return True

    def _settle(self) -> None:
        """Mark the activities whose change the fleet has finished Successful (or Failed)."""
        with self._lock:
            pending = [a for a in self._activities if a["StatusCode"] == "InProgress"]
        for activity in pending:
            outcome = self._outcome(activity)
            if outcome is None:
                continue
            status, message = outcome
            with self._lock:
                activity.update(StatusCode=status, StatusMessage=message, EndTime=_now())

    def _outcome(self, activity: dict[str, Any]) -> tuple[str, str] | None:
        unit = "copy count" if activity["_kind"] == COMPONENT else "instance count"
        capacity = activity["_capacity"]
        with self.fleet.lock:
            if activity["_kind"] == COMPONENT:
                component = self.fleet.components.get(activity["_name"])
                if component is None:
                    return "Failed", "The inference component no longer exists."
                if component.status != "InService":
                    return None
                failure, running = component.failure_reason, len(component.copies)
            else:
                endpoint = self.fleet.endpoints.get(activity["_name"])
                moto_endpoint = self.moto.endpoint(activity["_name"])
                if endpoint is None or endpoint.deployment is None or moto_endpoint is None:
                    return "Failed", "The endpoint no longer exists."
                if moto_endpoint.endpoint_status != "InService":
                    return None
                failure = moto_endpoint.failure_reason
                running = len(endpoint.deployment.instances)
        if running == capacity:
            return (
                "Successful",
                f"Successfully set desired {unit} to {capacity}. Change successfully fulfilled "
                "by sagemaker.",
            )
        return "Failed", f"Failed to set desired {unit} to {capacity}. Reason: {failure}"

    def describe_activities(self, params: dict[str, Any]) -> dict[str, Any]:
        """DescribeScalingActivities: newest first, filtered by resource and dimension."""
        with self._lock:
            found = [
                {key: value for key, value in activity.items() if not key.startswith("_")}
                for activity in reversed(self._activities)
                if activity["ServiceNamespace"] == params.get("ServiceNamespace")
                and (not params.get("ResourceId") or activity["ResourceId"] == params["ResourceId"])
                and (
                    not params.get("ScalableDimension")
                    or activity["ScalableDimension"] == params["ScalableDimension"]
                )
            ]
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 50)
        result: dict[str, Any] = {"ScalingActivities": found[start : start + size]}
        if start + size < len(found):
            result["NextToken"] = str(start + size)
        return result

    def forget(self) -> None:
        with self._lock:
            self._activities.clear()
        self._below.clear()
        self._last.clear()
        self._period = 0


# -- the loop --------------------------------------------------------------------------------


class ScalingLoop:
    """The thread that runs a period's publishing, alarm evaluation and scaling on the clock."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        period_s: float = DEFAULT_PERIOD_S,
        scale_in_periods: int = DEFAULT_SCALE_IN_PERIODS,
    ) -> None:
        self.fleet = fleet
        self.defaults = Clock().changed(
            {"period_s": period_s, "scale_in_periods": scale_in_periods}
        )
        self.clock = self.defaults
        self.publisher = MetricPublisher(fleet)
        self.datapoints = NewDatapoints(fleet.moto)
        self.alarms = AlarmEvaluator(fleet.moto)
        self.autoscaler = Autoscaler(fleet)
        # Held for a whole period's work, and by reset so no period acts on half-reset state.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._next_at = time.monotonic() + self.clock.period_s
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._next_at = time.monotonic() + self.clock.period_s
        self._thread = threading.Thread(target=self._run, name="standin-scaling", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)

    def set_clock(self, params: dict[str, Any]) -> Clock:
        """Change the period or the periods before a scale in; the next period ends one new
        period from now."""
        with self._lock:
            self.clock = self.clock.changed(params)
            self._next_at = time.monotonic() + self.clock.period_s
        self._wake.set()
        return self.clock

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No period runs inside this block."""
        with self._lock:
            yield

    def forget(self) -> None:
        """Back to the default clock with nothing counted or remembered (call while paused)."""
        self.clock = self.defaults
        self.fleet.usage.take()
        self.publisher.forget()
        self.datapoints.forget()
        self.alarms.forget()
        self.autoscaler.forget()
        self._next_at = time.monotonic() + self.clock.period_s
        self._wake.set()

    def tick(self) -> None:
        """Run one period now."""
        with self._lock:
            self._next_at = time.monotonic() + self.clock.period_s
            timestamp = datetime.now(UTC).replace(tzinfo=None)  # moto keeps naive UTC
            usage = self.fleet.usage.take()
            try:
                self.publisher.publish(usage, timestamp)
                datapoints = self.datapoints.take()
                fired = self.alarms.evaluate(datapoints, timestamp)
                self.autoscaler.run_period(
                    usage=usage, datapoints=datapoints, fired=fired, clock=self.clock
                )
            except Exception:
                logger.exception("stand-in: a scaling period failed")

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                wait_s = self._next_at - time.monotonic()
            if wait_s > 0:
                self._wake.wait(wait_s)
                self._wake.clear()
                continue
            self.tick()
