"""Webhook endpoints, the deliveries of events to them, and each delivery's attempts."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from tenants.models import Tenant


class Webhook(models.Model):
    """An HTTPS endpoint told of the event types it subscribes to: a tenant's (its own events)
    or the platform's (``tenant`` empty: every tenant's events)."""

    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhooks",
        help_text="Empty: a platform webhook, told of every tenant's events.",
    )
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(
        default=list, help_text='Exact types ("training.succeeded") or prefixes ("training.").'
    )
    enabled = models.BooleanField(default=True)
    # Encrypted with a key derived from SECRET_KEY (webhooks.signing): signing needs the secret.
    secret_encrypted = models.TextField(editable=False)
    secret_rotated_at = models.DateTimeField()
    created_by = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["tenant", "enabled"], name="webhook_tenant_enabled")]

    def __str__(self) -> str:
        return f"webhook {self.pk} ({self.tenant or 'platform'})"


class WebhookDelivery(models.Model):
    """One event for one webhook: the exact body posted, until a 2xx or the retry window ends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERING = "delivering", "Delivering"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(
        max_length=40, db_index=True, help_text="The event's id; receivers deduplicate by it."
    )
    event_type = models.CharField(max_length=64)
    body = models.TextField(help_text="The JSON body, byte for byte what every attempt posts.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # While an attempt runs: past this moment its worker is taken as lost and the sweep
    # queues the delivery again.
    claimed_until = models.DateTimeField(null=True, blank=True)
    # When the current run of retries began (creation, or the last redelivery).
    retry_window_started_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["webhook", "event_id"], name="webhookdelivery_one_per_event"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivering", "succeeded", "failed"]),
                name="webhookdelivery_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhookdelivery_due"),
            models.Index(fields=["webhook", "-created_at"], name="webhookdelivery_recent"),
        ]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> webhook {self.webhook_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: the answer's status code or the error, and how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(null=True, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="webhookattempt_one_per_number"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
