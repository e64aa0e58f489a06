"""Deliveries end to end in one process: recorded events become signed POSTs to a real HTTP
receiver that checks them with the documented snippet; retries, isolation, the sweep."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from config.events import record_event
from tenants.services import issue_token
from tests.factories import TenantFactory
from tests.webhooks.support import Receiver, free_port
from webhooks import services
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def deliver_all() -> list[str]:
    return [
        services.deliver(delivery_id=pk)
        for pk in WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True)
    ]


def test_a_recorded_event_reaches_the_receiver_signed_as_documented(
    tenant, tenant_token, create_webhook
):
    with Receiver() as receiver:
        webhook = create_webhook(
            tenant_token, url=receiver.url(), event_types=["training.succeeded"]
        )
        receiver.secrets["/hook"] = webhook["secret"]
        record_event(
            kind="training.succeeded",
            message="Training job 7 succeeded.",
            actor="worker",
            tenant=tenant,
            data={"job": 7},
        )

        assert deliver_all() == ["succeeded"]

    assert receiver.rejected == []
    [(_, event)] = receiver.events
    assert event["type"] == "training.succeeded"
    assert event["tenant"] == tenant.slug
    assert event["data"]["details"] == {"job": 7}
    assert event["data"]["message"] == "Training job 7 succeeded."
    assert receiver.headers[0]["TenantML-Event-Id"] == event["id"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_id == event["id"] and delivery.delivered_at is not None
    [attempt] = delivery.attempts.all()
    assert attempt.status_code == 200 and attempt.succeeded and attempt.duration_ms > 0


def test_a_request_signed_with_another_secret_is_refused_and_retried(
    tenant, tenant_token, create_webhook
):
    with Receiver() as receiver:
        create_webhook(tenant_token, url=receiver.url(), event_types=["training."])
        receiver.secrets["/hook"] = "whsec_not-the-webhooks-secret"
        record_event(kind="training.failed", message="Failed.", actor="worker", tenant=tenant)

        assert deliver_all() == ["pending"]

    assert receiver.events == [] and receiver.rejected[0][1] == "bad signature"
    delivery = WebhookDelivery.objects.get()
    [attempt] = delivery.attempts.all()
    assert attempt.status_code == 400 and not attempt.succeeded
    assert delivery.next_attempt_at > timezone.now()


def test_a_receiver_that_is_down_gets_the_delivery_after_it_comes_back(
    tenant, tenant_token, create_webhook, settings
):
    settings.TENANTML_WEBHOOK_RETRY_BASE_S = 1.0
    port = free_port()
    webhook = create_webhook(
        tenant_token, url=f"http://127.0.0.1:{port}/hook", event_types=["deployment."]
    )
    record_event(kind="deployment.switched", message="Live.", actor="worker", tenant=tenant)
    delivery = WebhookDelivery.objects.get()

    assert services.deliver(delivery_id=delivery.pk) == "pending"  # nobody listens
    delivery.refresh_from_db()
    [refused] = delivery.attempts.all()
    assert refused.status_code is None and refused.error.startswith("No answer")
    assert delivery.next_attempt_at > timezone.now()
    # A message arriving before the attempt is due sends nothing.
    assert services.deliver(delivery_id=delivery.pk) == "pending"
    assert delivery.attempts.count() == 1

    with Receiver(port=port) as receiver:
        receiver.secrets["/hook"] = webhook["secret"]
        time.sleep(max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds()))
        assert services.deliver(delivery_id=delivery.pk) == "succeeded"

    assert receiver.event_ids() == [delivery.event_id]
    assert receiver.events[0][1]["type"] == "deployment.live"
    assert [a.succeeded for a in delivery.attempts.all()] == [False, True]


def test_a_delivery_is_given_up_after_its_attempts(tenant, tenant_token, create_webhook, settings):
    settings.TENANTML_WEBHOOK_MAX_ATTEMPTS = 2
    settings.TENANTML_WEBHOOK_RETRY_BASE_S = 0.2
    create_webhook(
        tenant_token, url=f"http://127.0.0.1:{free_port()}/hook", event_types=["version.held"]
    )
    record_event(kind="version.held", message="Held.", actor="worker", tenant=tenant)
    delivery = WebhookDelivery.objects.get()

    assert services.deliver(delivery_id=delivery.pk) == "pending"
    time.sleep(0.2)
    assert services.deliver(delivery_id=delivery.pk) == "failed"
    assert services.deliver(delivery_id=delivery.pk) == "failed"  # nothing more is sent
    assert delivery.attempts.count() == 2


def test_the_backoff_doubles_with_jitter_up_to_the_cap(settings):
    settings.TENANTML_WEBHOOK_RETRY_BASE_S = 10
    settings.TENANTML_WEBHOOK_RETRY_MAX_DELAY_S = 60
    for attempts, (low, high) in {1: (5, 10), 2: (10, 20), 3: (20, 40), 5: (30, 60)}.items():
        delays = [services.retry_delay_s(attempts) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high
        assert len(set(delays)) > 1  # jittered


def test_a_tenants_webhooks_never_receive_another_tenants_events(create_webhook, db):
    zoomride, threadline = TenantFactory(slug="zoomride"), TenantFactory(slug="threadline")
    tokens = {
        tenant: issue_token(name="hooks", tenant=tenant, actor="test").secret
        for tenant in (zoomride, threadline)
    }
    platform = issue_token(name="ops", tenant=None, actor="test").secret
    with Receiver() as receiver:
        for path, token in (
            ("/zoomride", tokens[zoomride]),
            ("/threadline", tokens[threadline]),
            ("/platform", platform),
        ):
            webhook = create_webhook(token, url=receiver.url(path), event_types=["training."])
            receiver.secrets[path] = webhook["secret"]
        for tenant in (zoomride, threadline, zoomride):
            record_event(kind="training.succeeded", message="Done.", actor="w", tenant=tenant)
        record_event(kind="training.failed", message="No tenant.", actor="w")
        record_event(kind="placement.loaded", message="Not sent.", actor="w", tenant=zoomride)

        assert set(deliver_all()) == {"succeeded"}

    tenants_of = {
        path: [event["tenant"] for at, event in receiver.events if at == path]
        for path in ("/zoomride", "/threadline", "/platform")
    }
    assert tenants_of["/zoomride"] == ["zoomride", "zoomride"]
    assert tenants_of["/threadline"] == ["threadline"]
    assert sorted(tenants_of["/platform"], key=str) == sorted(
        ["zoomride", "threadline", "zoomride", None], key=str
    )
    assert receiver.rejected == []


def test_only_subscribed_types_of_enabled_webhooks_become_deliveries(
    tenant, tenant_token, create_webhook
):
    create_webhook(tenant_token, url="https://hooks.example.com/a", event_types=["version."])
    create_webhook(
        tenant_token, url="https://hooks.example.com/b", event_types=["deployment.retired"]
    )
    create_webhook(
        tenant_token, url="https://hooks.example.com/c", event_types=["version."], enabled=False
    )
    for kind in ("version.promoted", "deployment.switched", "deployment.retired", "training.x"):
        record_event(kind=kind, message="m", actor="w", tenant=tenant)

    sent = sorted(
        WebhookDelivery.objects.values_list("webhook__url", "event_type"), key=lambda row: row[0]
    )
    assert sent == [
        ("https://hooks.example.com/a", "version.promoted"),
        ("https://hooks.example.com/b", "deployment.retired"),
    ]


def test_an_event_and_its_deliveries_are_written_together(tenant, tenant_token, create_webhook):
    from django.db import transaction

    from deployments.models import Event

    create_webhook(tenant_token, url="https://hooks.example.com/a", event_types=["training."])
    with pytest.raises(RuntimeError), transaction.atomic():
        record_event(kind="training.succeeded", message="m", actor="w", tenant=tenant)
        raise RuntimeError("the process dies before the commit")

    assert not Event.objects.filter(kind="training.succeeded").exists()
    assert not WebhookDelivery.objects.exists()
    record_event(kind="training.succeeded", message="m", actor="w", tenant=tenant)
    assert Event.objects.filter(kind="training.succeeded").count() == 1
    assert WebhookDelivery.objects.count() == 1


def test_the_sweep_requeues_a_stuck_delivery_and_it_is_delivered(
    tenant, tenant_token, create_webhook, django_capture_on_commit_callbacks
):
    with Receiver() as receiver:
        webhook = create_webhook(tenant_token, url=receiver.url(), event_types=["training."])
        receiver.secrets["/hook"] = webhook["secret"]
        for _ in range(3):
            record_event(kind="training.succeeded", message="m", actor="w", tenant=tenant)
        stuck, overdue, fresh = WebhookDelivery.objects.order_by("pk")
        now = timezone.now()
        # A worker took ``stuck`` and died mid-attempt; ``overdue``'s message was lost with one.
        WebhookDelivery.objects.filter(pk=stuck.pk).update(
            status=WebhookDelivery.Status.DELIVERING,
            attempt_count=1,
            claimed_until=now - timedelta(seconds=1),
        )
        WebhookDelivery.objects.filter(pk=overdue.pk).update(
            next_attempt_at=now - timedelta(minutes=5)
        )

        with django_capture_on_commit_callbacks() as queued:
            requeued = services.sweep_deliveries(now=now)

        assert requeued == [overdue.pk, stuck.pk] or requeued == [stuck.pk, overdue.pk]
        assert len(queued) == 2
        stuck.refresh_from_db()
        assert stuck.status == WebhookDelivery.Status.PENDING
        [lost] = stuck.attempts.all()
        assert lost.number == 1 and lost.status_code is None and "stopped" in lost.error
        assert services.sweep_deliveries(now=now) == []  # queued once, not every pass
        for pk in requeued:
            assert services.deliver(delivery_id=pk) == "succeeded"

    assert sorted(receiver.event_ids()) == sorted([stuck.event_id, overdue.event_id])
    assert fresh.event_id not in receiver.event_ids()
    assert [a.number for a in stuck.attempts.all()] == [1, 2]


def test_a_redelivery_sends_the_same_event_id_again(
    tenant, tenant_client, tenant_token, create_webhook
):
    with Receiver() as receiver:
        webhook = create_webhook(tenant_token, url=receiver.url(), event_types=["training."])
        receiver.secrets["/hook"] = webhook["secret"]
        record_event(kind="training.cancelled", message="m", actor="w", tenant=tenant)
        delivery = WebhookDelivery.objects.get()
        base = f"/api/v1/webhooks/{webhook['id']}/deliveries/"

        busy = tenant_client.post(f"{base}{delivery.pk}/redeliver")
        assert busy.status_code == 409
        assert services.deliver(delivery_id=delivery.pk) == "succeeded"
        again = tenant_client.post(f"{base}{delivery.pk}/redeliver")
        assert again.status_code == 202 and again.json()["status"] == "pending"
        assert services.deliver(delivery_id=delivery.pk) == "succeeded"

    assert receiver.event_ids() == [delivery.event_id, delivery.event_id]
    listed = tenant_client.get(base).json()["results"]
    assert [a["status_code"] for a in listed[0]["attempts"]] == [200, 200]


def test_a_test_event_reaches_the_receiver(tenant_client, tenant_token, create_webhook):
    with Receiver() as receiver:
        webhook = create_webhook(tenant_token, url=receiver.url(), event_types=["training."])
        receiver.secrets["/hook"] = webhook["secret"]
        response = tenant_client.post(f"/api/v1/webhooks/{webhook['id']}/test")
        assert response.status_code == 202
        assert services.deliver(delivery_id=response.json()["id"]) == "succeeded"

    assert [event["type"] for _, event in receiver.events] == ["webhook.test"]


def test_a_rotated_secret_signs_the_next_attempt(
    tenant, tenant_client, tenant_token, create_webhook
):
    with Receiver() as receiver:
        webhook = create_webhook(tenant_token, url=receiver.url(), event_types=["training."])
        rotated = tenant_client.post(f"/api/v1/webhooks/{webhook['id']}/rotate-secret").json()
        assert rotated["secret"] != webhook["secret"]
        receiver.secrets["/hook"] = rotated["secret"]
        record_event(kind="training.succeeded", message="m", actor="w", tenant=tenant)

        assert deliver_all() == ["succeeded"]

    assert len(receiver.events) == 1 and receiver.rejected == []


def test_a_promotion_through_the_api_reaches_the_receiver_with_its_model_and_version(
    tenant, tenant_client, tenant_token, create_webhook
):
    from tests.factories import ModelVersionFactory, TenantModelFactory

    model = TenantModelFactory(tenant=tenant, name="intents")
    ModelVersionFactory(model=model, number=1, metrics={"macro_f1": 0.9})
    with Receiver() as receiver:
        webhook = create_webhook(tenant_token, url=receiver.url(), event_types=["version."])
        receiver.secrets["/hook"] = webhook["secret"]
        promoted = tenant_client.post(
            f"/api/v1/tenants/{tenant.slug}/models/intents/versions/1/promote",
            {},
            format="json",
        )
        assert promoted.status_code == 200, promoted.content

        assert deliver_all() == ["succeeded"]

    [(_, event)] = receiver.events
    assert event["type"] == "version.promoted"
    assert (event["data"]["model"], event["data"]["version"]) == ("intents", 1)


def test_enabling_a_webhook_again_resumes_its_waiting_deliveries(
    tenant, tenant_client, tenant_token, create_webhook, django_capture_on_commit_callbacks
):
    webhook = create_webhook(
        tenant_token, url="https://hooks.example.com/a", event_types=["training."]
    )
    record_event(kind="training.succeeded", message="m", actor="w", tenant=tenant)
    path = f"/api/v1/webhooks/{webhook['id']}/"
    tenant_client.patch(path, {"enabled": False}, format="json")
    delivery = WebhookDelivery.objects.get()

    assert services.deliver(delivery_id=delivery.pk) == "pending"  # paused: nothing sent
    assert delivery.attempts.count() == 0
    assert services.sweep_deliveries(now=timezone.now() + timedelta(hours=1)) == []
    with django_capture_on_commit_callbacks() as queued:
        tenant_client.patch(path, {"enabled": True}, format="json")
    assert len(queued) == 1


def test_the_sweep_deletes_finished_deliveries_past_their_retention(
    tenant, tenant_token, create_webhook, settings
):
    settings.TENANTML_WEBHOOK_RETENTION_DAYS = 30
    create_webhook(tenant_token, url="https://hooks.example.com/a", event_types=["training."])
    for _ in range(4):
        record_event(kind="training.succeeded", message="m", actor="w", tenant=tenant)
    old_done, old_failed, old_pending, recent_done = WebhookDelivery.objects.order_by("pk")
    long_ago = timezone.now() - timedelta(days=31)
    for delivery, status in (
        (old_done, WebhookDelivery.Status.SUCCEEDED),
        (old_failed, WebhookDelivery.Status.FAILED),
        (old_pending, WebhookDelivery.Status.PENDING),
        (recent_done, WebhookDelivery.Status.SUCCEEDED),
    ):
        created = long_ago if delivery != recent_done else timezone.now()
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status, created_at=created, next_attempt_at=timezone.now()
        )

    services.sweep_deliveries()

    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {
        old_pending.pk,
        recent_done.pk,
    }
