"""Writes for endpoints, instances and placements, and the platform's periodic bookkeeping."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.models import InstanceUsageMinute, Placement
from deployments.selectors.fleet import instances_with_memory_use


def sync_periodic_tasks(*, using: str = "default") -> list[str]:
    """Create the declared periodic tasks that do not exist yet; returns the names created.

    Existing rows are left alone so an operator's schedule edits in the admin survive upgrades.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = []
    for spec in settings.TENANTML_PERIODIC_TASKS:
        if PeriodicTask.objects.using(using).filter(name=spec["name"]).exists():
            continue
        schedule, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=spec["every_seconds"], period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.using(using).create(
            name=spec["name"], task=spec["task"], interval=schedule, enabled=True
        )
        created.append(spec["name"])
    return created


def sample_fleet_utilization(*, now: datetime | None = None) -> int:
    """Write this minute's memory use and loaded-model count for every live instance.

    Every live instance is sampled, a SageMaker endpoint's mirrored hosts included, so the cost
    trend counts what runs; on those the platform measures no memory (their row says 0 used, and
    the utilization trend leaves them out: ``selectors.fleet.memory_measured``). Traffic columns
    of the same row are written by the invocation flush; this only sets memory. Returns the
    number of instances sampled.
    """
    minute = (now or timezone.now()).replace(second=0, microsecond=0)
    sampled = 0
    instances = instances_with_memory_use().exclude(status="stopped")
    for instance in instances:
        with transaction.atomic():
            InstanceUsageMinute.objects.update_or_create(
                instance=instance,
                minute=minute,
                defaults={
                    "host_memory_used_mb": instance.memory_used_mb,
                    "models_loaded": instance.models_loaded,
                },
            )
        sampled += 1
        if instance.memory_used_mb > instance.memory_budget_mb:
            record_event(
                kind="instance.over_budget",
                severity="error",
                actor="sampler",
                message=(
                    f"{instance} holds {instance.memory_used_mb:.0f} MB, over its "
                    f"{instance.memory_budget_mb} MB budget."
                ),
                endpoint=instance.endpoint,
                instance=instance,
            )
    return sampled


def set_placement_desired_state(
    *, placement: Placement, desired_state: str, actor: str
) -> Placement:
    """Pin, unpin or unload a placement; the reconciler makes the instance match."""
    if desired_state not in Placement.DesiredState.values:
        raise DomainError(
            f"desired_state must be one of {', '.join(Placement.DesiredState.values)}.",
            field="desired_state",
        )
    with transaction.atomic():
        placement = (
            Placement.objects.select_for_update(of=("self",))
            .select_related("version__model__tenant", "endpoint", "instance")
            .get(pk=placement.pk)
        )
        if placement.desired_state == desired_state:
            return placement
        previous = placement.desired_state
        placement.desired_state = desired_state
        placement.save(update_fields=["desired_state", "updated_at"])
        record_event(
            kind="placement.desired_state_changed",
            message=f"{placement.version} on {placement.endpoint}: {previous} → {desired_state}.",
            actor=actor,
            version=placement.version,
            endpoint=placement.endpoint,
            instance=placement.instance,
        )
    return placement
