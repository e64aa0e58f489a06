"""Webhooks' reads, scoped to what the caller may see: a tenant its own, the platform all."""

from __future__ import annotations

from django.db.models import QuerySet

from config.errors import DomainError, NotFound
from tenants.access import Caller
from webhooks.models import Webhook, WebhookDelivery


def visible_webhooks(*, caller: Caller) -> QuerySet[Webhook]:
    webhooks = Webhook.objects.select_related("tenant")
    if caller.is_platform:
        return webhooks
    return webhooks.filter(tenant_id__in=caller.tenant_ids)


def webhook_for_caller(*, caller: Caller, webhook_id: int) -> Webhook:
    """The webhook if the caller may see it; a 404 otherwise (another tenant's looks missing)."""
    webhook = visible_webhooks(caller=caller).filter(pk=webhook_id).first()
    if webhook is None:
        raise NotFound(f"No webhook {webhook_id}.")
    return webhook


def deliveries_for_webhook(*, webhook: Webhook) -> QuerySet[WebhookDelivery]:
    """Its deliveries, newest first, with their attempts."""
    return webhook.deliveries.prefetch_related("attempts")


def delivery_for_webhook(*, webhook: Webhook, delivery_id: int) -> WebhookDelivery:
    delivery = webhook.deliveries.filter(pk=delivery_id).select_related("webhook").first()
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id} for webhook {webhook.pk}.")
    return delivery


def owner_for_caller(*, caller: Caller, slug: str | None):
    """The tenant a new webhook belongs to: the named one (if the caller may see it), else the
    caller's own tenant; None (a platform webhook) for a platform caller naming none."""
    from tenants.models import Tenant

    if slug is None:
        if caller.is_platform:
            return None
        if len(caller.tenant_ids) != 1:
            raise DomainError("Name the tenant the webhook is for.", field="tenant")
        return Tenant.objects.get(pk=next(iter(caller.tenant_ids)))
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None or not caller.can_see(tenant.pk):
        raise DomainError("No tenant by this slug is visible to the caller.", field="tenant")
    return tenant
