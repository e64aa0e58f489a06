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
