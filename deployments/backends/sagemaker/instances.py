"""The hosts behind each SageMaker endpoint, mirrored as ``Instance`` rows.

SageMaker starts, replaces and scales an endpoint's instances itself; the platform reads how many
run (DescribeEndpoint: each production variant's ``CurrentInstanceCount``) and keeps one healthy
``Instance`` row per running host, ordinals 0..n-1. So everything that counts instances — the
fleet's cost, per-tenant shares, the minute sampler and its trends, the dashboard — counts
SageMaker hosts as it counts local Triton processes, at their real number, not the endpoint's
minimum. Inference-component endpoints are mirrored by their instances too: an endpoint whose
components are scaled to zero copies still pays for the instances it keeps.

A mirrored row has no host, port or pid. Nothing routes to it (copies on SageMaker have no
instance and are reached through their endpoint), nothing local starts, restarts or drains it,
and the platform does not measure its memory (SageMaker decides what each host holds).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from config.events import record_event
from deployments.models import Endpoint, Instance, Placement
from deployments.signals import routing_changed

if TYPE_CHECKING:
    from deployments.backends.sagemaker.client import EndpointState

CHANGED_EVENT = "endpoint.instances_changed"


def running_hosts(state: EndpointState) -> list[str]:
    """One id per host DescribeEndpoint says runs, ``<variant>/<i>``, in ordinal order."""
    return [
        f"{variant.name}/{index}"
        for variant in state.variants
        for index in range(variant.current_instance_count or 0)
    ]


def memory_budget_mb(endpoint: Endpoint) -> int:
    """A host's budget as a local instance's: its type's memory at the endpoint's target."""
    return max(
        1, int(endpoint.instance_type.host_memory_mb * float(endpoint.target_memory_utilization))
    )


def sync_instances(*, endpoint: Endpoint, state: EndpointState | None, actor: str) -> int:
    """Make the endpoint's live Instance rows match the hosts ``state`` says run (none when
    ``state`` is None: the endpoint is gone); records an Event when the count changes and
    returns the number of live rows."""
    hosts = [] if state is None else running_hosts(state)
    now = timezone.now()
    with transaction.atomic():
        # The rollout (after InService) and the reconciler both sync: one at a time per endpoint.
        endpoint = (
            Endpoint.objects.select_for_update().select_related("instance_type").get(pk=endpoint.pk)
        )
        rows = {row.ordinal: row for row in Instance.objects.filter(endpoint=endpoint)}
        before = sum(1 for row in rows.values() if row.status != Instance.Status.STOPPED)
        for ordinal, external_id in enumerate(hosts):
            row = rows.get(ordinal)
            if row is None:
                Instance.objects.create(
                    endpoint=endpoint,
                    ordinal=ordinal,
                    status=Instance.Status.HEALTHY,
                    external_id=external_id,
                    memory_budget_mb=memory_budget_mb(endpoint),
                    started_at=now,
                    last_health_at=now,
                )
            elif row.status == Instance.Status.STOPPED:
                # Ordinals are unique per endpoint, stopped rows included: a host that comes
                # back after a scale-in takes its old row again.
                Instance.objects.filter(pk=row.pk).update(
                    status=Instance.Status.HEALTHY,
                    external_id=external_id,
                    memory_budget_mb=memory_budget_mb(endpoint),
                    started_at=now,
                    last_health_at=now,
                    status_reason="",
                    updated_at=now,
                )
            elif row.external_id != external_id or row.status != Instance.Status.HEALTHY:
                Instance.objects.filter(pk=row.pk).update(
                    status=Instance.Status.HEALTHY,
                    external_id=external_id,
                    status_reason="",
                    updated_at=now,
                )
        Instance.objects.filter(endpoint=endpoint, ordinal__lt=len(hosts)).update(
            last_health_at=now
        )
        reason = (
            f"Endpoint {endpoint.name} no longer exists on SageMaker."
            if state is None
            else f"SageMaker runs {len(hosts)} instance(s) of {endpoint.name}."
        )
        Instance.objects.filter(endpoint=endpoint, ordinal__gte=len(hosts)).exclude(
            status=Instance.Status.STOPPED
        ).update(status=Instance.Status.STOPPED, status_reason=reason, updated_at=now)
        if len(hosts) != before:
            _record_change(
                endpoint=endpoint, state=state, before=before, after=len(hosts), actor=actor
            )
    return len(hosts)


def _record_change(
    *, endpoint: Endpoint, state: EndpointState | None, before: int, after: int, actor: str
) -> None:
    price = endpoint.instance_type.usd_per_hour
    record_event(
        kind=CHANGED_EVENT,
        actor=actor,
        message=(
            f"{endpoint.name} runs {after} {endpoint.instance_type.name} instance"
            f"{'' if after == 1 else 's'} (was {before}): ${price * after:,.4f} per hour."
        ),
        endpoint=endpoint,
        data={
            "before": before,
            "after": after,
            "variants": {}
            if state is None
            else {v.name: v.current_instance_count or 0 for v in state.variants},
            "usd_per_hour": str(price * after),
        },
    )


def retire_vanished_endpoint(*, endpoint: Endpoint, actor: str) -> list[str]:
    """Record that an endpoint the platform had in service no longer exists on SageMaker
    (deleted behind its back): its instances stopped, the endpoint retired, its copies no longer
    loaded, and an error Event saying so. Returns the copies that were loaded there."""
    with transaction.atomic():
        sync_instances(endpoint=endpoint, state=None, actor=actor)
        reason = (
            f"Endpoint {endpoint.name} no longer exists on SageMaker (deleted outside the "
            "platform); its instances stopped costing and its models no longer answer there."
        )
        Endpoint.objects.filter(pk=endpoint.pk).update(
            status=Endpoint.Status.RETIRED, status_reason=reason, updated_at=timezone.now()
        )
        lost = list(
            Placement.objects.filter(
                endpoint=endpoint, actual_state__in=Placement.RESIDENT_STATES
            ).select_related("version__model__tenant")
        )
        Placement.objects.filter(pk__in=[p.pk for p in lost]).update(
            actual_state=Placement.ActualState.UNLOADED, updated_at=timezone.now()
        )
        record_event(
            kind="endpoint.retired",
            severity="error",
            actor=actor,
            message=reason
            + (
                f" Models that were loaded there: {', '.join(str(p.version) for p in lost)}."
                if lost
                else ""
            ),
            endpoint=endpoint,
            data={"placements": [p.pk for p in lost]},
        )
        # Routes cached in serving processes still name the endpoint: drop them once committed.
        transaction.on_commit(partial(_routes_changed, sorted({p.version.model_id for p in lost})))
    return [str(p) for p in lost]


def _routes_changed(model_ids: list[int]) -> None:
    for model_id in model_ids:
        routing_changed.send(sender=Endpoint, model_id=model_id)
