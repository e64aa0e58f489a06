"""Deployment and inference request/answer shapes."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.fields import JsonBooleanField, JsonIntegerField, JsonNumberField, TextField
from deployments.backends import backend_named
from deployments.models import CAPTURE_MAX_RETENTION_DAYS, Deployment, Endpoint, Event, Instance
from deployments.proxy.batching import too_many_inputs
from deployments.selectors.events import EVENT_TYPE_MAX_CHARS, EVENT_TYPE_PATTERN
from models_registry.api.serializers import DATASET_NAME_MAX_CHARS


class DeploymentModeField(serializers.ChoiceField):
    """A deployment mode. The schema lists the modes the platform's deploy backend serves; the
    others are refused by the rollout service, naming the backend that serves them."""


class DeploymentModeFieldSchema(OpenApiSerializerFieldExtension):
    target_class = DeploymentModeField

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "string",
            "enum": list(backend_named(settings.TENANTML_DEPLOY_BACKEND).modes),
            "description": self.target.help_text,
        }


class DeploymentRequestSerializer(serializers.Serializer):
    version = JsonIntegerField(
        required=False, min_value=1, help_text="Version number; default: the active version."
    )
    mode = DeploymentModeField(
        choices=Endpoint.Mode.values,
        required=False,
        help_text="mme (shared multi-model), inference-component (the SageMaker backend), "
        "dedicated, or shared-base (one shared encoder answers every tenant's head; kinds "
        "with a shared base only, local backend); default: the current deployment's mode, "
        "or mme.",
    )
    replicas = JsonIntegerField(
        required=False,
        min_value=1,
        max_value=8,
        help_text="Copies to serve (a dedicated deployment: 1); default: the current "
        "deployment's, or 1.",
    )


class CaptureSerializer(serializers.Serializer):
    """A deployment's request capture, as its answer shows it."""

    enabled = serializers.BooleanField(source="capture_enabled")
    sample_percent = serializers.FloatField(source="capture_sample_percent")
    retention_days = serializers.IntegerField(source="capture_retention_days")
    records_written = serializers.IntegerField(source="capture_records_written")
    records_dropped = serializers.IntegerField(
        source="capture_records_dropped",
        help_text="Sampled requests not kept: a serving process's capture buffer was full, "
        "or the artifact store refused them.",
    )


def _number(version) -> int | None:
    return version.number if version is not None else None


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    tenant = serializers.CharField(source="model.tenant.slug", read_only=True)
    endpoint = serializers.CharField(source="endpoint.name", read_only=True, default=None)
    live_version = serializers.SerializerMethodField()
    target_version = serializers.SerializerMethodField()
    previous_version = serializers.SerializerMethodField()
    capture = CaptureSerializer(source="*", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "tenant",
            "model",
            "mode",
            "backend",
            "replicas",
            "endpoint",
            "status",
            "status_reason",
            "live_version",
            "target_version",
            "previous_version",
            "rollout_started_at",
            "live_since",
            "capture",
            "updated_at",
        ]
        read_only_fields = fields

    def get_live_version(self, obj: Deployment) -> int | None:
        return _number(obj.live_version)

    def get_target_version(self, obj: Deployment) -> int | None:
        return _number(obj.target_version)

    def get_previous_version(self, obj: Deployment) -> int | None:
        return _number(obj.previous_version)


class CaptureSettingsRequestSerializer(serializers.Serializer):
    capture_enabled = JsonBooleanField(
        required=False, help_text="Keep a sample of answered requests with their outputs."
    )
    capture_sample_percent = JsonNumberField(
        required=False,
        min_value=0.0,
        max_value=100.0,
        help_text="The share of answered requests kept, 0 to 100.",
    )
    capture_retention_days = JsonIntegerField(
        required=False,
        min_value=1,
        max_value=CAPTURE_MAX_RETENTION_DAYS,
        help_text="Days a captured day is kept before it is deleted.",
    )

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(
                {
                    "capture_enabled": "Send at least one of capture_enabled, "
                    "capture_sample_percent, capture_retention_days."
                }
            )
        return attrs


class CaptureDatasetRequestSerializer(serializers.Serializer):
    name = TextField(
        max_length=DATASET_NAME_MAX_CHARS, help_text="The new dataset's name (unique per tenant)."
    )


class InvokeInputsField(serializers.ListField):
    """``inputs``: 1 to ``INVOKE_MAX_INPUTS`` texts. A longer list is refused before its items
    are read; the items are checked against the model kind's schema by the invoke service
    (``inputs[i]`` named, never echoed)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.JSONField(), allow_empty=False, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, list):
            refusal = too_many_inputs(count=len(data), limit=settings.TENANTML_INVOKE_MAX_INPUTS)
            if refusal:
                raise serializers.ValidationError(refusal)
        return super().to_internal_value(data)


class InvokeInputsFieldSchema(OpenApiSerializerFieldExtension):
    """The same limits in the schema as ``InvokeInputsField`` and the kinds enforce (every
    built-in kind takes non-empty texts), so a request the schema allows is never refused."""

    target_class = InvokeInputsField

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": settings.TENANTML_INVOKE_MAX_INPUTS,
            "description": (
                "One text per input, answered in order. Up to INVOKE_MAX_INPUTS "
                f"({settings.TENANTML_INVOKE_MAX_INPUTS}) per request; the platform splits them "
                "at the model's batch size."
            ),
        }


class InvokeRequestSerializer(serializers.Serializer):
    inputs = InvokeInputsField()


class InvokeResponseSerializer(serializers.Serializer):
    outputs = serializers.ListField(
        child=serializers.JSONField(), help_text="One output per input, in the inputs' order."
    )
    model_version = serializers.IntegerField(help_text="The version number that answered.")
    cold_start = serializers.BooleanField(
        help_text="Whether the model had to be loaded to answer (a slower request)."
    )


# --- Fleet figures (the dashboard overview's numbers) -----------------------------------------


class FleetUtilizationSerializer(serializers.Serializer):
    """``GET /api/v1/fleet/utilization``; memory in MB, fractions in [0, 1], traffic last hour."""

    scope = serializers.CharField(help_text='"fleet" (platform callers) or "tenant".')
    tenants = serializers.ListField(child=serializers.CharField())
    window_minutes = serializers.IntegerField()
    instances = serializers.IntegerField()
    memory_measured_instances = serializers.IntegerField(allow_null=True)
    memory_basis = serializers.CharField()
    host_memory_used_mb = serializers.FloatField()
    host_memory_budget_mb = serializers.FloatField(allow_null=True)
    host_memory_utilization = serializers.FloatField(allow_null=True)
    gpu_memory_used_mb = serializers.FloatField()
    gpu_memory_budget_mb = serializers.FloatField(allow_null=True)
    gpu_memory_utilization = serializers.FloatField(allow_null=True)
    models_loaded = serializers.IntegerField()
    models_placed = serializers.IntegerField()
    invocations_last_hour = serializers.IntegerField()
    invocations_per_minute = serializers.FloatField()
    cold_starts_last_hour = serializers.IntegerField()
    errors_last_hour = serializers.IntegerField()
    p50_latency_ms_last_hour = serializers.FloatField(allow_null=True)
    p99_latency_ms_last_hour = serializers.FloatField(allow_null=True)
    p99_latency_above_slowest_bucket = serializers.BooleanField()


class TenantCostSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    usd_per_hour = serializers.FloatField()
    usd_per_month = serializers.FloatField()
    memory_mb = serializers.FloatField()


class EndpointCostSerializer(serializers.Serializer):
    endpoint = serializers.CharField()
    instance_type = serializers.CharField()
    live_instances = serializers.IntegerField()
    usd_per_hour = serializers.FloatField()


class ModelCostSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    model = serializers.CharField()
    version = serializers.IntegerField()
    usd_per_hour = serializers.FloatField()
    memory_mb = serializers.FloatField()


class FleetCostsSerializer(serializers.Serializer):
    """``GET /api/v1/fleet/costs``: actual and dedicated-baseline cost, savings, shares."""

    scope = serializers.CharField(help_text='"fleet" (platform callers) or "tenant".')
    tenants_in_scope = serializers.ListField(child=serializers.CharField())
    hours_per_month = serializers.IntegerField()
    usd_per_hour = serializers.FloatField()
    usd_per_month = serializers.FloatField()
    dedicated_usd_per_hour = serializers.FloatField()
    dedicated_usd_per_month = serializers.FloatField()
    savings = serializers.FloatField(allow_null=True)
    savings_formula = serializers.CharField()
    dedicated_baseline = serializers.CharField()
    placed_models = serializers.IntegerField()
    tenants = TenantCostSerializer(
        many=True,
        help_text="The 10 most expensive tenants in scope; all of them, a page at a time, at "
        "/api/v1/fleet/costs/tenants.",
    )
    tenants_count = serializers.IntegerField(help_text="Tenants in scope paying a share.")
    tenants_as_of = serializers.DateTimeField(
        allow_null=True,
        help_text="Fleet scope: when the minute sampler ranked the tenants' shares (null: "
        "computed for this answer).",
    )
    unattributed_usd_per_hour = serializers.FloatField(required=False)
    endpoints = EndpointCostSerializer(
        many=True,
        required=False,
        help_text="Fleet scope: the first 10 endpoints with live instances, by name; all of "
        "them at /api/v1/fleet/costs/endpoints.",
    )
    endpoints_count = serializers.IntegerField(required=False)
    models = ModelCostSerializer(many=True, required=False)


# --- Instances and the event log ---------------------------------------------------------------


class DrainedInstanceSerializer(serializers.Serializer):
    instance = serializers.CharField(help_text="The instance, as the event log names it.")
    status = serializers.ChoiceField(
        choices=Instance.Status.choices, help_text="Its status after draining."
    )


class EventSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="kind", help_text='Dotted, e.g. "training.succeeded".')
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    model = serializers.SerializerMethodField()
    version = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = [
            "id",
            "created_at",
            "type",
            "severity",
            "actor",
            "tenant",
            "model",
            "version",
            "message",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_model(self, obj: Event) -> str | None:
        return obj.version.model.name if obj.version else None

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_version(self, obj: Event) -> int | None:
        return obj.version.number if obj.version else None


class EventFilterSerializer(serializers.Serializer):
    """The event lists' filters; a bad value is a 400 naming the parameter, never echoing it."""

    type = serializers.RegexField(
        EVENT_TYPE_PATTERN,
        max_length=EVENT_TYPE_MAX_CHARS,
        required=False,
        help_text='An event type ("training.succeeded"), or a prefix ending in a dot '
        '("training.") for every type under it.',
        error_messages={
            "invalid": 'Must be an event type such as "training.succeeded", or a prefix ending '
            'in a dot such as "training.".',
            "max_length": f"Must be at most {EVENT_TYPE_MAX_CHARS} characters.",
        },
    )
    severity = serializers.ChoiceField(
        choices=Event.Severity.choices,
        required=False,
        help_text="Only events of this severity.",
        error_messages={"invalid_choice": f"Must be one of: {', '.join(Event.Severity.values)}."},
    )
    since = serializers.DateTimeField(
        required=False,
        help_text="Only events at or after this time (ISO 8601; without an offset, UTC).",
        error_messages={"invalid": "Must be an ISO 8601 time, e.g. 2026-01-31T09:00:00Z."},
    )
    until = serializers.DateTimeField(
        required=False,
        help_text="Only events before this time (ISO 8601; without an offset, UTC).",
        error_messages={"invalid": "Must be an ISO 8601 time, e.g. 2026-01-31T09:00:00Z."},
    )
