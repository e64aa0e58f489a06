"""Operators' edits of the autoscaling policies the platform keeps on SageMaker.

The platform registers every policy itself (at rollout, ``deployments.backends.sagemaker.scaling``)
and keeps each as a ``ScalingPolicy`` row saying what it tracks and why. An operator may change a
policy's target, bounds and cooldowns (the admin); the change is checked against the platform's
rules, saved as the operator's (``operator_edited``: later rollouts keep these values) and applied
to AWS at once. What AWS refuses stays on the row as ``apply_error``, with an Event, rather than
failing the edit: the row says what the operator wants, the error why the account differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from config.errors import DomainError
from config.events import record_event
from deployments.backends.sagemaker import scaling
from deployments.backends.sagemaker.deploy import endpoint_backend
from deployments.models import Placement, ScalingPolicy


class InvalidScalingPolicy(DomainError):
    """An edit the platform's rules do not allow; the message names the rule."""

    status_code = 400
    code = "invalid_scaling_policy"


@dataclass(frozen=True)
class PolicyEdit:
    """The values of a policy an operator may change."""

    min_capacity: int
    max_capacity: int
    target_value: float | None
    scale_in_cooldown_s: int
    scale_out_cooldown_s: int


def _is_pinned(policy: ScalingPolicy) -> bool:
    """Whether the policy's component serves a pinned (premium) model."""
    if policy.scalable_dimension != scaling.COPY_DIMENSION:
        return False
    component = policy.resource_id.split("/", 1)[1]
    return Placement.objects.filter(
        endpoint_id=policy.endpoint_id,
        external_name=component,
        desired_state=Placement.DesiredState.PINNED,
    ).exists()


def validate_edit(*, policy: ScalingPolicy, edit: PolicyEdit) -> None:
    """Raise InvalidScalingPolicy naming the field when ``edit`` breaks a rule: bounds in
    order, a positive target for target tracking, an instance at least for a variant, a copy at
    least for a pinned model."""
    if edit.max_capacity < 1:
        raise InvalidScalingPolicy("The maximum must be at least 1.", field="max_capacity")
    if edit.min_capacity > edit.max_capacity:
        raise InvalidScalingPolicy(
            f"The minimum ({edit.min_capacity}) is above the maximum ({edit.max_capacity}).",
            field="min_capacity",
        )
    if policy.policy_type == ScalingPolicy.PolicyType.TARGET_TRACKING and (
        edit.target_value is None or edit.target_value <= 0
    ):
        raise InvalidScalingPolicy(
            "A target tracking policy needs a positive target value.", field="target_value"
        )
    if policy.policy_type == ScalingPolicy.PolicyType.STEP and edit.target_value is not None:
        raise InvalidScalingPolicy(
            "A step policy has no target: its alarm sets the copy count to 1.",
            field="target_value",
        )
    if policy.scalable_dimension == scaling.VARIANT_DIMENSION and edit.min_capacity < 1:
        raise InvalidScalingPolicy(
            "An endpoint variant keeps at least one instance (only inference components scale "
            "to zero).",
            field="min_capacity",
        )
    if edit.min_capacity < 1 and _is_pinned(policy):
        raise InvalidScalingPolicy(
            "This component serves a pinned (premium) model, which never scales to zero copies.",
            field="min_capacity",
        )


def update_policy(*, policy: ScalingPolicy, edit: PolicyEdit, actor: str) -> ScalingPolicy:
    """Save an operator's edit of ``policy`` (checked, kept by later rollouts) and apply it to
    AWS at once; the row afterwards, ``apply_error`` saying why AWS refused it if it did."""
    validate_edit(policy=policy, edit=edit)
    with transaction.atomic():
        row = ScalingPolicy.objects.select_for_update().select_related("endpoint").get(pk=policy.pk)
        before = {
            "min_capacity": row.min_capacity,
            "max_capacity": row.max_capacity,
            "target_value": row.target_value,
            "scale_in_cooldown_s": row.scale_in_cooldown_s,
            "scale_out_cooldown_s": row.scale_out_cooldown_s,
        }
        for name, value in vars(edit).items():
            setattr(row, name, value)
        row.operator_edited = True
        row.save()
        # One scalable target per resource: its other policies state the same bounds, which
        # are the operator's now too.
        ScalingPolicy.objects.filter(resource_id=row.resource_id).exclude(pk=row.pk).update(
            min_capacity=edit.min_capacity,
            max_capacity=edit.max_capacity,
            operator_edited=True,
        )
        record_event(
            kind="sagemaker.scaling_policy_edited",
            actor=actor,
            message=f"{actor} edited scaling policy {row.policy_name}: {_changes(before, edit)}.",
            endpoint=row.endpoint,
            data={"policy": row.policy_name, "before": before, "after": vars(edit)},
        )
    # AWS after the commit: the edit stands even where AWS refuses it (then apply_error says why).
    return scaling.apply_row(backend=endpoint_backend(), row=row, actor=actor)


def _changes(before: dict, edit: PolicyEdit) -> str:
    changed = [
        f"{name} {before[name]} → {value}"
        for name, value in vars(edit).items()
        if before[name] != value
    ]
    return ", ".join(changed) or "no change"
