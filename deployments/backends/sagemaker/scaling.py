"""Autoscaling on SageMaker: which policies each endpoint variant and inference component gets,
registering them (Application Auto Scaling and CloudWatch, through ``client``), keeping each as a
``ScalingPolicy`` row, and bringing a component scaled to zero back when a request meets it.

The policies, as the seeds set them:

- An MME variant on a GPU instance type tracks the average GPU memory its instances use
  (SageMaker's ``GPUMemoryUtilization`` endpoint metric, a customized metric specification) at the
  endpoint's target memory utilization (Forethought: 80 %); the metric counts each GPU up to
  100 %, so the target is that fraction times 100 times the type's GPUs. On a CPU type it tracks
  ``SageMakerVariantInvocationsPerInstance`` at 225 (Forethought). Instances never go below one.
- An inference component's copies track ``SageMakerInferenceComponentInvocationsPerCopy`` at a
  target derived from the model's measured latency (``invocations_per_copy_target``). A pinned
  (premium) model keeps one copy or more. An unpinned one may scale in to zero copies; since
  target tracking cannot scale out of zero (no copy, no metric), it also gets what AWS documents
  for that: a step policy that sets the copy count to one, invoked by a CloudWatch alarm on the
  component's ``NoCapacityInvocationFailures``.
- The platform's own faster trigger (``wake_component``): a request that meets a component with
  no copy asks for one at once (UpdateInferenceComponentRuntimeConfig), once across requests and
  processes (a ``sagemaker.scale_out_requested`` Event under the placement's row lock is the
  marker), and the caller gets 503 with a Retry-After from measured figures: how long this
  component's last start from zero, or its rollout, took (``Placement.load_time_ms``).

The top of this module is pure (specs and arithmetic, unit-tested alone); the rest writes the
rows and Events that mirror what was registered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends.sagemaker.client import (
    DEFAULT_VARIANT,
    EndpointBackendError,
    SageMakerEndpointBackend,
    no_capacity_alarm_name,
)
from deployments.models import Endpoint, Event, Placement, ScalingPolicy, VersionUsageMinute

VARIANT_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
COPY_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
INVOCATIONS_PER_COPY = "SageMakerInferenceComponentInvocationsPerCopy"
GPU_MEMORY = "GPUMemoryUtilization"
NO_CAPACITY = "NoCapacityInvocationFailures"
# SageMaker publishes its endpoint instance metrics (GPUMemoryUtilization among them) here.
ENDPOINT_INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"

# Forethought's figure for a CPU multi-model endpoint: scale out past 225 invocations a minute
# per instance.
MME_INVOCATIONS_PER_INSTANCE = 225.0
# Copies of one component at most, unless its deployment asks for more replicas.
MAX_COPIES = 4
# A traffic average stands for a copy's latency only once it covers this many requests.
TRAFFIC_MIN_REQUESTS = 100
TRAFFIC_WINDOW = timedelta(hours=1)
# Retry-After bounds while a copy starts: never more than this, and once the expected time has
# passed, a short poll (a tenth of it, within 1-5 s).
RETRY_AFTER_MAX_S = 900
LATE_POLL_S = (1, 5)
# A request for a copy counts as under way for twice its expected time (at least a minute);
# after that a request that still finds no copy asks again.
PENDING_MIN_S = 60.0
# Retry-After while a component finishes a change (it takes no new copy count meanwhile).
BUSY_RETRY_S = 2

SCALE_OUT_REQUESTED = "sagemaker.scale_out_requested"
SCALED_TO_ZERO = "sagemaker.component_scaled_to_zero"
SCALED_FROM_ZERO = "sagemaker.component_scaled_from_zero"
ACTOR = "sagemaker"


# ---------------------------------------------------------------------------------------------
# Pure: what each resource gets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySpec:
    """One policy as Application Auto Scaling (and, for a step policy, CloudWatch) takes it."""

    resource_id: str
    scalable_dimension: str
    policy_name: str
    policy_type: str  # ScalingPolicy.PolicyType
    metric: str
    target_value: float | None
    min_capacity: int
    max_capacity: int
    scale_in_cooldown_s: int = 300
    scale_out_cooldown_s: int = 60
    basis: str = ""
    alarm_name: str = ""

    @property
    def floor(self) -> int:
        """The least minimum the resource allows: a variant keeps an instance, copies may go."""
        return 1 if self.scalable_dimension == VARIANT_DIMENSION else 0


@dataclass(frozen=True)
class CopyTarget:
    """Invocations per copy a minute to track, and how it was derived."""

    value: float
    basis: str


def variant_resource(endpoint_name: str, variant: str = DEFAULT_VARIANT) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def component_resource(component: str) -> str:
    return f"inference-component/{component}"


def variant_policy_names(endpoint_name: str, variant: str = DEFAULT_VARIANT) -> dict[str, str]:
    """The name of a variant's policy for each metric it may follow."""
    return {
        INVOCATIONS_PER_INSTANCE: f"{endpoint_name}-{variant}-invocations-per-instance",
        GPU_MEMORY: f"{endpoint_name}-{variant}-gpu-memory",
    }


def variant_policy(
    *,
    endpoint_name: str,
    gpu_count: int,
    target_memory_fraction: float,
    min_instances: int,
    max_instances: int,
    variant: str = DEFAULT_VARIANT,
) -> PolicySpec:
    """An MME variant's policy: GPU memory on a GPU type, invocations per instance on a CPU one."""
    names = variant_policy_names(endpoint_name, variant)
    minimum = max(1, min_instances)
    common = {
        "resource_id": variant_resource(endpoint_name, variant),
        "scalable_dimension": VARIANT_DIMENSION,
        "policy_type": ScalingPolicy.PolicyType.TARGET_TRACKING,
        "min_capacity": minimum,
        "max_capacity": max(minimum, max_instances),
    }
    if gpu_count > 0:
        percent = round(target_memory_fraction * 100, 1)
        target = round(percent * gpu_count, 1)
        per_gpu = "" if gpu_count == 1 else f" × {gpu_count} GPUs (the metric counts 100 % per GPU)"
        return PolicySpec(
            **common,
            policy_name=names[GPU_MEMORY],
            metric=GPU_MEMORY,
            target_value=target,
            basis=(
                f"GPU instance type: average GPU memory at the endpoint's target of {percent:g} %"
                f"{per_gpu} (Forethought ran its multi-model endpoints at 80 %)."
            ),
        )
    return PolicySpec(
        **common,
        policy_name=names[INVOCATIONS_PER_INSTANCE],
        metric=INVOCATIONS_PER_INSTANCE,
        target_value=MME_INVOCATIONS_PER_INSTANCE,
        basis=(
            "CPU instance type: 225 invocations a minute per instance (Forethought's figure for "
            "its CPU multi-model endpoints)."
        ),
    )


def invocations_per_copy_target(
    *,
    warm_latency_ms: float | None,
    traffic_latency_ms: float | None,
    traffic_requests: int,
    safety_factor: float,
) -> CopyTarget | None:
    """The invocations per copy a minute a component's copies should track, from its measured
    latency: a copy answers one request at a time (one Triton model instance per copy), so it
    can take 60,000 / latency requests a minute; times ``safety_factor`` (SageMaker's load-testing
    guide: target = peak rate × safety factor, starting at 0.5) leaves room for bursts while a new
    copy starts. None when nothing was measured."""
    if traffic_requests >= TRAFFIC_MIN_REQUESTS and traffic_latency_ms and traffic_latency_ms > 0:
        latency_ms = traffic_latency_ms
        source = f"{traffic_requests:,} requests in the last hour averaged {latency_ms:,.1f} ms"
    elif warm_latency_ms and warm_latency_ms > 0:
        latency_ms = warm_latency_ms
        source = f"its warm request took {latency_ms:,.1f} ms"
    else:
        return None
    per_minute = 60_000.0 / latency_ms
    value = max(1.0, round(per_minute * safety_factor, 1))
    return CopyTarget(
        value=value,
        basis=(
            f"Measured: {source}, so a copy answers about {per_minute:,.0f} requests a minute one "
            f"at a time; × safety factor {safety_factor:g} = {value:,.1f} invocations per copy a "
            "minute (dynamic batching's gain is not counted until measured)."
        ),
    )


def component_policies(
    *, component: str, pinned: bool, replicas: int, target: CopyTarget, max_copies: int = MAX_COPIES
) -> list[PolicySpec]:
    """An inference component's policies: copies tracking ``target`` (at least one for a pinned
    model, else down to zero), and for an unpinned one the step policy its no-capacity alarm
    invokes to bring it back from zero."""
    minimum = max(1, replicas) if pinned else 0
    maximum = max(replicas, max_copies, 1)
    tracking = PolicySpec(
        resource_id=component_resource(component),
        scalable_dimension=COPY_DIMENSION,
        policy_name=f"{component}-invocations-per-copy",
        policy_type=ScalingPolicy.PolicyType.TARGET_TRACKING,
        metric=INVOCATIONS_PER_COPY,
        target_value=target.value,
        min_capacity=minimum,
        max_capacity=maximum,
        basis=target.basis
        + (" Pinned (premium): never fewer than one copy." if pinned else " May scale to zero."),
    )
    if pinned:
        return [tracking]
    step = PolicySpec(
        resource_id=component_resource(component),
        scalable_dimension=COPY_DIMENSION,
        policy_name=f"{component}-scale-out-from-zero",
        policy_type=ScalingPolicy.PolicyType.STEP,
        metric=NO_CAPACITY,
        target_value=None,
        min_capacity=minimum,
        max_capacity=maximum,
        basis=(
            "Target tracking cannot scale out of zero copies (no copy, no invocations metric): "
            "the alarm on NoCapacityInvocationFailures sets the copy count to 1."
        ),
        alarm_name=no_capacity_alarm_name(component),
    )
    return [tracking, step]


def enforce_floor(spec: PolicySpec, *, pinned: bool) -> PolicySpec:
    """``spec`` with a minimum the rules allow: a variant keeps one instance, a pinned model's
    component one copy (premium models never scale to zero)."""
    floor = max(spec.floor, 1 if pinned else 0)
    minimum = max(spec.min_capacity, floor)
    return replace(spec, min_capacity=minimum, max_capacity=max(minimum, spec.max_capacity))


def customized_metric(spec: PolicySpec) -> dict | None:
    """The CloudWatch metric a target tracking policy follows when it is not a predefined one
    (GPU memory of a variant's instances); None for a predefined metric."""
    if spec.metric != GPU_MEMORY:
        return None
    _, endpoint_name, _, variant = spec.resource_id.split("/", 3)
    return {
        "MetricName": GPU_MEMORY,
        "Namespace": ENDPOINT_INSTANCE_NAMESPACE,
        "Dimensions": [
            {"Name": "EndpointName", "Value": endpoint_name},
            {"Name": "VariantName", "Value": variant},
        ],
        "Statistic": "Average",
        "Unit": "Percent",
    }


def scale_from_zero_retry_after_s(*, expected_s: float, elapsed_s: float) -> int:
    """Whole seconds a caller should wait for a copy expected ``expected_s`` after it was asked
    for, ``elapsed_s`` ago: what is left of it (at most ``RETRY_AFTER_MAX_S``); once that has
    passed, a short poll."""
    left = expected_s - elapsed_s
    if left >= 1:
        return min(RETRY_AFTER_MAX_S, math.ceil(left))
    low, high = LATE_POLL_S
    return int(min(high, max(low, math.ceil(expected_s / 10))))


def expected_copy_start(
    *, measured_ms: float | None, approximate_s: float | None, default_s: float
) -> tuple[float, str]:
    """How long a copy of this component is expected to take to start, and from what: its own
    last measured start (from zero, or its rollout), else SageMaker's estimate in the answer,
    else ``default_s``."""
    if measured_ms and measured_ms > 0:
        return measured_ms / 1000, "this component's last measured copy start"
    if approximate_s and approximate_s > 0:
        return approximate_s, "SageMaker's ApproximateModelLoadTime"
    return default_s, "SAGEMAKER_SCALE_FROM_ZERO_WAIT_S (nothing measured yet)"


# ---------------------------------------------------------------------------------------------
# Registering policies, and their rows
# ---------------------------------------------------------------------------------------------


def apply_spec(backend: SageMakerEndpointBackend, spec: PolicySpec) -> str:
    """Register ``spec`` in the account (its target's bounds, the policy, a step policy's alarm);
    the policy ARN."""
    backend.register_scalable_target(
        resource_id=spec.resource_id,
        dimension=spec.scalable_dimension,
        minimum=spec.min_capacity,
        maximum=spec.max_capacity,
        floor=spec.floor,
    )
    if spec.policy_type == ScalingPolicy.PolicyType.STEP:
        arn = backend.put_step_scaling_policy(
            resource_id=spec.resource_id,
            dimension=spec.scalable_dimension,
            policy_name=spec.policy_name,
            cooldown_s=spec.scale_out_cooldown_s,
        )
        backend.put_no_capacity_alarm(
            alarm_name=spec.alarm_name,
            component_name=spec.resource_id.split("/", 1)[1],
            policy_arn=arn,
        )
        return arn
    custom = customized_metric(spec)
    return backend.put_target_tracking_policy(
        resource_id=spec.resource_id,
        dimension=spec.scalable_dimension,
        policy_name=spec.policy_name,
        target=float(spec.target_value or 0),
        predefined_metric="" if custom else spec.metric,
        customized_metric=custom,
        scale_in_cooldown_s=spec.scale_in_cooldown_s,
        scale_out_cooldown_s=spec.scale_out_cooldown_s,
    )


def spec_of(row: ScalingPolicy) -> PolicySpec:
    """The spec a row holds (what the operator may have edited included)."""
    return PolicySpec(
        resource_id=row.resource_id,
        scalable_dimension=row.scalable_dimension,
        policy_name=row.policy_name,
        policy_type=row.policy_type,
        metric=row.metric,
        target_value=row.target_value,
        min_capacity=row.min_capacity,
        max_capacity=row.max_capacity,
        scale_in_cooldown_s=row.scale_in_cooldown_s,
        scale_out_cooldown_s=row.scale_out_cooldown_s,
        basis=row.basis,
        alarm_name=row.alarm_name,
    )


def _with_operator_values(spec: PolicySpec, row: ScalingPolicy | None) -> PolicySpec:
    if row is None or not row.operator_edited:
        return spec
    return replace(
        spec,
        target_value=row.target_value if spec.target_value is not None else None,
        min_capacity=row.min_capacity,
        max_capacity=row.max_capacity,
        scale_in_cooldown_s=row.scale_in_cooldown_s,
        scale_out_cooldown_s=row.scale_out_cooldown_s,
    )


def register_policies(
    *,
    backend: SageMakerEndpointBackend,
    endpoint: Endpoint,
    specs: list[PolicySpec],
    pinned: bool = False,
    model=None,
    actor: str = ACTOR,
) -> list[ScalingPolicy]:
    """Register every spec of one resource (an operator's edited values kept, the floors
    enforced), delete its policies no spec names any more, and keep one row per policy with
    its ARN, or with why AWS refused it (then raised)."""
    resource_ids = {spec.resource_id for spec in specs}
    existing = {
        row.policy_name: row for row in ScalingPolicy.objects.filter(resource_id__in=resource_ids)
    }
    wanted = [
        enforce_floor(_with_operator_values(spec, existing.get(spec.policy_name)), pinned=pinned)
        for spec in specs
    ]
    # One target per resource: every policy on it states the same bounds, the first spec's.
    bounds = {spec.resource_id: (spec.min_capacity, spec.max_capacity) for spec in reversed(wanted)}
    wanted = [
        replace(
            spec, min_capacity=bounds[spec.resource_id][0], max_capacity=bounds[spec.resource_id][1]
        )
        for spec in wanted
    ]
    names = {spec.policy_name for spec in wanted}
    for name, row in existing.items():
        if name not in names:
            remove_policy(backend=backend, row=row)
    rows = []
    for spec in wanted:
        row = _save_row(
            spec=spec, endpoint=endpoint, model=model, existing=existing.get(spec.policy_name)
        )
        rows.append(_apply_row(backend=backend, row=row, actor=actor, raise_refusal=True))
    return rows


def _save_row(*, spec: PolicySpec, endpoint: Endpoint, model, existing: ScalingPolicy | None):
    values = {
        "endpoint": endpoint,
        "model": model,
        "scalable_dimension": spec.scalable_dimension,
        "policy_type": spec.policy_type,
        "metric": spec.metric,
        "target_value": spec.target_value,
        "min_capacity": spec.min_capacity,
        "max_capacity": spec.max_capacity,
        "scale_in_cooldown_s": spec.scale_in_cooldown_s,
        "scale_out_cooldown_s": spec.scale_out_cooldown_s,
        "alarm_name": spec.alarm_name,
    }
    if existing is None or not existing.operator_edited:
        values["basis"] = spec.basis
    row, _ = ScalingPolicy.objects.update_or_create(
        resource_id=spec.resource_id, policy_name=spec.policy_name, defaults=values
    )
    return row


def apply_row(
    *, backend: SageMakerEndpointBackend, row: ScalingPolicy, actor: str
) -> ScalingPolicy:
    """Register what ``row`` holds now (an operator's edit); AWS's refusal lands in
    ``apply_error`` rather than raising."""
    return _apply_row(backend=backend, row=row, actor=actor, raise_refusal=False)


def _apply_row(
    *, backend: SageMakerEndpointBackend, row: ScalingPolicy, actor: str, raise_refusal: bool
) -> ScalingPolicy:
    try:
        arn = apply_spec(backend, spec_of(row))
    except DomainError as exc:
        ScalingPolicy.objects.filter(pk=row.pk).update(
            apply_error=exc.message, updated_at=timezone.now()
        )
        record_event(
            kind="sagemaker.scaling_policy_refused",
            severity="error",
            actor=actor,
            message=f"AWS refused scaling policy {row.policy_name}: {exc.message}",
            endpoint=row.endpoint,
            data={"policy": row.policy_name, "resource": row.resource_id},
        )
        row.refresh_from_db()
        if raise_refusal:
            raise
        return row
    now = timezone.now()
    ScalingPolicy.objects.filter(pk=row.pk).update(
        policy_arn=arn, applied_at=now, apply_error="", updated_at=now
    )
    row.refresh_from_db()
    return row


def remove_policy(*, backend: SageMakerEndpointBackend, row: ScalingPolicy) -> None:
    """Delete one policy (and its alarm) from the account, then its row."""
    if row.alarm_name:
        backend.delete_alarm(row.alarm_name)
    backend.delete_scaling_policy(
        resource_id=row.resource_id, dimension=row.scalable_dimension, policy_name=row.policy_name
    )
    row.delete()


def retire_policies(*, backend: SageMakerEndpointBackend, rows) -> list[str]:
    """Delete from the account every policy ``rows`` name (explicitly: a deregistered target
    takes its policies with it on AWS, not on every stand-in of it), their targets and alarms,
    then the rows; the alarms deleted. What is gone already counts as done."""
    rows = list(rows)
    for row in rows:
        backend.delete_scaling_policy(
            resource_id=row.resource_id,
            dimension=row.scalable_dimension,
            policy_name=row.policy_name,
        )
    for resource_id, dimension in sorted({(r.resource_id, r.scalable_dimension) for r in rows}):
        backend.deregister_scalable_target(resource_id=resource_id, dimension=dimension)
    alarms = [
        alarm
        for alarm in sorted({row.alarm_name for row in rows if row.alarm_name})
        if backend.delete_alarm(alarm)
    ]
    ScalingPolicy.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return alarms


def retire_component_policies(*, backend: SageMakerEndpointBackend, component: str) -> list[str]:
    """``retire_policies`` for one inference component's policies."""
    return retire_policies(
        backend=backend,
        rows=ScalingPolicy.objects.filter(resource_id=component_resource(component)),
    )


def retire_endpoint_policies(*, backend: SageMakerEndpointBackend, endpoint: Endpoint) -> list[str]:
    """``retire_policies`` for every policy of an endpoint (its variant's, its components')."""
    return retire_policies(backend=backend, rows=ScalingPolicy.objects.filter(endpoint=endpoint))


def register_variant_policies(
    *, backend: SageMakerEndpointBackend, endpoint: Endpoint, actor: str = ACTOR
) -> list[ScalingPolicy]:
    """An MME endpoint's variant policy (by its instance type's family), the other metric's
    policy deleted where an earlier rollout registered it."""
    spec = variant_policy(
        endpoint_name=endpoint.name,
        gpu_count=endpoint.instance_type.gpu_count,
        target_memory_fraction=float(endpoint.target_memory_utilization),
        min_instances=endpoint.min_instances,
        max_instances=endpoint.max_instances,
    )
    for metric, name in variant_policy_names(endpoint.name).items():
        if (
            metric != spec.metric
            and not ScalingPolicy.objects.filter(
                resource_id=spec.resource_id, policy_name=name
            ).exists()
        ):
            # Registered before the platform kept rows of its policies: two policies on one
            # target would both scale it.
            backend.delete_scaling_policy(
                resource_id=spec.resource_id, dimension=VARIANT_DIMENSION, policy_name=name
            )
    return register_policies(backend=backend, endpoint=endpoint, specs=[spec], actor=actor)


def measured_copy_target(*, placement: Placement, now: datetime | None = None) -> CopyTarget:
    """The invocations-per-copy target of a placement's component from what was measured of
    it (last hour's traffic on this endpoint, else its warm-up latency)."""
    since = (now or timezone.now()) - TRAFFIC_WINDOW
    traffic = VersionUsageMinute.objects.filter(
        version_id=placement.version_id, endpoint_id=placement.endpoint_id, minute__gte=since
    ).aggregate(requests=Sum("invocations"), latency=Sum("latency_ms_sum"))
    requests = int(traffic["requests"] or 0)
    target = invocations_per_copy_target(
        warm_latency_ms=placement.warmup_latency_ms,
        traffic_latency_ms=(traffic["latency"] or 0) / requests if requests else None,
        traffic_requests=requests,
        safety_factor=settings.TENANTML_SAGEMAKER_COPY_SAFETY_FACTOR,
    )
    if target is not None:
        return target
    return CopyTarget(
        value=MME_INVOCATIONS_PER_INSTANCE,
        basis=(
            "Nothing measured yet (no warm request, no traffic): 225 invocations a minute, the "
            "seeds' per-instance figure, until a rollout measures this model."
        ),
    )


def register_component_policies(
    *,
    backend: SageMakerEndpointBackend,
    placement: Placement,
    replicas: int,
    actor: str = ACTOR,
) -> list[ScalingPolicy]:
    """A component's policies from its placement: pinned or not, its measured target."""
    pinned = placement.is_pinned
    specs = component_policies(
        component=placement.external_name,
        pinned=pinned,
        replicas=replicas,
        target=measured_copy_target(placement=placement),
    )
    return register_policies(
        backend=backend,
        endpoint=placement.endpoint,
        specs=specs,
        pinned=pinned,
        model=placement.version.model,
        actor=actor,
    )


# ---------------------------------------------------------------------------------------------
# Scale to zero, and back
# ---------------------------------------------------------------------------------------------


class ScalingFromZero(DomainError):
    """The model's copies were scaled to zero and one is starting: retry after
    ``retry_after_s``."""

    status_code = 503
    code = "scaling_from_zero"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, field="model")
        self.retry_after_s = retry_after_s


class ComponentUnavailable(DomainError):
    """The model's component does not exist on SageMaker right now (being replaced or
    restored): retry after ``retry_after_s``."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, field="model")
        self.retry_after_s = retry_after_s


# Placements this process asked (or found asked) to come back from zero, with when the copy was
# asked for: the first answer that gets through records that it is back.
PENDING_WAKES: dict[int, float] = {}


def _pending_request(placement: Placement, now: datetime) -> Event | None:
    """The request for a copy still under way for this component, if any."""
    requested = (
        Event.objects.filter(
            kind=SCALE_OUT_REQUESTED,
            endpoint_id=placement.endpoint_id,
            data__component=placement.external_name,
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if requested is None:
        return None
    expected_s = float(requested.data.get("expected_s") or 0)
    if requested.created_at + timedelta(seconds=max(PENDING_MIN_S, 2 * expected_s)) < now:
        return None
    back = Event.objects.filter(
        kind=SCALED_FROM_ZERO,
        endpoint_id=placement.endpoint_id,
        data__component=placement.external_name,
        created_at__gte=requested.created_at,
    ).exists()
    return None if back else requested


def _ask_for_one_copy(backend: SageMakerEndpointBackend, component: str) -> bool:
    """Set the component's copy count to one; False when the step policy its no-capacity alarm
    invokes got there first (SageMaker refuses a new count while that update runs)."""
    try:
        backend.set_component_copies(component, 1)
    except EndpointBackendError:
        state = backend.describe_component(component)
        if state is None or (state.desired_copies or 0) < 1:
            raise
        return False
    return True


def wake_component(
    *,
    backend: SageMakerEndpointBackend,
    placement_id: int,
    approximate_load_s: float | None = None,
    now: datetime | None = None,
) -> ScalingFromZero:
    """A request met the placement's component with no copy: ask for one unless that is under
    way already (once across requests and processes), and say when to retry."""
    now = now or timezone.now()
    with transaction.atomic():
        # The placement's row lock makes the check and the request one step per component.
        placement = (
            Placement.objects.select_for_update()
            .select_related("endpoint", "version__model__tenant")
            .get(pk=placement_id)
        )
        component = placement.external_name
        requested = _pending_request(placement, now)
        if requested is None:
            state = backend.describe_component(component)
            if state is None:
                raise ComponentUnavailable(
                    f"{placement.version} has no inference component on SageMaker right now; "
                    "retry shortly while it is restored.",
                    retry_after_s=LATE_POLL_S[1],
                )
            asked = (state.desired_copies or 0) < 1
            if asked and not state.is_in_service:
                # Still finishing its scale in: SageMaker takes no new copy count until it is
                # done, so nothing is marked and the next request asks.
                return ScalingFromZero(
                    f"{placement.version} is finishing its scale-in to zero copies; retry in "
                    f"{BUSY_RETRY_S} s and a copy will be started.",
                    retry_after_s=BUSY_RETRY_S,
                )
            if asked:
                # AWS's own step policy may be bringing it back already; one copy either way,
                # never fewer than it asks for.
                asked = _ask_for_one_copy(backend, component)
            expected_s, source = expected_copy_start(
                measured_ms=placement.load_time_ms,
                approximate_s=approximate_load_s,
                default_s=settings.TENANTML_SAGEMAKER_SCALE_FROM_ZERO_WAIT_S,
            )
            requested = record_event(
                kind=SCALE_OUT_REQUESTED,
                actor=ACTOR,
                message=(
                    f"A request for {placement.version} found {component} with no copy: "
                    + ("asked SageMaker for one" if asked else "SageMaker is starting one")
                    + f", expected in {expected_s:,.0f} s ({source})."
                ),
                version=placement.version,
                endpoint=placement.endpoint,
                data={
                    "component": component,
                    "expected_s": round(expected_s, 3),
                    "expected_from": source,
                    "asked": asked,
                },
            )
        model = placement.version.model
    PENDING_WAKES[placement_id] = requested.created_at.timestamp()
    # The marker is written after ``now`` was read: a fresh request has waited nothing yet.
    elapsed_s = max(0.0, (now - requested.created_at).total_seconds())
    wait_s = scale_from_zero_retry_after_s(
        expected_s=float(requested.data.get("expected_s") or 0), elapsed_s=elapsed_s
    )
    return ScalingFromZero(
        f"{model.tenant.slug}/{model.name} was scaled to zero copies after idling; a copy is "
        f"starting. Retry in {wait_s} s.",
        retry_after_s=wait_s,
    )


def no_copy_answer(
    *, backend: SageMakerEndpointBackend, placement_id: int, approximate_load_s: float | None
) -> ScalingFromZero | ComponentUnavailable:
    """What a caller who met the placement's component with no copy gets: always a 503 with a
    Retry-After, a copy asked for where it can be (``wake_component``)."""
    try:
        return wake_component(
            backend=backend, placement_id=placement_id, approximate_load_s=approximate_load_s
        )
    except ComponentUnavailable as exc:
        return exc
    except DomainError as exc:
        return ComponentUnavailable(
            f"The model runs no copy right now and SageMaker refused to start one: {exc.message}",
            retry_after_s=LATE_POLL_S[1],
        )


def answered(placement_id: int) -> bool:
    """Whether an answer of this placement is the first since this process saw it at zero
    copies (then ``record_back_from_zero`` should run); a dictionary lookup otherwise."""
    return PENDING_WAKES.pop(placement_id, None) is not None


def record_back_from_zero(
    *, placement_id: int, copies: int = 1, actor: str = ACTOR, now: datetime | None = None
) -> bool:
    """Record that a placement's component runs copies again: its mirrored count, an Event, and
    (when a request for a copy was under way) how long the copy took to start, which the next
    Retry-After uses. Once per return, whoever sees it first; True if this call recorded it."""
    now = now or timezone.now()
    with transaction.atomic():
        placement = (
            Placement.objects.select_for_update()
            .select_related("endpoint", "version__model__tenant")
            .filter(pk=placement_id)
            .first()
        )
        if placement is None:
            return False  # retired meanwhile
        requested = _pending_request(placement, now)
        if requested is None and placement.copies > 0:
            return False  # recorded already (or it never was at zero)
        measured_s = (now - requested.created_at).total_seconds() if requested else None
        updates = {"copies": max(copies, 1), "updated_at": now}
        if measured_s is not None:
            updates["load_time_ms"] = round(measured_s * 1000, 1)
        Placement.objects.filter(pk=placement.pk).update(**updates)
        record_event(
            kind=SCALED_FROM_ZERO,
            actor=actor,
            message=(
                f"{placement.external_name} runs {max(copies, 1)} copy again"
                + (f", {measured_s:,.1f} s after one was asked for." if measured_s else ".")
            ),
            version=placement.version,
            endpoint=placement.endpoint,
            data={
                "component": placement.external_name,
                "copies": max(copies, 1),
                **({"measured_s": round(measured_s, 3)} if measured_s is not None else {}),
            },
        )
    return True


def mirror_copies(*, backend: SageMakerEndpointBackend, endpoint: Endpoint, actor: str) -> int:
    """Copy each live component's current copy count (DescribeInferenceComponent) onto its
    placement, recording a scale to zero and a return from it as Events; how many changed."""
    changed = 0
    live = (
        Placement.objects.filter(endpoint=endpoint, actual_state=Placement.ActualState.LOADED)
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .exclude(external_name="")
        .select_related("version__model__tenant")
    )
    for placement in live:
        state = backend.describe_component(placement.external_name)
        if state is None or state.current_copies is None:
            continue
        current = state.current_copies
        if current == placement.copies:
            continue
        changed += 1
        if placement.copies == 0:
            record_back_from_zero(placement_id=placement.pk, copies=current, actor=actor)
            continue
        Placement.objects.filter(pk=placement.pk).update(
            copies=current,
            min_copies=min(placement.min_copies, current),
            updated_at=timezone.now(),
        )
        if current == 0:
            record_event(
                kind=SCALED_TO_ZERO,
                actor=actor,
                message=(
                    f"{placement.external_name} was scaled to zero copies after idling; its "
                    "next request brings one back."
                ),
                version=placement.version,
                endpoint=endpoint,
                data={
                    "component": placement.external_name,
                    "copies": 0,
                    "before": placement.copies,
                },
            )
    return changed
