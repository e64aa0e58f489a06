"""Request and response shapes of the registry API."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob


class DatasetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV or JSON Lines with text,label (and group).")
    name = serializers.CharField(
        max_length=200, required=False, help_text="Defaults to the uploaded file's name."
    )


class DatasetSerializer(serializers.ModelSerializer):
    train_rows = serializers.SerializerMethodField()
    validation_rows = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "format",
            "status",
            "rows",
            "labels",
            "train_rows",
            "validation_rows",
            "size_bytes",
            "sha256",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField())
    def get_train_rows(self, obj: Dataset) -> int:
        return len((obj.split or {}).get("train", []))

    @extend_schema_field(serializers.IntegerField())
    def get_validation_rows(self, obj: Dataset) -> int:
        return len((obj.split or {}).get("validation", []))


class TenantModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50)
    # The service checks it against the kind registry (400 naming ``kind``): plugins add kinds.
    kind = serializers.CharField(max_length=50)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class TenantModelSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    active_version = serializers.SerializerMethodField()

    class Meta:
        model = TenantModel
        fields = ["name", "kind", "description", "tenant", "active_version", "created_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_active_version(self, obj: TenantModel) -> int | None:
        return obj.active_version.number if obj.active_version else None


class ModelVersionSerializer(serializers.ModelSerializer):
    is_active = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "number",
            "status",
            "status_reason",
            "metrics",
            "sha256",
            "size_bytes",
            "host_memory_mb",
            "gpu_memory_mb",
            "promoted_at",
            "is_active",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.BooleanField())
    def get_is_active(self, obj: ModelVersion) -> bool:
        return obj.model.active_version_id == obj.pk


class TrainingJobCreateSerializer(serializers.Serializer):
    dataset = serializers.CharField(help_text="The dataset's name or id.")
    hyperparameters = serializers.JSONField(required=False, default=dict)
    backend = serializers.ChoiceField(
        choices=TrainingJob.Backend.choices, default=TrainingJob.Backend.LOCAL
    )


class TrainingJobSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="model.tenant.slug", read_only=True)
    model = serializers.CharField(source="model.name", read_only=True)
    dataset = serializers.CharField(source="dataset.name", read_only=True)
    version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "tenant",
            "model",
            "dataset",
            "backend",
            "status",
            "progress_pct",
            "hyperparameters",
            "metrics",
            "failure_reason",
            "log_tail",
            "version",
            "attempts",
            "cancel_requested",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_version(self, obj: TrainingJob) -> int | None:
        try:
            return obj.version.number
        except ObjectDoesNotExist:
            return None


class PromoteSerializer(serializers.Serializer):
    force = serializers.BooleanField(
        default=False, help_text="Skip the quality gate (platform tokens only)."
    )
