"""Deployment and inference request/answer shapes."""

from __future__ import annotations

from rest_framework import serializers

from deployments.models import Deployment, Endpoint


class DeploymentRequestSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="Version number; default: the active version."
    )
    mode = serializers.ChoiceField(
        choices=Endpoint.Mode.values,
        required=False,
        help_text="mme (shared multi-model), inference-component or dedicated; default: the "
        "current deployment's mode, or mme.",
    )
    replicas = serializers.IntegerField(required=False, min_value=1, max_value=8)


def _number(version) -> int | None:
    return version.number if version is not None else None


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    tenant = serializers.CharField(source="model.tenant.slug", read_only=True)
    endpoint = serializers.CharField(source="endpoint.name", read_only=True, default=None)
    live_version = serializers.SerializerMethodField()
    target_version = serializers.SerializerMethodField()
    previous_version = serializers.SerializerMethodField()

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
            "updated_at",
        ]
        read_only_fields = fields

    def get_live_version(self, obj: Deployment) -> int | None:
        return _number(obj.live_version)

    def get_target_version(self, obj: Deployment) -> int | None:
        return _number(obj.target_version)

    def get_previous_version(self, obj: Deployment) -> int | None:
        return _number(obj.previous_version)


class InvokeRequestSerializer(serializers.Serializer):
    inputs = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, help_text="One item per input."
    )


class InvokeResponseSerializer(serializers.Serializer):
    outputs = serializers.ListField(child=serializers.JSONField())
    model_version = serializers.IntegerField()
    cold_start = serializers.BooleanField()


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
