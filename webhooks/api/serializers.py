"""The webhooks API's request and response bodies."""

from __future__ import annotations

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.fields import JsonBooleanField, TextField
from tenants.models import SLUG_VALIDATOR
from webhooks import catalog
from webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from webhooks.services import URL_MAX_CHARS

EVENT_TYPES_HELP = (
    "Event types to receive: exact types or a group prefix ending in a dot, e.g. "
    '"training.succeeded" or "training.".'
)


def _event_types(*, required: bool) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=catalog.SUBSCRIPTIONS),
        min_length=1,
        max_length=len(catalog.SUBSCRIPTIONS),
        required=required,
        help_text=EVENT_TYPES_HELP,
    )


class WebhookCreateSerializer(serializers.Serializer):
    url = TextField(
        max_length=URL_MAX_CHARS,
        help_text="Where events are posted: an https:// URL (plain http to localhost only "
        "where the platform's WEBHOOK_ALLOW_HTTP_LOCALHOST allows it).",
    )
    event_types = _event_types(required=True)
    description = TextField(max_length=200, required=False, allow_blank=True)
    enabled = JsonBooleanField(required=False, default=True)
    tenant = TextField(
        max_length=50,
        required=False,
        validators=[SLUG_VALIDATOR],
        help_text="The tenant whose events it receives. A tenant token: its own tenant (the "
        "default). A platform token: any tenant, or omitted for a platform webhook that "
        "receives every tenant's events.",
    )


class WebhookUpdateSerializer(serializers.Serializer):
    url = TextField(max_length=URL_MAX_CHARS, required=False)
    event_types = _event_types(required=False)
    description = TextField(max_length=200, required=False, allow_blank=True)
    enabled = JsonBooleanField(
        required=False,
        help_text="false pauses deliveries; true resumes those still inside their retry window.",
    )


class WebhookSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(
        slug_field="slug",
        read_only=True,
        allow_null=True,
        help_text="The tenant whose events it receives; null for a platform webhook.",
    )
    event_types = serializers.ListField(child=serializers.CharField(), help_text=EVENT_TYPES_HELP)

    class Meta:
        model = Webhook
        fields = [
            "id",
            "tenant",
            "url",
            "description",
            "event_types",
            "enabled",
            "secret_rotated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(
        help_text="The signing secret; shown only in this response. Store it now."
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "duration_ms", "status_code", "error", "succeeded"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    webhook = serializers.IntegerField(source="webhook_id", read_only=True)
    payload = serializers.SerializerMethodField()
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook",
            "event_id",
            "event_type",
            "status",
            "attempt_count",
            "next_attempt_at",
            "delivered_at",
            "created_at",
            "payload",
            "attempts",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.DictField(help_text="The JSON body posted: id, type, created_at, tenant, data.")
    )
    def get_payload(self, obj: WebhookDelivery) -> dict:
        return json.loads(obj.body)
