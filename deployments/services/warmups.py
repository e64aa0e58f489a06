"""Warm-ups: send placed models their kind's warm-up request so none answers a tenant cold.

The hourly job (django-celery-beat, editable in the admin) is smarter than calling everything:

- a model invoked within ``WARMUP_SKIP_RECENT_S`` is skipped: real traffic keeps it warm;
- a loaded model gets the warm-up request (keeps it recently used, measures its latency);
- a model that is not loaded is loaded and warmed only when it is pinned or live, and only when
  it fits its instance's budget without evicting anything — a warm-up never makes another
  tenant's model cold;
- what the warm-up costs is reported: the instance time it took, priced at the instance type's
  hourly rate, alongside how many models were warm, cold, skipped or failed.

Each placement keeps its last warm-up time and latency; each run writes one ``warmup.completed``
Event with the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends import backend_for
from deployments.models import Deployment, Instance, Placement
from deployments.placement.rows import memory_of

ACTOR = "warm-up"


@dataclass
class WarmupReport:
    warmed: int = 0
    cold_starts: int = 0
    skipped_recent: int = 0
    skipped_no_room: int = 0
    failed: int = 0
    seconds: float = 0.0
    usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def record_warm(self, placement: Placement, *, seconds: float, probe_ms: float) -> None:
        """Count a warmed model and price the instance time its warm-up took."""
        self.warmed += 1
        self.seconds += seconds
        self.latencies_ms.append(probe_ms)
        hourly = placement.endpoint.instance_type.usd_per_hour or Decimal("0")
        self.usd += float(hourly) * seconds / 3600

    def record_failure(self, placement: Placement, exc: DomainError) -> None:
        """Count a failed warm-up and say why in an Event."""
        self.failed += 1
        where = placement.instance or placement.endpoint
        record_event(
            kind="warmup.failed",
            severity="warning",
            actor=ACTOR,
            message=f"Warm-up of {placement.version} on {where} failed: {exc.message}",
            version=placement.version,
            endpoint=placement.endpoint,
            instance=placement.instance,
        )

    def as_dict(self) -> dict:
        latencies = sorted(self.latencies_ms)
        return {
            "warmed": self.warmed,
            "cold_starts": self.cold_starts,
            "skipped_recent": self.skipped_recent,
            "skipped_no_room": self.skipped_no_room,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "usd": round(self.usd, 9),
            "p50_ms": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "max_ms": round(latencies[-1], 2) if latencies else None,
        }


def warm_up_fleet(*, skip_recent_s: int | None = None, now=None) -> WarmupReport:
    """Warm every placed model of the fleet that needs it; see the module docstring."""
    now = now or timezone.now()
    skip_recent_s = (
        settings.TENANTML_WARMUP_SKIP_RECENT_S if skip_recent_s is None else skip_recent_s
    )
    recent = now - timedelta(seconds=skip_recent_s)
    live_versions = set(
        Deployment.objects.exclude(live_version__isnull=True).values_list(
            "live_version_id", flat=True
        )
    )
    report = WarmupReport()
    placements = (
        Placement.objects.reachable(instance_states=(Instance.Status.HEALTHY,))
        .select_related("version__model__tenant", "instance", "endpoint__instance_type")
        .order_by("instance_id", "-desired_state", "id")
    )
    used_by_instance: dict[int | None, float] = {}
    for placement in placements:
        if placement.last_invoked_at and placement.last_invoked_at >= recent:
            report.skipped_recent += 1
            continue
        backend = backend_for(placement.endpoint)
        loaded = placement.actual_state == Placement.ActualState.LOADED
        if not loaded:
            wanted = placement.is_pinned or placement.version_id in live_versions
            if not wanted or placement.actual_state == Placement.ActualState.FAILED:
                continue
            used = used_by_instance.setdefault(placement.instance_id, _used_mb(placement.instance))
            if not backend.has_room_for(placement=placement, used_mb=used):
                report.skipped_no_room += 1
                continue
        started = time.perf_counter()
        try:
            probe = backend.probe(placement=placement, actor=ACTOR)
        except DomainError as exc:
            report.record_failure(placement, exc)
            continue
        report.record_warm(
            placement, seconds=time.perf_counter() - started, probe_ms=probe.latency_ms
        )
        if probe.cold_start:
            report.cold_starts += 1
            used_by_instance[placement.instance_id] = used_by_instance.get(
                placement.instance_id, 0.0
            ) + memory_of(placement)
    record_event(
        kind="warmup.completed",
        actor=ACTOR,
        message=(
            f"Warm-up: {report.warmed} models warmed ({report.cold_starts} were cold), "
            f"{report.skipped_recent} skipped as recently used, {report.skipped_no_room} left "
            f"cold for lack of room, {report.failed} failed; it took {report.seconds:.2f} s of "
            f"instance time, about ${report.usd:.2g}."
        ),
        data=report.as_dict(),
    )
    return report


def _used_mb(instance: Instance | None) -> float:
    if instance is None:
        return 0.0
    resident = instance.placements.filter(
        actual_state__in=Placement.RESIDENT_STATES
    ).select_related("version__model")
    return sum(memory_of(p) for p in resident)
