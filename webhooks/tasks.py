"""Celery tasks for webhooks: each calls one service. The names are the wire contract."""

from celery import shared_task

from webhooks import services


@shared_task(name="webhooks.tasks.deliver_webhook")
def deliver_webhook(delivery_id: int) -> str:
    return services.deliver(delivery_id=delivery_id)


@shared_task(name="webhooks.tasks.sweep_webhook_deliveries")
def sweep_webhook_deliveries() -> int:
    return len(services.sweep_deliveries())
