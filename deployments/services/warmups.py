"""Warm-ups: send placed models their kind's warm-up request so none answers a tenant cold.

The hourly job (django-celery-beat, editable in the admin) runs one of three policies
(``WARMUP_POLICY``, see ``deployments.placement.warmup_plan``). The default, ``predictive``,
reads each live model's usage by hour over the last weeks (one grouped query), forecasts the
chance that it is called in the coming hour (``deployments.placement.forecast``: its hour of
the week, its hour of the day, and whether it is busy now), and on each instance loads the cold
models likely to be called, the most likely first, into free memory or in place of loaded models
less likely to be called (never one more likely, never a pinned one); loaded models get no
request and unlikely ones are left to go cold. On an endpoint whose instances the platform does
not see (SageMaker chooses), the likely models not used recently get their warm-up request.
``bench/warmup.py`` replays two weeks of a synthetic fleet through it against the hourly ones.

The hourly policies (``hourly-skip-recent``, and ``hourly-all``, which skips nothing) are
smarter than calling everything too:

- a model invoked within ``WARMUP_SKIP_RECENT_S`` is skipped: real traffic keeps it warm;
- a loaded model gets the warm-up request (keeps it recently used, measures its latency);
- a model that is not loaded is loaded and warmed only when it is pinned or live, and only when
  it fits its instance's budget without evicting anything — a warm-up never makes another
  tenant's model cold;
- what the warm-up costs is reported: the instance time it took, priced at the instance type's
  hourly rate, alongside how many models were warm, cold, skipped or failed.

Each placement keeps its last warm-up time and latency; each run writes one ``warmup.completed``
Event with the figures, and records itself in the ``warm-up`` ``BackgroundPass`` row
(``deployments.passes``).

The selection reads a fixed few queries whatever the fleet's size (the live versions, the
reachable placements, and, when a cold model might be loaded, every healthy instance's resident
memory in one aggregate). Each chosen copy is made ready in the pass's thread (a cold one is
loaded there, as the selection decided); the warm-up requests then go out in pool threads, one
at a time per instance (or SageMaker endpoint) so a warm-up never competes with itself for an
instance, and at most ``WARMUP_CONCURRENCY`` instances at once. What each request found is
written back in the pass's thread: a query or two per model warmed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends import backend_for
from deployments.backends.base import NetworkCalls, PreparedProbe
from deployments.models import Deployment, Instance, Placement
from deployments.passes import WARM_UP, recorded_pass
from deployments.placement.forecast import ForecastSettings, hour_of, next_hour_probability
from deployments.placement.rows import expected_memory_mb, memory_of
from deployments.placement.warmup_plan import HOURLY_ALL, PREDICTIVE, WarmupCandidate, plan_warmups
from deployments.selectors.traffic import active_hours_by_version
from models_registry.models import ModelVersion, TenantModel

ACTOR = "warm-up"


@dataclass
class WarmupReport:
    """What one warm-up pass went over and did, and what it cost."""

    considered: int = 0
    warmed: int = 0
    cold_starts: int = 0
    skipped_recent: int = 0
    skipped_no_room: int = 0
    # Predictive: models left cold as unlikely to be called, and loaded ones unloaded to make
    # room for likelier ones.
    skipped_unlikely: int = 0
    unloaded: int = 0
    failed: int = 0
    policy: str = ""
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
            "considered": self.considered,
            "warmed": self.warmed,
            "cold_starts": self.cold_starts,
            "skipped_recent": self.skipped_recent,
            "skipped_no_room": self.skipped_no_room,
            "skipped_unlikely": self.skipped_unlikely,
            "unloaded": self.unloaded,
            "failed": self.failed,
            "policy": self.policy,
            "seconds": round(self.seconds, 3),
            "usd": round(self.usd, 9),
            "p50_ms": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "max_ms": round(latencies[-1], 2) if latencies else None,
        }


def warm_up_fleet(
    *, skip_recent_s: int | None = None, now=None, policy: str | None = None
) -> WarmupReport:
    """Warm every placed model of the fleet that needs it under ``policy`` (``WARMUP_POLICY``
    by default); see the module docstring."""
    report = WarmupReport(policy=policy or settings.TENANTML_WARMUP_POLICY)
    with recorded_pass(WARM_UP) as record:
        try:
            _warm_up(report=report, skip_recent_s=skip_recent_s, now=now or timezone.now())
        finally:
            # A failed pass's record says how far it got.
            record.items = report.considered
            record.errors = report.failed
            record.summary = report.as_dict()
    return report


def _warm_up(*, report: WarmupReport, skip_recent_s: int | None, now) -> None:
    if skip_recent_s is None:
        skip_recent_s = 0 if report.policy == HOURLY_ALL else settings.TENANTML_WARMUP_SKIP_RECENT_S
    recent = now - timedelta(seconds=skip_recent_s)
    live_versions = set(
        Deployment.objects.exclude(live_version__isnull=True).values_list(
            "live_version_id", flat=True
        )
    )
    placements = (
        Placement.objects.reachable(instance_states=(Instance.Status.HEALTHY,))
        .select_related("version__model__tenant", "instance", "endpoint__instance_type")
        .order_by("instance_id", "-desired_state", "id")
    )
    # The requests to send, one list per instance (per endpoint where the backend picks it).
    ready: dict[tuple[str, int], list[tuple[Placement, PreparedProbe]]] = {}
    chosen = _plan(
        list(placements), report=report, live_versions=live_versions, recent=recent, now=now
    )
    for placement in chosen:
        try:
            prepared = backend_for(placement.endpoint).prepare_probe(
                placement=placement, actor=ACTOR
            )
        except DomainError as exc:
            report.record_failure(placement, exc)
            continue
        ready.setdefault(_ready_key(placement), []).append((placement, prepared))
    _send_and_record(ready, report=report)
    record_event(
        kind="warmup.completed",
        actor=ACTOR,
        message=(
            f"Warm-up ({report.policy}): {report.warmed} models warmed ({report.cold_starts} "
            f"were cold), {report.skipped_recent} skipped as recently used, "
            f"{report.skipped_unlikely} left cold as unlikely to be called, "
            f"{report.skipped_no_room} left cold for lack of room, {report.unloaded} unloaded "
            f"for likelier ones, {report.failed} failed; it took {report.seconds:.2f} s of "
            f"instance time, about ${report.usd:.2g}."
        ),
        data=report.as_dict(),
    )


def _ready_key(placement: Placement) -> tuple[str, int]:
    if placement.instance_id is not None:
        return ("instance", placement.instance_id)
    return ("endpoint", placement.endpoint_id)


# How far back a predictive pass reads usage: the forecast's own lookback.
FORECAST = ForecastSettings()


def _forecast(placements: list[Placement], *, now) -> dict[int, float]:
    """Each placement's chance of being called in the coming hour, from one grouped query."""
    since = now - timedelta(weeks=FORECAST.lookback_weeks)
    active = active_hours_by_version(since=since)
    hour = hour_of(now.timestamp())
    return {
        placement.pk: next_hour_probability(
            active.get(placement.version_id, set()),
            hour=hour + 1,
            observed_since=max(
                hour_of(since.timestamp()), hour_of(placement.created_at.timestamp())
            ),
            current_hour_active=hour in active.get(placement.version_id, set()),
            settings=FORECAST,
        )
        for placement in placements
    }


def _plan(
    placements: list[Placement], *, report: WarmupReport, live_versions, recent, now
) -> list[Placement]:
    """Plan each instance's pass under the report's policy (``plan_warmups``), unload what the
    plan makes room from, and return the copies to send a warm-up request, in order."""
    predictive = report.policy == PREDICTIVE
    probability = _forecast(placements, now=now) if predictive else {}
    minimum = settings.TENANTML_WARMUP_MIN_PROBABILITY
    report.considered += len(placements)
    chosen: list[Placement] = []
    by_instance: dict[int, list[Placement]] = {}
    for placement in placements:
        recently = bool(placement.last_invoked_at and placement.last_invoked_at >= recent)
        if placement.instance_id is not None:
            by_instance.setdefault(placement.instance_id, []).append(placement)
        elif not predictive:
            # The backend picks the instance and finds room itself: warm what is loaded and
            # what is wanted, as on an instance with room to spare.
            by_instance.setdefault(-placement.endpoint_id, []).append(placement)
        # On an endpoint whose instances the platform does not see, whether a model is loaded
        # is unknown: a likely model not used recently gets its request.
        elif recently:
            report.skipped_recent += 1
        elif probability[placement.pk] < minimum:
            report.skipped_unlikely += 1
        else:
            chosen.append(placement)
    resident: dict[int, float] | None = None
    for group_id, group in by_instance.items():
        by_key = {str(p.pk): p for p in group}
        candidates = [
            WarmupCandidate(
                key=str(p.pk),
                memory_mb=memory_of(p),
                loaded=p.actual_state == Placement.ActualState.LOADED,
                wanted=(p.is_pinned or p.version_id in live_versions)
                and p.actual_state != Placement.ActualState.FAILED,
                pinned=p.is_pinned,
                recently_used=bool(p.last_invoked_at and p.last_invoked_at >= recent),
                probability=probability.get(p.pk, 0.0),
            )
            for p in group
        ]
        budget = backend_for(group[0].endpoint).warmup_budget_mb(placement=group[0])
        used = 0.0
        if budget is not None and any(not c.loaded and c.wanted for c in candidates):
            if resident is None:
                # Read once, only when a cold model might be loaded somewhere.
                resident = resident_mb_by_instance()
            used = resident.get(group_id, 0.0)
        decision = plan_warmups(
            policy=report.policy,
            candidates=candidates,
            budget_mb=math.inf if budget is None else budget,
            resident_mb=used,
            min_probability=minimum,
        )
        report.skipped_recent += len(decision.recent)
        report.skipped_no_room += len(decision.no_room)
        if predictive:
            report.skipped_unlikely += len(decision.skipped)
        for key in decision.evict:
            victim = by_key[key]
            try:
                backend_for(victim.endpoint).unload(
                    placement=victim,
                    actor=ACTOR,
                    reason=(
                        f"unlikely to be called in the coming hour "
                        f"({probability[victim.pk]:.0%}), for a likelier model"
                    ),
                )
            except DomainError as exc:
                report.record_failure(victim, exc)
                continue
            report.unloaded += 1
        chosen.extend(by_key[key] for key in decision.warm + decision.load)
    return chosen


def _send_and_record(
    ready: dict[tuple[str, int], list[tuple[Placement, PreparedProbe]]], *, report: WarmupReport
) -> None:
    """Send the prepared warm-ups (pool threads, one instance's one after another), then record
    each outcome here; an unexpected error is raised once every other outcome is recorded."""
    with NetworkCalls(limit=settings.TENANTML_WARMUP_CONCURRENCY, name="warm-up") as calls:
        futures = [(probes, calls.submit(_send_each, probes)) for probes in ready.values()]
    unexpected: Exception | None = None
    for probes, future in futures:
        for (placement, prepared), outcome in zip(probes, future.result(), strict=True):
            if isinstance(outcome, DomainError):
                report.record_failure(placement, outcome)
            elif isinstance(outcome, Exception):
                unexpected = unexpected or outcome
            else:
                latency_ms = prepared.prepare_ms + outcome
                backend_for(placement.endpoint).record_probe(
                    placement=placement, latency_ms=latency_ms
                )
                report.record_warm(placement, seconds=latency_ms / 1000, probe_ms=latency_ms)
                if prepared.cold_start:
                    report.cold_starts += 1
    if unexpected is not None:
        raise unexpected


def _send_each(probes: list[tuple[Placement, PreparedProbe]]) -> list[float | Exception]:
    """One instance's warm-up requests, one after another: each one's latency or error."""
    outcomes: list[float | Exception] = []
    for _, prepared in probes:
        try:
            outcomes.append(prepared.send())
        except Exception as exc:  # recorded by the pass's thread, with the others' outcomes
            outcomes.append(exc)
    return outcomes


def resident_mb_by_instance() -> dict[int, float]:
    """The memory resident on each healthy instance, counted as ``memory_of`` counts a copy
    (measured on the instance, else on the version, else the kind's expected figure), in one
    aggregate query."""
    rows = (
        Placement.objects.filter(
            actual_state__in=Placement.RESIDENT_STATES, instance__status=Instance.Status.HEALTHY
        )
        .values("instance_id", "version__model__kind")
        .annotate(
            measured_mb=Sum(Coalesce("host_memory_mb", "version__host_memory_mb")),
            unmeasured=Count(
                "pk",
                filter=Q(host_memory_mb__isnull=True, version__host_memory_mb__isnull=True),
            ),
        )
        .order_by()
    )
    used: dict[int, float] = {}
    for row in rows:
        resident = row["measured_mb"] or 0.0
        if row["unmeasured"]:
            resident += row["unmeasured"] * _unmeasured_mb(row["version__model__kind"])
        used[row["instance_id"]] = used.get(row["instance_id"], 0.0) + resident
    return used


def _unmeasured_mb(kind: str) -> float:
    # The one rule for a copy measured nowhere (``expected_memory_mb``), asked of a version of
    # the kind that was never measured; nothing is read or saved.
    return expected_memory_mb(ModelVersion(host_memory_mb=None, model=TenantModel(kind=kind)))
