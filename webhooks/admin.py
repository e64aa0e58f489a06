"""Operator admin for webhooks and their deliveries: every attempt visible, redeliver, and
enable or disable an endpoint. Webhooks are registered through the API, which shows the
signing secret once; the admin never shows it."""

from __future__ import annotations

from django.contrib import admin, messages

from config.errors import DomainError
from tenants.admin import ViewOnlyAdmin, admin_actor, changelist_link
from webhooks import services
from webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant_display", "url", "event_types", "enabled", "created_at")
    list_filter = ("enabled", ("tenant", admin.EmptyFieldListFilter))
    list_select_related = ("tenant",)
    search_fields = ("url", "tenant__slug", "description")
    fields = (
        "tenant",
        "url",
        "description",
        "event_types",
        "enabled",
        "secret_rotated_at",
        "created_by",
        "created_at",
        "updated_at",
        "deliveries",
    )
    readonly_fields = fields
    actions = ("enable_webhooks", "disable_webhooks")

    @admin.display(description="Tenant")
    def tenant_display(self, obj: Webhook) -> str:
        return obj.tenant.slug if obj.tenant else "(platform: every tenant)"

    @admin.display(description="Deliveries")
    def deliveries(self, obj: Webhook) -> str:
        return changelist_link(
            view="webhooks_webhookdelivery",
            label=f"Deliveries of webhook {obj.pk}",
            webhook__id__exact=obj.pk,
        )

    def has_add_permission(self, request) -> bool:
        return False  # registered through the API, whose answer shows the secret once

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        for webhook in queryset:
            services.update_webhook(webhook=webhook, enabled=enabled, actor=admin_actor(request))
        verb = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{verb} {queryset.count()} webhook(s).", messages.SUCCESS)

    @admin.action(description="Enable selected webhooks (pending deliveries resume)")
    def enable_webhooks(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected webhooks (deliveries wait)")
    def disable_webhooks(self, request, queryset):
        self._set_enabled(request, queryset, False)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "duration_ms", "status_code", "succeeded", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ViewOnlyAdmin):
    list_display = (
        "id",
        "webhook",
        "event_type",
        "event_id",
        "status",
        "attempt_count",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    list_filter = ("status", "event_type")
    list_select_related = ("webhook__tenant",)
    search_fields = ("event_id", "webhook__url", "webhook__tenant__slug")
    fields = (
        "webhook",
        "event_id",
        "event_type",
        "status",
        "attempt_count",
        "next_attempt_at",
        "claimed_until",
        "retry_window_started_at",
        "delivered_at",
        "created_at",
        "body",
    )
    readonly_fields = fields
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver_deliveries",)

    @admin.action(description="Redeliver selected deliveries (same event id)")
    def redeliver_deliveries(self, request, queryset):
        queued, busy = 0, 0
        for delivery in queryset.select_related("webhook"):
            try:
                services.redeliver(delivery=delivery, actor=admin_actor(request))
                queued += 1
            except DomainError:
                busy += 1
        self.message_user(request, f"Queued {queued} delivery(ies) again.", messages.SUCCESS)
        if busy:
            self.message_user(
                request, f"{busy} still being attempted; left as they are.", messages.WARNING
            )


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ViewOnlyAdmin):
    list_display = (
        "delivery",
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "succeeded",
        "error",
    )
    list_filter = ("succeeded",)
    list_select_related = ("delivery",)
    search_fields = ("delivery__event_id", "delivery__webhook__url")
    fields = (
        "delivery",
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "succeeded",
        "error",
    )
    readonly_fields = fields
