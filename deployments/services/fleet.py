"""Writes for endpoints, instances and placements, and the platform's periodic bookkeeping."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.models import FleetUsageMinute, Instance, InstanceUsageMinute, Placement
from deployments.selectors.costs import fleet_costs, refresh_tenant_costs
from deployments.selectors.fleet import fleet_utilization, instances_with_memory_use
from tenants.access import Caller


def sync_periodic_tasks(*, using: str = "default") -> list[str]:
    """Create the declared periodic tasks that do not exist yet; returns the names created.

    Existing rows are left alone so an operator's schedule edits in the admin survive upgrades,
    except that a row with no expiry at all (written before passes expired) gets the declared one.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = []
    for spec in settings.TENANTML_PERIODIC_TASKS:
        existing = PeriodicTask.objects.using(using).filter(name=spec["name"]).first()
        if existing is not None:
            if existing.expire_seconds is None and existing.expires is None:
                existing.expire_seconds = spec["expire_seconds"]
                existing.save(using=using, update_fields=["expire_seconds"])
            continue
        schedule, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=spec["every_seconds"], period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.using(using).create(
            name=spec["name"],
            task=spec["task"],
            interval=schedule,
            expire_seconds=spec["expire_seconds"],
            enabled=True,
        )
        created.append(spec["name"])
    return created


def sample_fleet_utilization(*, now: datetime | None = None) -> int:
    """Write this minute's memory use and loaded-model count for every live instance, the
    fleet's minute (``FleetUsageMinute``: what the trend charts read) and every tenant's share
    of the cost (``TenantCost``: what the lists of tenants' costs read).

    Every live instance is sampled, a SageMaker endpoint's mirrored hosts included, so the cost
    trend counts what runs; on those the platform measures no memory (their row says 0 used, and
    the fleet's memory figures leave them out: ``selectors.fleet.memory_measured``). Traffic
    columns of an instance's row are left alone; this only sets memory. A fixed number of
    queries whatever the number of instances (plus an Event per instance over its budget).
    Returns the number of instances sampled.
    """
    from deployments.passes import SAMPLE, recorded_pass

    minute = (now or timezone.now()).replace(second=0, microsecond=0)
    platform = Caller(label="sampler", is_platform=True, tenant_ids=frozenset())
    with recorded_pass(SAMPLE) as record:
        instances = list(
            instances_with_memory_use()
            .exclude(status=Instance.Status.STOPPED)
            .select_related(None)
            .select_related("endpoint")
        )
        rows = [
            InstanceUsageMinute(
                instance=instance,
                minute=minute,
                host_memory_used_mb=instance.memory_used_mb,
                models_loaded=instance.models_loaded,
            )
            for instance in instances
        ]
        utilization = fleet_utilization(caller=platform, now=minute)
        costs = fleet_costs(caller=platform, lists=False)
        # Ranking every tenant's share reads the whole fleet: once a minute, here, not per page.
        paying = refresh_tenant_costs()
        with transaction.atomic():
            InstanceUsageMinute.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["instance", "minute"],
                update_fields=["host_memory_used_mb", "models_loaded"],
                batch_size=2000,
            )
            FleetUsageMinute.objects.update_or_create(
                minute=minute,
                defaults={
                    "instances": utilization["instances"],
                    "memory_measured_instances": utilization["memory_measured_instances"],
                    "host_memory_used_mb": utilization["host_memory_used_mb"],
                    "host_memory_budget_mb": utilization["host_memory_budget_mb"] or 0,
                    "gpu_memory_used_mb": utilization["gpu_memory_used_mb"],
                    "gpu_memory_budget_mb": utilization["gpu_memory_budget_mb"] or 0,
                    "models_loaded": utilization["models_loaded"],
                    "models_placed": utilization["models_placed"],
                    "usd_per_hour": costs["usd_per_hour"],
                    "dedicated_usd_per_hour": costs["dedicated_usd_per_hour"],
                },
            )
        over_budget = [i for i in instances if i.memory_used_mb > i.memory_budget_mb]
        for instance in over_budget:
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
        record.items = len(instances)
        record.summary = {
            "over_budget": len(over_budget),
            "models_loaded": utilization["models_loaded"],
            "tenants_paying": paying,
        }
    return len(instances)


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
