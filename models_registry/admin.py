"""Operator admin for datasets, tenant models, training jobs and model versions."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from config.errors import DomainError
from models_registry.exceptions import JobNotCancellable
from models_registry.kinds import kind_names
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from models_registry.services.datasets import check_dataset_content, create_dataset
from models_registry.services.promotion import promote_version, rollback_model
from models_registry.services.registry import create_model
from models_registry.services.training import request_training_cancel
from tenants.admin import AddFieldsMixin, admin_actor, adopt_saved, events_link

MB = 1024 * 1024
METRICS_SHOWN = 4


def size_in_mb(size_bytes: int) -> str:
    return f"{size_bytes / MB:,.1f} MB"


def kind_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in kind_names()]


class ViewOnceCreatedMixin:
    """Rows the platform writes in full (jobs, versions): their pages are view-only, while the
    changelist keeps the change permission its actions need."""

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        return False


class DatasetUploadForm(forms.ModelForm):
    """Tenant, name and the file; the file is validated on the form so problems show beside it."""

    file = forms.FileField(
        help_text="CSV or JSON Lines with text,label (and group for embeddings), or text,reply.",
    )

    class Meta:
        model = Dataset
        fields = ("tenant", "name")

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is None:
            return cleaned
        content = upload.read()
        try:
            check_dataset_content(
                name=cleaned.get("name") or upload.name, content=content, filename=upload.name
            )
        except DomainError as exc:
            self.add_error("file" if exc.field in (None, "file") else exc.field, exc.message)
        cleaned["content"] = content
        return cleaned


@admin.register(Dataset)
class DatasetAdmin(AddFieldsMixin, admin.ModelAdmin):
    list_display = ("name", "tenant", "format", "status", "rows", "size", "created_at")
    list_filter = ("status", "format", "created_at")
    list_select_related = ("tenant",)
    search_fields = ("name", "tenant__slug", "sha256")
    ordering = ("-created_at",)
    autocomplete_fields = ("tenant",)
    add_fields = ("tenant", "name", "file")
    # The split holds every row index, which is too long to be useful on a page.
    fields = (
        "tenant",
        "name",
        "format",
        "status",
        "storage_uri",
        "size_bytes",
        "sha256",
        "rows",
        "labels",
        "split_sizes",
        "validation_report",
        "created_at",
    )
    # Everything but the name comes from the uploaded file's validation.
    readonly_fields = tuple(field for field in fields if field != "name")

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, obj: Dataset) -> str:
        return size_in_mb(obj.size_bytes)

    @admin.display(description="Train / validation rows")
    def split_sizes(self, obj: Dataset) -> str:
        split = obj.split or {}
        return f"{len(split.get('train', []))} / {len(split.get('validation', []))}"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DatasetUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        upload = form.cleaned_data["file"]
        dataset = create_dataset(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            content=form.cleaned_data["content"],
            filename=upload.name,
            actor=admin_actor(request),
        )
        adopt_saved(obj, dataset)


class TenantModelForm(forms.ModelForm):
    """Kinds come from the plugin registry, so the choice list is built at form time."""

    kind = forms.ChoiceField(choices=kind_choices)

    class Meta:
        model = TenantModel
        fields = ("tenant", "name", "kind", "description")


@admin.register(TenantModel)
class TenantModelAdmin(AddFieldsMixin, admin.ModelAdmin):
    form = TenantModelForm
    list_display = ("name", "tenant", "kind", "active_version_number", "created_at", "updated_at")
    list_filter = ("kind",)
    list_select_related = ("tenant", "active_version")
    search_fields = ("name", "tenant__slug", "description")
    ordering = ("tenant__slug", "name")
    autocomplete_fields = ("tenant",)
    add_fields = ("tenant", "name", "kind", "description")
    fields = (
        "tenant",
        "name",
        "kind",
        "description",
        "active_version",
        "created_at",
        "updated_at",
        "events",
    )
    # The name is part of every Triton model name, the kind fixes the artifact format, and the
    # active version changes only by promotion.
    readonly_fields = (
        "tenant",
        "name",
        "kind",
        "active_version",
        "created_at",
        "updated_at",
        "events",
    )

    actions = ("roll_back",)

    @admin.action(
        description="Roll back to the previously promoted version", permissions=["change"]
    )
    def roll_back(self, request, queryset):
        actor = admin_actor(request)
        for model in queryset:
            try:
                version = rollback_model(model=model, actor=actor)
            except DomainError as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
            else:
                self.message_user(
                    request, f"{model} now serves v{version.number}.", level=messages.SUCCESS
                )

    @admin.display(description="Active version", ordering="active_version__number")
    def active_version_number(self, obj: TenantModel) -> str | None:
        return f"v{obj.active_version.number}" if obj.active_version else None

    @admin.display(description="Events")
    def events(self, obj: TenantModel) -> str:
        return events_link(label=f"Events for {obj.tenant.slug}", tenant__id__exact=obj.tenant_id)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        model = create_model(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            kind=form.cleaned_data["kind"],
            description=form.cleaned_data["description"],
            actor=admin_actor(request),
        )
        adopt_saved(obj, model)


@admin.register(TrainingJob)
class TrainingJobAdmin(ViewOnceCreatedMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "model",
        "dataset_name",
        "backend",
        "status",
        "progress",
        "cancel_requested",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "backend", "cancel_requested", "warm_pool_reused")
    list_select_related = ("model__tenant", "dataset")
    search_fields = (
        "model__name",
        "model__tenant__slug",
        "external_id",
        "idempotency_key",
        "batch_name",
    )
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "model",
        "dataset",
        "backend",
        "status",
        "progress",
        "cancel_requested",
        "external_id",
        "warm_pool_reused",
        "batch_name",
        "batch_host",
        "hyperparameters",
        "metrics",
        "failure_reason",
        "gate_outcome",
        "gate_reason",
        "log_tail",
        "idempotency_key",
        "attempts",
        "packaging_attempts",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    )
    readonly_fields = fields
    actions = ("cancel_jobs",)

    @admin.display(description="Dataset", ordering="dataset__name")
    def dataset_name(self, obj: TrainingJob) -> str:
        return obj.dataset.name

    @admin.display(description="Progress", ordering="progress_pct")
    def progress(self, obj: TrainingJob) -> str:
        return f"{obj.progress_pct} %"

    @admin.action(description="Cancel selected training jobs", permissions=["change"])
    def cancel_jobs(self, request, queryset):
        actor = admin_actor(request)
        cancelled = 0
        for job in queryset:
            try:
                request_training_cancel(job=job, actor=actor)
            except JobNotCancellable as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
            else:
                cancelled += 1
        if cancelled:
            self.message_user(
                request, f"Cancellation requested for {cancelled} job(s).", level=messages.SUCCESS
            )


@admin.register(ModelVersion)
class ModelVersionAdmin(ViewOnceCreatedMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "tenant",
        "status",
        "measured_memory",
        "size",
        "metrics_summary",
        "promoted_at",
        "created_at",
    )
    list_filter = ("status", "model__kind")
    list_select_related = ("model__tenant",)
    search_fields = ("model__name", "model__tenant__slug", "sha256")
    ordering = ("-created_at",)
    fields = (
        "model",
        "tenant",
        "number",
        "status",
        "status_reason",
        "training_job",
        "artifact_uri",
        "package_uri",
        "sha256",
        "size",
        "measured_memory",
        "metrics_summary",
        "metrics",
        "promoted_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    actions = ("promote", "promote_over_gate")

    def _promote(self, request, queryset, *, force: bool) -> None:
        actor = admin_actor(request)
        for version in queryset.select_related("model"):
            try:
                promote_version(version=version, actor=actor, force=force)
            except DomainError as exc:
                self.message_user(request, f"{version}: {exc.message}", level=messages.WARNING)
            else:
                self.message_user(request, f"{version} promoted.", level=messages.SUCCESS)

    @admin.action(description="Promote (the quality gate applies)", permissions=["change"])
    def promote(self, request, queryset):
        self._promote(request, queryset, force=False)

    @admin.action(description="Promote, skipping the quality gate", permissions=["change"])
    def promote_over_gate(self, request, queryset):
        self._promote(request, queryset, force=True)

    @admin.display(description="Tenant", ordering="model__tenant__slug")
    def tenant(self, obj: ModelVersion) -> str:
        return obj.model.tenant.slug

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, obj: ModelVersion) -> str:
        return size_in_mb(obj.size_bytes)

    @admin.display(description="Measured memory", ordering="host_memory_mb")
    def measured_memory(self, obj: ModelVersion) -> str | None:
        if obj.host_memory_mb is None and obj.gpu_memory_mb is None:
            return None  # not loaded yet: placement waits for the first measurement
        parts = []
        if obj.host_memory_mb is not None:
            parts.append(f"{obj.host_memory_mb:,.0f} MB host")
        if obj.gpu_memory_mb:
            parts.append(f"{obj.gpu_memory_mb:,.0f} MB GPU")
        return ", ".join(parts) or None

    @admin.display(description="Metrics")
    def metrics_summary(self, obj: ModelVersion) -> str | None:
        metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
        parts = []
        for key, value in metrics.items():
            # Nested figures (per-label scores, confusion matrices) stay on the detail page.
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            parts.append(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value:.4g}")
            if len(parts) == METRICS_SHOWN:
                break
        return ", ".join(parts) or None
