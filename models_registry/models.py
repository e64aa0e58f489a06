"""Tenants' datasets, models, versions and the training jobs that produce versions."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from tenants.models import SLUG_VALIDATOR, Tenant


class Dataset(models.Model):
    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSONL = "jsonl", "JSON Lines"

    class Status(models.TextChoices):
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=8, choices=Format.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.VALID)
    storage_uri = models.CharField(
        max_length=1024, help_text="Where the file lives in the artifact store."
    )
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    rows = models.PositiveIntegerField(default=0)
    # {"label": count}; for the embedding kind also the number of positive-pair groups.
    labels = models.JSONField(default=dict, blank=True)
    validation_report = models.JSONField(default=dict, blank=True)
    # Row indexes of the stratified train/validation split, fixed at upload so every job agrees.
    split = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], name="dataset_unique_name_per_tenant"
            ),
            models.CheckConstraint(
                condition=Q(size_bytes__gte=0), name="dataset_size_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(format__in=["csv", "jsonl"]), name="dataset_format_valid"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "sha256"], name="dataset_tenant_sha256")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class TenantModel(models.Model):
    """A tenant's named model (e.g. "intents"); its versions are what gets served."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=50, validators=[SLUG_VALIDATOR])
    # A key in the model-kind registry ("intent-classifier", "embedding", ...); plugins add kinds,
    # so it is validated by the registry rather than by database choices.
    kind = models.CharField(max_length=50)
    description = models.TextField(blank=True)
    active_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="model_unique_name_per_tenant"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class TrainingJob(models.Model):
    class Backend(models.TextChoices):
        LOCAL = "local", "Local process"
        SAGEMAKER = "sagemaker", "SageMaker training job"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        LAUNCHING = "launching", "Launching"
        RUNNING = "running", "Running"
        # Trained; its version is registered and is being packaged and put to the quality gate.
        PACKAGING = "packaging", "Packaging"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class GateOutcome(models.TextChoices):
        PROMOTED = "promoted", "Promoted"
        HELD = "held", "Held back"

    TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

    model = models.ForeignKey(TenantModel, on_delete=models.CASCADE, related_name="training_jobs")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="training_jobs")
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.LOCAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # Process id for local jobs, training-job ARN for SageMaker.
    external_id = models.CharField(max_length=512, blank=True)
    progress_pct = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    hyperparameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True)
    failure_reason = models.TextField(blank=True)
    # The client's (or the platform's) key; a re-delivered message or a double click finds the
    # existing job through it instead of launching a second one.
    idempotency_key = models.CharField(max_length=128)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Packaging runs of the trained version: the first, plus one resumed after a lost worker.
    packaging_attempts = models.PositiveSmallIntegerField(default=0)
    # What the quality gate decided for the version this job produced, written in the same
    # transaction as the decision itself (and as the job's success).
    gate_outcome = models.CharField(max_length=16, choices=GateOutcome.choices, blank=True)
    gate_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # SageMaker warm pools: whether the job ran on instances a finished job kept provisioned
    # (null: not known, or no warm pool was asked for).
    warm_pool_reused = models.BooleanField(null=True, blank=True)
    # A job trained together with others in one multi-instance training job: that job's name
    # and the host (``algo-N``) that trained this one; empty for a job launched on its own.
    batch_name = models.CharField(max_length=63, blank=True, db_index=True)
    batch_host = models.CharField(max_length=16, blank=True)
    # When what the finished job left in the cloud (inputs, an output no version took) was
    # deleted; null until the training reconciler has done it.
    resources_released_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "idempotency_key"], name="trainingjob_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(progress_pct__gte=0) & Q(progress_pct__lte=100),
                name="trainingjob_progress_is_percent",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "queued",
                        "launching",
                        "running",
                        "packaging",
                        "succeeded",
                        "failed",
                        "cancelled",
                    ]
                ),
                name="trainingjob_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(gate_outcome__in=["", "promoted", "held"]),
                name="trainingjob_gate_outcome_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="trainingjob_status_heartbeat")
        ]

    def __str__(self) -> str:
        return f"job {self.pk} for {self.model}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


def triton_model_name(*, tenant_slug: str, model_name: str, number: int) -> str:
    """The name a model version has inside a Triton server: unique across tenants."""
    return f"{tenant_slug}.{model_name}.v{number}"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        REGISTERED = "registered", "Registered"
        PACKAGING = "packaging", "Packaging"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        RETIRED = "retired", "Retired"

    model = models.ForeignKey(TenantModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REGISTERED)
    training_job = models.OneToOneField(
        TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="version"
    )
    artifact_uri = models.CharField(
        max_length=1024, blank=True, help_text="Trained artifact directory."
    )
    package_uri = models.CharField(max_length=1024, blank=True, help_text="Triton model.tar.gz.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="Of the Triton package.")
    size_bytes = models.BigIntegerField(default=0)
    # The package built for a serving image (SageMaker's Triton container): the Triton package
    # plus the kind's runtime layer for that image's Python, and which image it was built for.
    image_package_uri = models.CharField(max_length=1024, blank=True)
    image_package_sha256 = models.CharField(max_length=64, blank=True)
    image_package_size_bytes = models.BigIntegerField(default=0)
    image_uri = models.CharField(max_length=512, blank=True)
    image_python = models.CharField(max_length=8, blank=True)
    # Measured on first load, never guessed: placement packs by these figures.
    host_memory_mb = models.FloatField(null=True, blank=True)
    gpu_memory_mb = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # The Triton tensors of the package ({"inputs"|"outputs": [{name, datatype, shape}]}), so the
    # inference proxy answers Open Inference Protocol metadata without opening the package.
    signature = models.JSONField(default=dict, blank=True)
    # Why the quality gate held the version back, or why it failed.
    status_reason = models.TextField(blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "number"], name="version_unique_number_per_model"
            ),
            models.CheckConstraint(condition=Q(number__gte=1), name="version_number_positive"),
            models.CheckConstraint(
                condition=Q(size_bytes__gte=0), name="version_size_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(host_memory_mb__isnull=True) | Q(host_memory_mb__gte=0),
                name="version_host_memory_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(gpu_memory_mb__isnull=True) | Q(gpu_memory_mb__gte=0),
                name="version_gpu_memory_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["registered", "packaging", "ready", "failed", "retired"]),
                name="version_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} v{self.number}"

    @property
    def triton_model_name(self) -> str:
        """The name the model has inside a Triton server (unique across tenants)."""
        return triton_model_name(
            tenant_slug=self.model.tenant.slug, model_name=self.model.name, number=self.number
        )
