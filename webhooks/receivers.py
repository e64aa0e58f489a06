"""What the webhooks app does when the platform records an event: the subscribed webhooks'
deliveries, written in the same transaction as the event (``record_event`` sends its signal
inside one), so an event stored is an event delivered."""

from __future__ import annotations

from django.dispatch import receiver

from config.events import event_recorded
from webhooks.services import record_deliveries


@receiver(event_recorded, dispatch_uid="tenantml_webhook_deliveries")
def queue_webhook_deliveries(
    sender, *, kind, message, severity, tenant=None, version=None, endpoint=None, data, **fields
) -> None:
    """One delivery per webhook subscribed to the event (none for kinds webhooks do not carry)."""
    record_deliveries(
        kind=kind,
        message=message,
        severity=severity,
        tenant=tenant,
        version=version,
        endpoint=endpoint,
        data=data,
    )
