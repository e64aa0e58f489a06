"""Writes for endpoints, instances and placements, and the platform's periodic bookkeeping."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployments.events import record_event
from deployments.models import InstanceUsageMinute
from deployments.selectors import instances_with_memory_use


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

    Traffic columns of the same row are written by the invocation flush; this only sets memory.
    Returns the number of instances sampled.
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
