"""Webhooks in the admin: every model listed and opened, deliveries with their attempts,
enabling and disabling webhooks and redelivering through the services."""

from __future__ import annotations

import pytest
from django.utils import timezone

from config.events import record_event
from tests.admin_support import AppAdminChecks, admin_url, messages_of, run_action
from tests.factories import TenantFactory
from webhooks import services
from webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


@pytest.fixture
def everything(db) -> dict:
    """A tenant's webhook with one delivery that has one attempt."""
    tenant = TenantFactory()
    webhook, _ = services.create_webhook(
        tenant=tenant, url="https://hooks.example.com/t", event_types=["training."], actor="test"
    )
    record_event(kind="training.succeeded", message="Done.", actor="worker", tenant=tenant)
    delivery = WebhookDelivery.objects.get()
    attempt = WebhookAttempt.objects.create(
        delivery=delivery, number=1, started_at=timezone.now(), status_code=503, error="503"
    )
    return {Webhook: webhook, WebhookDelivery: delivery, WebhookAttempt: attempt}


class TestWebhooksAdmin(AppAdminChecks):
    app_label = "webhooks"
    expected_models = {Webhook, WebhookDelivery, WebhookAttempt}
    # Webhooks are registered through the API, whose answer shows the secret once.
    no_add = {Webhook, WebhookDelivery, WebhookAttempt}


def test_a_delivery_page_shows_its_attempts(admin_client, everything):
    delivery = everything[WebhookDelivery]

    page = admin_client.get(admin_url(WebhookDelivery, "change", delivery.pk)).content.decode()

    assert delivery.event_id in page and "503" in page


def test_the_secret_never_appears_in_the_admin(admin_client, db):
    webhook, secret = services.create_webhook(
        tenant=None, url="https://hooks.example.com/p", event_types=["version."], actor="test"
    )

    page = admin_client.get(admin_url(Webhook, "change", webhook.pk)).content.decode()

    assert secret not in page and webhook.secret_encrypted not in page


def test_redeliver_action_queues_a_finished_delivery_again(admin_client, everything):
    delivery = everything[WebhookDelivery]
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.FAILED)

    response = run_action(
        admin_client, WebhookDelivery, "redeliver_deliveries", [delivery], follow=True
    )

    assert "Queued 1" in str(messages_of(response)[0])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING
    # One still being attempted is left as it is.
    response = run_action(
        admin_client, WebhookDelivery, "redeliver_deliveries", [delivery], follow=True
    )
    assert any("still being attempted" in str(m) for m in messages_of(response))


def test_disable_action_pauses_a_webhook(admin_client, everything):
    webhook = everything[Webhook]

    run_action(admin_client, Webhook, "disable_webhooks", [webhook])

    webhook.refresh_from_db()
    assert webhook.enabled is False
