"""The reconciler over a fleet of many instances (answered by the Triton stand-in, which the
platform's liveness check and client take for Triton): a pass makes the same number of queries
whatever the fleet's size, asks its instances at once within ``RECONCILE_CONCURRENCY``, repairs
every instance whatever another one does, and records itself as the reconcile job's last pass."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.backends.local import reconcile as local_reconcile
from deployments.models import BackgroundPass, Event, Instance, Placement
from deployments.passes import RECONCILE
from deployments.services import reconciler
from tests.admin_support import admin_url
from tests.deployments.services.triton_standin import TritonStandIn
from tests.factories import EndpointFactory, InstanceFactory, PlacementFactory

pytestmark = pytest.mark.django_db


class Fleet:
    """Local endpoints whose instances are the stand-in's ports, in the steady state: every
    copy the record calls loaded is listed by its instance, and nothing else is."""

    def __init__(self, standin: TritonStandIn) -> None:
        self.standin = standin
        self.free_ports = list(standin.ports)
        self.instances: list[Instance] = []

    def add(self, *, endpoints: int, instances: int, placements: int) -> None:
        long_ago = timezone.now() - timedelta(hours=3)
        for _ in range(endpoints):
            endpoint = EndpointFactory(min_instances=1, max_instances=instances)
            for ordinal in range(instances):
                instance = self.instance(endpoint=endpoint, ordinal=ordinal)
                loaded = []
                for index in range(placements):
                    # Mostly loaded; now and then a cold evicted copy (not reloaded: not hot)
                    # and one nobody wants any more, unloaded.
                    if index % 4 == 3:
                        PlacementFactory(
                            instance=instance,
                            actual_state=Placement.ActualState.EVICTED,
                            last_invoked_at=long_ago,
                        )
                    elif index % 5 == 4:
                        PlacementFactory(
                            instance=instance,
                            desired_state=Placement.DesiredState.UNLOADED,
                            actual_state=Placement.ActualState.UNLOADED,
                        )
                    else:
                        placement = PlacementFactory(instance=instance, last_invoked_at=long_ago)
                        loaded.append(placement.version.triton_model_name)
                self.standin.configure(instance.port, loaded=loaded)

    def instance(self, *, endpoint, ordinal: int, **fields) -> Instance:
        instance = InstanceFactory(
            endpoint=endpoint,
            ordinal=ordinal,
            port=self.free_ports.pop(0),
            pid=self.standin.pid,
            **fields,
        )
        self.instances.append(instance)
        return instance


def steady_pass_queries() -> tuple[int, reconciler.ReconcileReport]:
    """The queries of one pass over a fleet already in the steady state."""
    reconciler.reconcile_fleet()  # the first pass creates the job's record
    with CaptureQueriesContext(connection) as queries:
        report = reconciler.reconcile_fleet()
    return len(queries), report


def test_a_steady_pass_makes_as_many_queries_for_a_fleet_six_times_larger(standins):
    fleet = Fleet(standins(ports=20))
    fleet.add(endpoints=1, instances=2, placements=4)
    small, report = steady_pass_queries()
    assert report.instances_checked == 2
    assert not report.changed and report.errors == []

    fleet.add(endpoints=2, instances=6, placements=12)  # 12 more instances, 144 more copies
    large, report = steady_pass_queries()

    assert report.instances_checked == 14
    assert not report.changed and report.errors == []
    assert large == small
    # The pass's own queries (its record excluded): the endpoints, the instances, the
    # placements, the backends to audit and the stalled rollouts.
    assert BackgroundPass.objects.get(job=RECONCILE).queries == 5


def test_instances_are_asked_at_once_and_never_more_than_the_bound(standins, settings):
    standin = standins(ports=8)
    fleet = Fleet(standin)
    fleet.add(endpoints=1, instances=8, placements=2)
    for port in standin.ports:
        standin.configure(port, models_delay_s=0.3)

    settings.TENANTML_RECONCILE_CONCURRENCY = 16
    standin.reset_stats()
    started = time.monotonic()
    report = reconciler.reconcile_fleet()
    at_once_s = time.monotonic() - started
    at_once = standin.stats()

    settings.TENANTML_RECONCILE_CONCURRENCY = 3
    standin.reset_stats()
    started = time.monotonic()
    reconciler.reconcile_fleet()
    bounded_s = time.monotonic() - started
    bounded = standin.stats()

    assert report.instances_checked == 8 and report.errors == []
    assert at_once["requests"]["list"] == 8
    # One after another, the eight listings alone would take 2.4 s.
    assert at_once_s < 1.5, at_once_s
    assert at_once["max_in_flight"] >= 4
    assert bounded["max_in_flight"] <= 3
    assert bounded_s >= 0.9  # three rounds of 0.3 s: the bound held them back


def test_one_failing_instance_does_not_stop_the_repairs_of_the_others(standins):
    standin = standins(ports=4)
    refusing = standins(ports=0, refusing=1)  # a Triton process whose port refuses connections
    fleet = Fleet(standin)
    endpoint = EndpointFactory(min_instances=1, max_instances=5)
    # Two that fail first: one refusing every connection (out of restarts, so it is given up)
    # and one whose model listing fails.
    gone = InstanceFactory(
        endpoint=endpoint,
        ordinal=0,
        port=refusing.refusing_ports[0],
        pid=refusing.pid,
        failed_restarts=local_reconcile.MAX_RESTARTS,
    )
    broken = fleet.instance(endpoint=endpoint, ordinal=1)
    standin.configure(broken.port, listing_status=500)
    # Then three with drift: a copy missing, an orphan loaded, and one in order.
    missing_on = fleet.instance(endpoint=endpoint, ordinal=2)
    missing = PlacementFactory(
        instance=missing_on, last_invoked_at=timezone.now() - timedelta(hours=3)
    )
    standin.configure(missing_on.port, loaded=[])
    orphan_on = fleet.instance(endpoint=endpoint, ordinal=3)
    kept = PlacementFactory(instance=orphan_on)
    standin.configure(orphan_on.port, loaded=[kept.version.triton_model_name, "stray.model.v1"])
    fine = fleet.instance(endpoint=endpoint, ordinal=4)
    standin.configure(fine.port, loaded=[PlacementFactory(instance=fine).version.triton_model_name])

    report = reconciler.reconcile_fleet()

    assert report.instances_checked == 5
    assert report.instances_given_up == [str(gone)]
    gone.refresh_from_db()
    assert gone.status == Instance.Status.STOPPED
    assert len(report.errors) == 1 and report.errors[0].startswith(f"{broken}: ")
    assert "answered 500 to GET /models" in report.errors[0]
    assert report.marked_missing == [str(missing)]
    missing.refresh_from_db()
    assert missing.actual_state == Placement.ActualState.EVICTED
    assert Event.objects.filter(kind="placement.missing", version=missing.version).exists()
    assert report.orphans_unloaded == [f"stray.model.v1 on {orphan_on}"]
    assert standin.loaded(orphan_on.port) == {kept.version.triton_model_name}
    assert Event.objects.filter(kind="placement.orphan_unloaded", instance=orphan_on).exists()
    assert report.instances_started == []  # four still run; the minimum is one


def test_a_pass_records_itself_as_the_reconcile_jobs_last_pass(standins, admin_client):
    fleet = Fleet(standins(ports=3))
    fleet.add(endpoints=1, instances=3, placements=3)

    report = reconciler.reconcile_fleet()
    reconciler.reconcile_fleet()

    record = BackgroundPass.objects.get(job=RECONCILE)
    assert record.succeeded and record.errors == 0 and record.passes == 2
    assert record.items == report.instances_checked == 3
    assert record.queries > 0 and record.duration_s > 0
    assert record.finished_at >= record.started_at
    assert record.summary["instances_checked"] == 3 and record.summary["reloaded"] == 0
    # Operators see it in the admin, with how long ago it finished.
    page = admin_client.get(admin_url(BackgroundPass, "changelist")).content.decode()
    assert "reconcile" in page and "0\xa0minutes ago" in page
