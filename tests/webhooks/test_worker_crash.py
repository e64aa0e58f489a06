"""Deliveries through real Celery worker processes: a receiver that is down gets its event once
it is back, and a worker killed with SIGKILL in the middle of a delivery loses no event — the
sweep queues it again and the receiver, deduplicating by event id, sees every event once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app
from config.events import record_event
from tests.factories import TenantFactory
from tests.reliability.support import Worker, with_log
from tests.waiting import wait_until
from tests.webhooks.support import Receiver, free_port
from webhooks import services
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_log(tmp_path):
    app.control.purge()  # messages other tests sent and no worker took
    return tmp_path / "worker.log"


def all_delivered():
    return not WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.SUCCEEDED).exists()


def test_a_worker_killed_mid_delivery_loses_no_event_and_duplicates_none(worker_log, settings):
    tenant = TenantFactory(slug="zoomride")
    with Receiver(hold_first=True) as receiver:
        webhook, secret = services.create_webhook(
            tenant=tenant, url=receiver.url(), event_types=["training."], actor="test"
        )
        receiver.secrets["/hook"] = secret
        for job in range(3):
            record_event(
                kind="training.succeeded",
                message=f"Job {job} done.",
                actor="worker",
                tenant=tenant,
                data={"job": job},
            )
        expected = set(WebhookDelivery.objects.values_list("event_id", flat=True))
        assert len(expected) == 3

        first = Worker(worker_log)
        try:
            arrived = receiver.first_arrived.wait(120)
            assert arrived, with_log("no delivery reached the receiver", worker_log)()
            held = WebhookDelivery.objects.get(status=WebhookDelivery.Status.DELIVERING)
        finally:
            first.kill_hard()  # while the receiver holds its answer back
        receiver.release()
        # The receiver has the event, the platform has no answer: the delivery is not done.
        assert receiver.event_ids() == [held.event_id]
        assert WebhookDelivery.objects.get(pk=held.pk).status == WebhookDelivery.Status.DELIVERING

        # A pass of the sweep once the attempt's claim has run out queues it again.
        later = timezone.now() + timedelta(
            seconds=services.claim_s() + settings.TENANTML_WEBHOOK_SWEEP_GRACE_S + 1
        )
        assert held.pk in services.sweep_deliveries(now=later)
        second = Worker(worker_log)
        try:
            wait_until(all_delivered, 120, with_log("the deliveries did not finish", worker_log))
        finally:
            second.stop()

    received = receiver.event_ids()
    assert set(received) == expected  # no event lost
    assert receiver.rejected == []
    # Only the event whose answer died with the worker came twice; the receiver's dedup by id
    # leaves each event once.
    assert sorted(received.count(event_id) for event_id in expected) == [1, 1, 2]
    assert received.count(held.event_id) == 2
    for delivery in WebhookDelivery.objects.all():
        assert [a.succeeded for a in delivery.attempts.all()].count(True) == 1
    lost = WebhookDelivery.objects.get(pk=held.pk).attempts.first()
    assert lost.status_code is None and "stopped" in lost.error


def test_a_receiver_that_is_down_gets_the_event_from_a_worker_once_it_is_back(
    worker_log, monkeypatch
):
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_S", "0.5")  # the worker's backoff, kept short
    tenant = TenantFactory(slug="threadline")
    port = free_port()
    webhook, secret = services.create_webhook(
        tenant=tenant,
        url=f"http://127.0.0.1:{port}/hook",
        event_types=["deployment.live"],
        actor="test",
    )
    record_event(kind="deployment.switched", message="Live.", actor="worker", tenant=tenant)
    delivery = WebhookDelivery.objects.get()

    worker = Worker(worker_log)
    try:
        wait_until(
            lambda: delivery.attempts.count() >= 2,
            120,
            with_log("the worker did not retry the refused delivery", worker_log),
        )
        with Receiver(port=port) as receiver:
            receiver.secrets["/hook"] = secret
            wait_until(all_delivered, 60, with_log("the delivery did not arrive", worker_log))
    finally:
        worker.stop()

    assert receiver.event_ids() == [delivery.event_id]
    attempts = list(delivery.attempts.all())
    assert all(a.status_code is None for a in attempts[:-1]) and attempts[-1].status_code == 200
