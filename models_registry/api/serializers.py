"""Request and response shapes of the registry API."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.fields import JsonBooleanField, TextField
from models_registry.kinds import kind_names
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from models_registry.services.datasets import CONFLICTING_LABELS_CHOICES
from models_registry.training.backends.base import DEFAULT_TRAINING_BACKEND
from tenants.models import SLUG_VALIDATOR

# Dataset.name's column width: a longer uploaded file name must be refused here, not by the
# database after the file was stored.
DATASET_NAME_MAX_CHARS = 200
# Deeper hyperparameters are no real training configuration, only a way to make every later
# reader (JSON columns, the training entry point) recurse.
HYPERPARAMETERS_MAX_DEPTH = 8


class DatasetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV or JSON Lines with text,label (and group), or text,reply."
    )
    name = serializers.CharField(
        max_length=DATASET_NAME_MAX_CHARS,
        required=False,
        help_text="Defaults to the uploaded file's name.",
    )
    conflicting_labels = serializers.ChoiceField(
        choices=CONFLICTING_LABELS_CHOICES,
        required=False,
        error_messages={"invalid_choice": "Must be refuse or keep."},
        help_text="A text found under more than one label (after case and whitespace folding) "
        "refuses the file (refuse) or is kept as uploaded, with a warning (keep). Default: the "
        "platform's DATASET_CONFLICTING_LABELS.",
    )

    def validate(self, attrs: dict) -> dict:
        """The dataset's name (given, else the file's) must fit the name column."""
        if not attrs.get("name") and len(attrs["file"].name) > DATASET_NAME_MAX_CHARS:
            raise serializers.ValidationError(
                {
                    "file": f"The file name has {len(attrs['file'].name)} characters; name the "
                    f"dataset (field name, at most {DATASET_NAME_MAX_CHARS}) or rename the file."
                }
            )
        return attrs


class DatasetSerializer(serializers.ModelSerializer):
    train_rows = serializers.SerializerMethodField()
    validation_rows = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()

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
            "warnings",
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

    @extend_schema_field(
        serializers.ListField(
            child=serializers.CharField(),
            help_text="What validation changed or let through, by row number: rows dropped as "
            "repeats, texts kept under more than one label.",
        )
    )
    def get_warnings(self, obj: Dataset) -> list[str]:
        return list((obj.validation_report or {}).get("warnings", []))


class ModelKindField(TextField):
    """A model kind's name. The service checks it against the kind registry (400 naming
    ``kind``), which plugins add to; the schema lists the kinds registered when it is read."""


class ModelKindFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ModelKindField

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "enum": kind_names(), "description": "The model's kind."}


class TenantModelCreateSerializer(serializers.Serializer):
    name = TextField(max_length=50, validators=[SLUG_VALIDATOR])
    kind = ModelKindField(max_length=50)
    description = TextField(required=False, allow_blank=True, default="")


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


class HyperparametersField(serializers.JSONField):
    """Training hyperparameters: names to single values (the training service refuses nested
    ones); which names a model takes depends on its kind, checked when it trains."""


class HyperparametersFieldSchema(OpenApiSerializerFieldExtension):
    target_class = HyperparametersField

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "object",
            "description": "Names to values: a string, number, boolean or null each. Which "
            "names a model takes depends on its kind; one it does not take, or a value it "
            "refuses, is answered 400 naming it where the kind checks them up front (the "
            "intent classifier does), else fails the job, naming it. intent-classifier: "
            "max_in_scope_accuracy_loss (0-0.5, default 0.01: the in-scope accuracy the "
            "out-of-scope confidence threshold may cost; 0 turns it off), out_of_scope_label "
            "(default out_of_scope), class_weight (auto, none, balanced), l2, epochs; see "
            "docs/intent-classifier.md.",
            "additionalProperties": {
                "nullable": True,
                "anyOf": [
                    {"type": "string", "pattern": r"^[^\u0000]*$"},
                    {"type": "number"},
                    {"type": "boolean"},
                ],
            },
        }


class TrainingJobCreateSerializer(serializers.Serializer):
    dataset = serializers.CharField(max_length=200, help_text="The dataset's name or id.")
    hyperparameters = HyperparametersField(required=False, default=dict)
    backend = serializers.ChoiceField(
        choices=TrainingJob.Backend.choices, default=DEFAULT_TRAINING_BACKEND
    )

    def validate_hyperparameters(self, value):
        """Refuse what a JSON column cannot store (NUL characters) and absurd nesting."""
        _check_json_value(value, path="hyperparameters", depth=0)
        return value


def _check_json_value(value, *, path: str, depth: int) -> None:
    # PostgreSQL's jsonb refuses \u0000 in keys and strings; found here it is a 400 naming the
    # key, found by the database it would be a 500 after the request was half-processed.
    if depth > HYPERPARAMETERS_MAX_DEPTH:
        raise serializers.ValidationError(
            f"{path}: nested deeper than {HYPERPARAMETERS_MAX_DEPTH} levels."
        )
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(f"{path}: NUL characters are not allowed.")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                raise serializers.ValidationError(
                    f"{path}: key {key!r} has a NUL character; keys must be text."
                )
            _check_json_value(item, path=f"{path}.{key}", depth=depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, path=f"{path}[{index}]", depth=depth + 1)


class QualityGateOutcomeSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=TrainingJob.GateOutcome.choices,
        allow_null=True,
        help_text="promoted, held, or null until the gate has decided.",
    )
    reason = serializers.CharField(help_text="Why the gate decided so; empty until it has.")


class TrainingJobSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="model.tenant.slug", read_only=True)
    model = serializers.CharField(source="model.name", read_only=True)
    dataset = serializers.CharField(source="dataset.name", read_only=True)
    version = serializers.SerializerMethodField()
    gate = serializers.SerializerMethodField()
    deployable = serializers.SerializerMethodField()
    warm_pool_reused = serializers.BooleanField(
        read_only=True,
        allow_null=True,
        help_text="SageMaker: whether the job started on instances a finished job kept warm "
        "(SAGEMAKER_TRAINING_WARM_POOL_SECONDS); null when no warm pool was asked for or it "
        "is not known yet.",
    )
    batch_name = serializers.CharField(
        read_only=True,
        help_text="SageMaker: the multi-instance training job this job trained in with other "
        "queued jobs of its kind (docs/operations.md, Batch training); empty when it trained "
        "on its own.",
    )
    batch_host = serializers.CharField(
        read_only=True,
        help_text="The instance of that batch (algo-N) that trained this job; empty when none.",
    )

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
            "gate",
            "deployable",
            "attempts",
            "cancel_requested",
            "warm_pool_reused",
            "batch_name",
            "batch_host",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_version(self, obj: TrainingJob) -> int | None:
        version = _produced_version(obj)
        return version.number if version else None

    @extend_schema_field(QualityGateOutcomeSerializer)
    def get_gate(self, obj: TrainingJob) -> dict:
        return {"outcome": obj.gate_outcome or None, "reason": obj.gate_reason}

    @extend_schema_field(
        serializers.BooleanField(
            help_text="The job succeeded and its version is ready and its model's active one: "
            "deploying the model now serves it."
        )
    )
    def get_deployable(self, obj: TrainingJob) -> bool:
        version = _produced_version(obj)
        return (
            obj.status == TrainingJob.Status.SUCCEEDED
            and version is not None
            and version.status == ModelVersion.Status.READY
            and obj.model.active_version_id == version.pk
        )


def _produced_version(job: TrainingJob) -> ModelVersion | None:
    try:
        return job.version
    except ObjectDoesNotExist:
        return None


class PromoteSerializer(serializers.Serializer):
    force = JsonBooleanField(
        default=False, help_text="Skip the quality gate (platform tokens only)."
    )


# --- Query filters of the lists --------------------------------------------------------------


def _status_filter(status_choices) -> serializers.ChoiceField:
    values = ", ".join(value for value, _label in status_choices)
    return serializers.ChoiceField(
        choices=status_choices,
        required=False,
        help_text="Only the rows in this status.",
        # The value sent is not repeated back: it is the caller's own and may be long.
        error_messages={"invalid_choice": f"Must be one of: {values}."},
    )


class VersionFilterSerializer(serializers.Serializer):
    """``GET .../versions/?status=``; an unknown status is a 400 naming ``status``."""

    status = _status_filter(ModelVersion.Status.choices)


class TrainingJobFilterSerializer(serializers.Serializer):
    """``GET .../training-jobs/?status=``; an unknown status is a 400 naming ``status``."""

    status = _status_filter(TrainingJob.Status.choices)
