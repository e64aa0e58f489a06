"""The warm-up over many instances: choosing what to warm reads the same queries whatever the
fleet's size (under each policy), the warm-up requests go out at once (one at a time per
instance, within ``WARMUP_CONCURRENCY``) to instances answered by the Triton stand-in, and every
pass — a failed one too — is recorded as the warm-up job's last pass."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.backends.base import PreparedProbe
from deployments.models import (
    BackgroundPass,
    Deployment,
    Event,
    Placement,
    VersionUsageMinute,
)
from deployments.passes import WARM_UP
from deployments.placement.rows import memory_of
from deployments.services import warmups
from models_registry.kinds import UnknownKind
from tests.factories import (
    EndpointFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantModelFactory,
)

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(hours=3)


@pytest.fixture(autouse=True)
def hourly_policy(settings):
    # These tests are about the hourly policy's passes; the predictive ones say so.
    settings.TENANTML_WARMUP_POLICY = "hourly-skip-recent"


def crowded_instances(count: int, *, first_port: int) -> None:
    """Instances with a busy model, a pinned one that does not fit beside it, and one nobody
    needs warm: a warm-up sends nothing to any of them."""
    endpoint = EndpointFactory(max_instances=count)
    for ordinal in range(count):
        instance = InstanceFactory(
            endpoint=endpoint, ordinal=ordinal, port=first_port + ordinal, memory_budget_mb=150
        )
        PlacementFactory(instance=instance, last_invoked_at=timezone.now())
        PlacementFactory(
            instance=instance,
            desired_state=Placement.DesiredState.PINNED,
            actual_state=Placement.ActualState.UNLOADED,
            last_invoked_at=timezone.now() - LONG_AGO,
        )
        PlacementFactory(instance=instance, actual_state=Placement.ActualState.EVICTED)


def pass_queries() -> tuple[int, warmups.WarmupReport]:
    warmups.warm_up_fleet()  # the first pass creates the job's record
    with CaptureQueriesContext(connection) as queries:
        report = warmups.warm_up_fleet()
    return len(queries), report


def test_choosing_what_to_warm_reads_as_many_queries_for_a_fleet_six_times_larger():
    crowded_instances(2, first_port=41000)
    small, report = pass_queries()
    assert report.skipped_recent == 2 and report.skipped_no_room == 2 and report.warmed == 0

    crowded_instances(10, first_port=42000)
    large, report = pass_queries()

    assert report.skipped_recent == 12 and report.skipped_no_room == 12
    assert report.considered == 36 and report.warmed == 0 and report.failed == 0
    assert large == small
    # Live versions, reachable placements, resident memory per instance, the completed event
    # (written in a savepoint of its own, with any webhook deliveries it makes).
    assert BackgroundPass.objects.get(job=WARM_UP).queries == 6


def test_warm_up_requests_go_out_at_once_one_per_instance_within_the_bound(standins, settings):
    standin = standins(ports=8)
    endpoint = EndpointFactory(max_instances=8)
    placements = []
    for ordinal, port in enumerate(standin.ports):
        instance = InstanceFactory(endpoint=endpoint, ordinal=ordinal, port=port, pid=standin.pid)
        on_instance = [
            PlacementFactory(instance=instance, last_invoked_at=timezone.now() - LONG_AGO)
            for _ in range(2)
        ]
        standin.configure(
            port,
            loaded=[p.version.triton_model_name for p in on_instance],
            invoke_delay_s=0.3,
        )
        placements += on_instance

    settings.TENANTML_WARMUP_CONCURRENCY = 16
    started = time.monotonic()
    report = warmups.warm_up_fleet()
    at_once_s = time.monotonic() - started
    at_once = standin.stats()

    settings.TENANTML_WARMUP_CONCURRENCY = 2
    standin.reset_stats()
    warmups.warm_up_fleet()
    bounded = standin.stats()

    assert report.warmed == 16 and report.failed == 0 and report.cold_starts == 0
    # One after another, the sixteen requests would take 4.8 s; two rounds of eight take 0.6 s.
    assert at_once_s < 2.0, at_once_s
    assert at_once["max_in_flight"] >= 4
    assert at_once["max_in_flight_per_port"] == 1  # an instance is never warmed twice at once
    assert bounded["max_in_flight"] <= 2
    for placement in placements:
        placement.refresh_from_db()
        assert placement.last_warmed_at is not None
        assert placement.warmup_latency_ms >= 300


def test_a_failing_warm_up_pass_is_recorded_as_failed_and_raises():
    # A pinned model of a kind this platform no longer registers, measured nowhere: the pass
    # cannot tell whether it fits.
    instance = InstanceFactory(port=43000)
    version = ModelVersionFactory(model=TenantModelFactory(kind="sentiment"), host_memory_mb=None)
    PlacementFactory(
        instance=instance,
        version=version,
        desired_state=Placement.DesiredState.PINNED,
        actual_state=Placement.ActualState.UNLOADED,
        host_memory_mb=None,
    )

    with pytest.raises(UnknownKind):
        warmups.warm_up_fleet()

    record = BackgroundPass.objects.get(job=WARM_UP)
    assert not record.succeeded and record.errors == 1
    assert record.queries >= 2 and record.duration_s > 0 and record.items == 1


def test_a_warm_up_pass_records_what_it_went_over():
    crowded_instances(3, first_port=44000)

    report = warmups.warm_up_fleet()

    record = BackgroundPass.objects.get(job=WARM_UP)
    assert record.succeeded and record.errors == 0 and record.passes == 1
    assert record.items == report.considered == 9
    assert record.summary["skipped_no_room"] == 3 and record.summary["skipped_recent"] == 3


def test_resident_memory_is_counted_per_instance_as_each_copy_is():
    instance = InstanceFactory(port=46000)
    other = InstanceFactory(port=46001)
    resident = [
        PlacementFactory(instance=instance, host_memory_mb=100.0),
        # Measured on its version only, and measured nowhere (the kind's expected figure).
        PlacementFactory(instance=instance, host_memory_mb=None),
        PlacementFactory(
            instance=instance,
            host_memory_mb=None,
            version=ModelVersionFactory(host_memory_mb=None),
            actual_state=Placement.ActualState.LOADING,
        ),
    ]
    PlacementFactory(instance=instance, actual_state=Placement.ActualState.EVICTED)
    PlacementFactory(instance=other, host_memory_mb=7.0)

    used = warmups.resident_mb_by_instance()

    assert used[instance.pk] == pytest.approx(sum(memory_of(p) for p in resident))
    assert used[instance.pk] == pytest.approx(100.0 + 111.0 + 140.0)
    assert used[other.pk] == pytest.approx(7.0)


# --- The predictive policy -------------------------------------------------------------------


class RecordingBackend:
    """Stands for the serving backend: records what the pass asks of it."""

    def __init__(self) -> None:
        self.loaded: list[int] = []
        self.unloaded: list[int] = []

    def prepare_probe(self, *, placement, actor):
        self.loaded.append(placement.pk)
        return PreparedProbe(cold_start=True, prepare_ms=5.0, send=lambda: 2.0)

    def record_probe(self, *, placement, latency_ms):
        pass

    def warmup_budget_mb(self, *, placement):
        return placement.instance.memory_budget_mb

    def unload(self, *, placement, actor, reason):
        assert "unlikely to be called" in reason
        self.unloaded.append(placement.pk)


def live_placement(instance, **kw) -> Placement:
    placement = PlacementFactory(instance=instance, **kw)
    Deployment.objects.create(
        model=placement.version.model, live_version=placement.version, status="live"
    )
    return placement


def busy_at(placement: Placement, hours: list[datetime]) -> None:
    tenant = placement.version.model.tenant
    for hour in hours:
        VersionUsageMinute.objects.create(
            version=placement.version,
            endpoint=placement.endpoint,
            tenant=tenant,
            minute=hour + timedelta(minutes=12),
            invocations=3,
        )


def test_a_predictive_pass_loads_the_models_due_in_the_coming_hour_in_place_of_idle_ones(
    monkeypatch,
):
    now = datetime(2026, 11, 23, 8, 50, tzinfo=UTC)  # a Monday, 08:50 UTC
    instance = InstanceFactory(port=47000, memory_budget_mb=250)  # room for two of 111 MB
    created = now - timedelta(weeks=4)
    due = live_placement(instance, actual_state=Placement.ActualState.EVICTED)
    quiet = live_placement(instance, actual_state=Placement.ActualState.EVICTED)
    idle = live_placement(instance)  # loaded, but busy only on Sunday nights
    steady = live_placement(instance)  # loaded and busy at 09:00 too: stays
    Placement.objects.filter(pk__in=[due.pk, quiet.pk, idle.pk, steady.pk]).update(
        created_at=created
    )
    mondays_at_nine = [
        now.replace(minute=0) + timedelta(hours=1) - timedelta(weeks=w) for w in (1, 2, 3)
    ]
    busy_at(due, mondays_at_nine)
    busy_at(steady, mondays_at_nine)
    busy_at(idle, [now.replace(hour=23, minute=0) - timedelta(days=1 + 7 * w) for w in (0, 1, 2)])
    backend = RecordingBackend()
    monkeypatch.setattr(warmups, "backend_for", lambda endpoint: backend)

    report = warmups.warm_up_fleet(now=now, policy="predictive")

    assert backend.loaded == [due.pk]
    assert backend.unloaded == [idle.pk]
    assert report.warmed == 1 and report.cold_starts == 1 and report.unloaded == 1
    assert report.skipped_unlikely == 1  # "quiet": no history, left cold
    event = Event.objects.filter(kind="warmup.completed").latest("id")
    assert event.data["policy"] == "predictive" and event.data["unloaded"] == 1


def test_a_predictive_pass_sends_nothing_to_loaded_models_and_nothing_for_unlikely_ones(
    monkeypatch,
):
    instance = InstanceFactory(port=47100, memory_budget_mb=4000)
    live_placement(instance)
    live_placement(instance, actual_state=Placement.ActualState.EVICTED)
    backend = RecordingBackend()
    monkeypatch.setattr(warmups, "backend_for", lambda endpoint: backend)

    report = warmups.warm_up_fleet(policy="predictive")

    assert backend.loaded == [] and backend.unloaded == []
    assert report.warmed == 0 and report.skipped_unlikely == 1 and report.considered == 2


def test_a_predictive_pass_reads_as_many_queries_for_a_fleet_six_times_larger(settings):
    settings.TENANTML_WARMUP_POLICY = "predictive"
    crowded_instances(2, first_port=48000)
    small, report = pass_queries()
    assert report.considered == 6 and report.warmed == 0

    crowded_instances(10, first_port=48100)
    large, report = pass_queries()

    # The busy models stay (used just now), so the pinned ones still find no room.
    assert report.considered == 36 and report.failed == 0 and report.unloaded == 0
    assert report.skipped_no_room == 12
    assert large == small


def test_the_scheduled_warm_up_runs_the_configured_policy(settings, monkeypatch):
    from django_celery_beat.models import PeriodicTask

    from config.celery import app
    from deployments import tasks  # noqa: F401  (registers the tasks, as a worker does)
    from deployments.services.fleet import sync_periodic_tasks

    sync_periodic_tasks()
    scheduled = PeriodicTask.objects.get(task="deployments.tasks.warm_up_fleet")
    assert scheduled.enabled and scheduled.interval.every == 3600
    instance = InstanceFactory(port=47200, memory_budget_mb=4000)
    live_placement(instance, actual_state=Placement.ActualState.EVICTED)
    backend = RecordingBackend()
    monkeypatch.setattr(warmups, "backend_for", lambda endpoint: backend)

    settings.TENANTML_WARMUP_POLICY = "predictive"
    predictive = app.tasks[scheduled.task].apply().get()
    settings.TENANTML_WARMUP_POLICY = "hourly-skip-recent"
    hourly = app.tasks[scheduled.task].apply().get()

    assert predictive["policy"] == "predictive" and predictive["skipped_unlikely"] == 1
    assert hourly["policy"] == "hourly-skip-recent" and hourly["warmed"] == 1
