"""Operator admin for the instance catalog, endpoints, instances, placements, events and usage."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.utils.html import format_html_join
from django.utils.timesince import timesince

from config.errors import DomainError
from deployments.models import (
    BackgroundPass,
    CloudMetricMinute,
    Deployment,
    Endpoint,
    EndpointUsageMinute,
    Event,
    FleetUsageMinute,
    Instance,
    InstanceType,
    InstanceUsageMinute,
    Placement,
    ScalingPolicy,
    TenantCost,
    VersionUsageMinute,
)
from deployments.selectors.fleet import (
    endpoints_with_cost,
    instances_with_memory_use,
    memory_is_measured,
)
from deployments.selectors.rebalance import rebalance_report
from deployments.services import budgets, draining, rebalance, reconciler, retirement, rollouts
from deployments.services import scaling as scaling_policies
from deployments.services.fleet import set_placement_desired_state
from models_registry.kinds import kind_names
from tenants.admin import AddFieldsMixin, ViewOnlyAdmin, admin_actor, changelist_link, events_link

MESSAGE_PREVIEW_CHARS = 120


def ordered(model_admin: admin.ModelAdmin, request, queryset):
    """Apply the admin's ordering to a selector's queryset, as ModelAdmin.get_queryset would."""
    ordering = model_admin.get_ordering(request)
    return queryset.order_by(*ordering) if ordering else queryset


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "gpu_count",
        "gpu_name",
        "memory_per_gpu_mb",
        "gpu_memory",
        "host_memory_mb",
        "vcpus",
        "usd_per_hour",
        "is_local",
        "available",
    )
    list_filter = ("available", "is_local", "gpu_name")
    search_fields = ("name", "gpu_name", "notes")
    ordering = ("usd_per_hour", "name")
    readonly_fields = ("gpu_memory",)

    @admin.display(description="GPU memory total (MB)")
    def gpu_memory(self, obj: InstanceType) -> str:
        return f"{obj.gpu_memory_mb:,}"


# What an operator chooses when creating an endpoint; the rest is the backend's to fill in.
ENDPOINT_ADD_FIELDS = (
    "name",
    "backend",
    "mode",
    "instance_type",
    "model_kind",
    "min_instances",
    "max_instances",
    "target_memory_utilization",
    "region",
)


class EndpointForm(forms.ModelForm):
    """An endpoint serves one registered kind; the choice list comes from the kind registry."""

    model_kind = forms.ChoiceField(
        choices=lambda: [("", "---------"), *((name, name) for name in kind_names())],
        required=False,
    )

    class Meta:
        model = Endpoint
        fields = ENDPOINT_ADD_FIELDS


@admin.register(Endpoint)
class EndpointAdmin(AddFieldsMixin, admin.ModelAdmin):
    form = EndpointForm
    list_display = (
        "name",
        "backend",
        "mode",
        "status",
        "instance_type",
        "model_kind",
        "live_instance_count",
        "cost_per_hour",
    )
    list_filter = ("status", "backend", "mode", "instance_type")
    list_select_related = ("instance_type",)
    search_fields = ("name", "model_kind", "region", "external_arn")
    ordering = ("name",)
    autocomplete_fields = ("instance_type",)
    add_fields = ENDPOINT_ADD_FIELDS
    fields = (
        "name",
        "backend",
        "mode",
        "status",
        "status_reason",
        "instance_type",
        "model_kind",
        "min_instances",
        "max_instances",
        "target_memory_utilization",
        "region",
        "external_arn",
        "live_instance_count",
        "cost_per_hour",
        "links",
        "created_at",
        "updated_at",
    )
    # Backend, mode, type, kind and region shape the running endpoint; changing them is a
    # redeploy, not an edit. Status and ARN are the backend's to write.
    readonly_fields = (
        "backend",
        "mode",
        "status",
        "status_reason",
        "instance_type",
        "model_kind",
        "region",
        "external_arn",
        "live_instance_count",
        "cost_per_hour",
        "links",
        "created_at",
        "updated_at",
    )

    actions = ("show_rebalance", "rebalance_endpoints")

    def get_queryset(self, request):
        return ordered(self, request, endpoints_with_cost())

    @admin.action(description="What a rebalance would save (moves nothing)")
    def show_rebalance(self, request, queryset):
        for endpoint in queryset:
            report = rebalance_report(endpoint_id=endpoint.pk)
            for name, reason in report.skipped:
                self.message_user(request, f"{name}: not rebalanced. {reason}")
            for plan in report.endpoints:
                self.message_user(
                    request,
                    f"{plan.endpoint}: {plan.instances_now} → {plan.instances_after} instances, "
                    f"${plan.usd_per_month_saved:,.2f} a month saved, {len(plan.moves)} copies "
                    "to move.",
                )

    @admin.action(description="Rebalance (move copies, then stop the instances left empty)")
    def rebalance_endpoints(self, request, queryset):
        actor = admin_actor(request)
        for endpoint in queryset:
            report = rebalance.request_rebalance(actor=actor, endpoint_id=endpoint.pk)
            self.message_user(
                request,
                f"{endpoint}: rebalance requested ({report.copies_moved} copies to move, "
                f"{report.instances_saved} instances to stop); the events say what was done.",
                level=messages.SUCCESS,
            )

    @admin.display(description="Live instances", ordering="live_instances")
    def live_instance_count(self, obj: Endpoint) -> str:
        return f"{obj.live_instances} (min {obj.min_instances}, max {obj.max_instances})"

    @admin.display(description="Cost per hour (USD)", ordering="usd_per_hour")
    def cost_per_hour(self, obj: Endpoint) -> str:
        return f"${obj.usd_per_hour or 0:,.4f}"

    @admin.display(description="Related")
    def links(self, obj: Endpoint) -> str:
        return format_html_join(
            " · ",
            "{}",
            (
                (changelist_link(view=view, label=label, endpoint__id__exact=obj.pk),)
                for view, label in (
                    ("deployments_instance", "Instances"),
                    ("deployments_placement", "Placements"),
                    ("deployments_event", "Events"),
                )
            ),
        )


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "status",
        "host",
        "port",
        "memory",
        "models_loaded",
        "restarts",
        "last_health_at",
    )
    list_filter = ("status", "endpoint")
    list_select_related = ("endpoint", "endpoint__instance_type")
    search_fields = ("endpoint__name", "host", "external_id")
    ordering = ("endpoint__name", "ordinal")
    fields = (
        "endpoint",
        "ordinal",
        "status",
        "status_reason",
        "host",
        "port",
        "metrics_port",
        "pid",
        "external_id",
        "memory_budget_mb",
        "memory",
        "models_loaded",
        "restarts",
        "started_at",
        "last_health_at",
        "created_at",
        "updated_at",
        "events",
    )
    # Only the memory budget is the operator's to set; the rest is what the backend reports.
    readonly_fields = tuple(field for field in fields if field != "memory_budget_mb")
    actions = ("drain_instances", "reconcile_now")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "memory_budget_mb" in form.changed_data:
            budgets.memory_budget_edited(instance=obj, actor=admin_actor(request))

    @admin.action(description="Drain (move models to other instances, then stop)")
    def drain_instances(self, request, queryset):
        actor = admin_actor(request)
        for instance in queryset:
            try:
                draining.drain_instance(instance=instance, actor=actor)
            except DomainError as exc:
                self.message_user(request, f"{instance}: {exc.message}", level=messages.ERROR)
                continue
            self.message_user(request, f"{instance} drained and stopped.", level=messages.SUCCESS)

    @admin.action(description="Reconcile the fleet now")
    def reconcile_now(self, request, queryset):
        report = reconciler.reconcile_fleet()
        summary = (
            f"Checked {report.instances_checked} instances: restarted "
            f"{len(report.instances_restarted)}, started {len(report.instances_started)}, "
            f"reloaded {len(report.reloaded)} models, unloaded {len(report.orphans_unloaded)} "
            f"orphans."
        )
        level = messages.WARNING if report.errors else messages.SUCCESS
        self.message_user(request, summary + " ".join(report.errors), level=level)

    def get_queryset(self, request):
        return ordered(self, request, instances_with_memory_use())

    def has_add_permission(self, request) -> bool:
        # Instances exist because the backend started a Triton process or an EC2 host.
        return False

    @admin.display(description="Memory used / budget", ordering="memory_used_mb")
    def memory(self, obj: Instance) -> str:
        if not memory_is_measured(obj):
            # A SageMaker host: the platform cannot see what it holds.
            return f"not measured / {obj.memory_budget_mb:,} MB"
        used = obj.memory_used_mb
        budget = obj.memory_budget_mb
        return f"{used:,.0f} / {budget:,} MB ({100 * used / budget:.0f} %)"

    @admin.display(description="Models loaded", ordering="models_loaded")
    def models_loaded(self, obj: Instance) -> int:
        return obj.models_loaded

    @admin.display(description="Events")
    def events(self, obj: Instance) -> str:
        return events_link(label=f"Events for {obj}", instance__id__exact=obj.pk)


@admin.register(Placement)
class PlacementAdmin(admin.ModelAdmin):
    list_display = (
        "version",
        "tenant",
        "endpoint",
        "instance",
        "desired_state",
        "pinned",
        "actual_state",
        "host_memory_mb",
        "last_invoked_at",
        "loaded_at",
    )
    list_filter = ("desired_state", "actual_state", "endpoint")
    list_select_related = ("version__model__tenant", "endpoint", "instance__endpoint")
    search_fields = (
        "version__model__name",
        "version__model__tenant__slug",
        "endpoint__name",
        "external_name",
    )
    ordering = ("endpoint__name", "-last_invoked_at")
    fields = (
        "version",
        "tenant",
        "endpoint",
        "instance",
        "desired_state",
        "pinned",
        "actual_state",
        "copies",
        "min_copies",
        "host_memory_mb",
        "gpu_memory_mb",
        "load_time_ms",
        "last_invoked_at",
        "loaded_at",
        "retries",
        "failure_reason",
        "external_name",
        "created_at",
        "updated_at",
    )
    # Where a placement lives is the solver's decision and its state the reconciler's; the desired
    # state changes through the actions so each change is recorded as an event.
    readonly_fields = tuple(field for field in fields if field not in ("copies", "min_copies"))
    actions = ("pin_placements", "unpin_placements", "unload_placements")

    def has_add_permission(self, request) -> bool:
        # Placements come from deploying a version, which picks the endpoint and instance.
        return False

    @admin.display(description="Tenant", ordering="version__model__tenant__slug")
    def tenant(self, obj: Placement) -> str:
        return obj.version.model.tenant.slug

    @admin.display(description="Pinned", boolean=True, ordering="desired_state")
    def pinned(self, obj: Placement) -> bool:
        return obj.is_pinned

    def _set_desired_state(self, request, queryset, desired_state: str) -> None:
        actor = admin_actor(request)
        count = 0
        for placement in queryset:
            set_placement_desired_state(
                placement=placement, desired_state=desired_state, actor=actor
            )
            count += 1
        self.message_user(
            request,
            f"Set {count} placement(s) to {Placement.DesiredState(desired_state).label}.",
            level=messages.SUCCESS,
        )

    @admin.action(description="Pin (never evict)", permissions=["change"])
    def pin_placements(self, request, queryset):
        self._set_desired_state(request, queryset, Placement.DesiredState.PINNED)

    @admin.action(description="Unpin (loaded, evictable)", permissions=["change"])
    def unpin_placements(self, request, queryset):
        self._set_desired_state(request, queryset, Placement.DesiredState.LOADED)

    @admin.action(description="Unload", permissions=["change"])
    def unload_placements(self, request, queryset):
        self._set_desired_state(request, queryset, Placement.DesiredState.UNLOADED)


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = (
        "model",
        "mode",
        "backend",
        "status",
        "live",
        "target",
        "previous",
        "endpoint",
        "live_since",
    )
    list_filter = ("status", "mode", "backend")
    list_select_related = (
        "model__tenant",
        "endpoint",
        "live_version",
        "target_version",
        "previous_version",
    )
    search_fields = ("model__name", "model__tenant__slug", "endpoint__name")
    fields = (
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
        "attempts",
        "rollout_started_at",
        "live_since",
        "capture_enabled",
        "capture_sample_percent",
        "capture_retention_days",
        "capture_records_written",
        "capture_records_dropped",
        "created_at",
        "updated_at",
    )
    # Deployments change through the API, the dashboard or these actions, so each change is a
    # recorded rollout rather than an edited row; only request capture's settings are edited
    # here (saved through the capture service, which records the change).
    readonly_fields = tuple(
        name
        for name in fields
        if name not in ("capture_enabled", "capture_sample_percent", "capture_retention_days")
    )
    actions = ("roll_back", "redeploy_active", "retire")

    def has_add_permission(self, request) -> bool:
        return False

    def save_model(self, request, obj: Deployment, form, change: bool) -> None:
        from deployments.services.capture import update_capture_settings

        update_capture_settings(
            deployment=Deployment.objects.get(pk=obj.pk),
            actor=admin_actor(request),
            enabled=form.cleaned_data["capture_enabled"],
            sample_percent=form.cleaned_data["capture_sample_percent"],
            retention_days=form.cleaned_data["capture_retention_days"],
        )

    @admin.display(description="Live", ordering="live_version__number")
    def live(self, obj: Deployment) -> str:
        return f"v{obj.live_version.number}" if obj.live_version else "—"

    @admin.display(description="Rolling out")
    def target(self, obj: Deployment) -> str:
        return f"v{obj.target_version.number}" if obj.target_version else "—"

    @admin.display(description="Kept for rollback")
    def previous(self, obj: Deployment) -> str:
        return f"v{obj.previous_version.number}" if obj.previous_version else "—"

    def _each(self, request, queryset, action, done: str) -> None:
        actor = admin_actor(request)
        for deployment in queryset.select_related("model__tenant", "model__active_version"):
            try:
                action(deployment, actor)
            except DomainError as exc:
                self.message_user(
                    request, f"{deployment.model}: {exc.message}", level=messages.ERROR
                )
                continue
            self.message_user(request, f"{deployment.model}: {done}", level=messages.SUCCESS)

    @admin.action(description="Roll back to the version kept loaded", permissions=["change"])
    def roll_back(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda d, actor: rollouts.rollback_deployment(model=d.model, actor=actor),
            "rollback queued.",
        )

    @admin.action(description="Deploy the active version again", permissions=["change"])
    def redeploy_active(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda d, actor: rollouts.request_deployment(model=d.model, actor=actor),
            "rollout queued.",
        )

    @admin.action(description="Retire: stop serving and unload every copy", permissions=["change"])
    def retire(self, request, queryset):
        self._each(
            request,
            queryset,
            lambda d, actor: retirement.retire_deployment(model=d.model, actor=actor),
            "retired; its copies are being unloaded.",
        )


@admin.register(Event)
class EventAdmin(ViewOnlyAdmin):
    list_display = (
        "created_at",
        "severity",
        "kind",
        "actor",
        "tenant",
        "endpoint",
        "instance",
        "message_preview",
    )
    list_filter = ("severity", "kind", "actor", "tenant", "endpoint")
    list_select_related = ("tenant", "endpoint", "instance__endpoint")
    search_fields = ("kind", "actor", "message", "tenant__slug")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    fields = (
        "created_at",
        "severity",
        "kind",
        "actor",
        "message",
        "tenant",
        "version",
        "endpoint",
        "instance",
        "data",
    )
    readonly_fields = fields

    @admin.display(description="Message")
    def message_preview(self, obj: Event) -> str:
        if len(obj.message) <= MESSAGE_PREVIEW_CHARS:
            return obj.message
        return obj.message[: MESSAGE_PREVIEW_CHARS - 1] + "…"


@admin.register(InstanceUsageMinute)
class InstanceUsageMinuteAdmin(ViewOnlyAdmin):
    list_display = (
        "minute",
        "instance",
        "host_memory_used_mb",
        "gpu_memory_used_mb",
        "models_loaded",
        "invocations",
        "cold_starts",
    )
    list_filter = ("instance__endpoint",)
    list_select_related = ("instance__endpoint",)
    search_fields = ("instance__endpoint__name", "instance__host")
    date_hierarchy = "minute"
    ordering = ("-minute",)
    fields = (
        "instance",
        "minute",
        "host_memory_used_mb",
        "gpu_memory_used_mb",
        "models_loaded",
        "invocations",
        "cold_starts",
    )
    readonly_fields = fields


@admin.register(VersionUsageMinute)
class VersionUsageMinuteAdmin(ViewOnlyAdmin):
    list_display = (
        "minute",
        "tenant",
        "version",
        "endpoint",
        "invocations",
        "errors",
        "cold_starts",
        "cache_hits",
        "mean_latency_ms",
        "latency_ms_max",
    )
    list_filter = ("endpoint",)
    list_select_related = ("tenant", "version__model__tenant", "endpoint")
    search_fields = ("tenant__slug", "version__model__name", "endpoint__name")
    date_hierarchy = "minute"
    ordering = ("-minute",)
    fields = (
        "minute",
        "tenant",
        "version",
        "endpoint",
        "invocations",
        "errors",
        "cold_starts",
        "cache_hits",
        "latency_ms_sum",
        "mean_latency_ms",
        "latency_ms_max",
        "latency_histogram",
    )
    readonly_fields = fields

    @admin.display(description="Mean latency (ms)")
    def mean_latency_ms(self, obj: VersionUsageMinute) -> str | None:
        if not obj.invocations:
            return None
        return f"{obj.latency_ms_sum / obj.invocations:,.1f}"


@admin.register(EndpointUsageMinute)
class EndpointUsageMinuteAdmin(ViewOnlyAdmin):
    list_display = ("minute", "endpoint", "invocations", "errors", "cold_starts", "latency_ms_max")
    list_filter = ("endpoint",)
    list_select_related = ("endpoint",)
    search_fields = ("endpoint__name",)
    date_hierarchy = "minute"
    ordering = ("-minute",)
    fields = (
        "minute",
        "endpoint",
        "invocations",
        "errors",
        "cold_starts",
        "cache_hits",
        "latency_ms_sum",
        "latency_ms_max",
        "latency_histogram",
    )
    readonly_fields = fields


@admin.register(CloudMetricMinute)
class CloudMetricMinuteAdmin(ViewOnlyAdmin):
    """CloudWatch's figures for SageMaker endpoints, as the cloud-metrics pass read them."""

    list_display = ("minute", "endpoint", "component", "metric", "statistic", "value", "unit")
    list_filter = ("metric", "endpoint")
    list_select_related = ("endpoint",)
    search_fields = ("endpoint__name", "component", "metric")
    date_hierarchy = "minute"
    ordering = ("-minute",)
    fields = ("minute", "endpoint", "component", "metric", "statistic", "value", "unit")
    readonly_fields = fields


@admin.register(FleetUsageMinute)
class FleetUsageMinuteAdmin(ViewOnlyAdmin):
    list_display = (
        "minute",
        "instances",
        "host_memory_used_mb",
        "host_memory_budget_mb",
        "models_loaded",
        "models_placed",
        "usd_per_hour",
        "dedicated_usd_per_hour",
    )
    date_hierarchy = "minute"
    ordering = ("-minute",)
    fields = (
        "minute",
        "instances",
        "memory_measured_instances",
        "host_memory_used_mb",
        "host_memory_budget_mb",
        "gpu_memory_used_mb",
        "gpu_memory_budget_mb",
        "models_loaded",
        "models_placed",
        "usd_per_hour",
        "dedicated_usd_per_hour",
    )
    readonly_fields = fields


@admin.register(BackgroundPass)
class BackgroundPassAdmin(ViewOnlyAdmin):
    """The last pass of each periodic job: an operator sees at once whether the reconciler, the
    warm-up, the sampler and the usage flush keep up with the fleet."""

    list_display = (
        "job",
        "finished_at",
        "finished_ago",
        "duration_s",
        "items",
        "queries",
        "errors",
        "succeeded",
        "passes",
    )
    search_fields = ("job",)
    ordering = ("job",)
    fields = (
        "job",
        "started_at",
        "finished_at",
        "finished_ago",
        "duration_s",
        "items",
        "queries",
        "errors",
        "succeeded",
        "passes",
        "summary",
    )
    readonly_fields = fields

    @admin.display(description="Finished", ordering="finished_at")
    def finished_ago(self, obj: BackgroundPass) -> str:
        # A job that stopped running shows as a pass that grows old, not as an error.
        return f"{timesince(obj.finished_at)} ago"


@admin.register(TenantCost)
class TenantCostAdmin(ViewOnlyAdmin):
    """Each tenant's share of the fleet's cost as of the minute sampler's last pass."""

    list_display = ("slug", "usd_per_hour", "memory_mb")
    list_select_related = ("tenant",)
    search_fields = ("slug",)
    ordering = ("-rank_usd_per_hour", "slug")
    fields = ("tenant", "slug", "usd_per_hour", "rank_usd_per_hour", "memory_mb")
    readonly_fields = fields


# What an operator may change of a registered scaling policy; the rest says what it is.
SCALING_POLICY_EDITABLE = (
    "target_value",
    "min_capacity",
    "max_capacity",
    "scale_in_cooldown_s",
    "scale_out_cooldown_s",
)


class ScalingPolicyForm(forms.ModelForm):
    """An edit checked against the platform's rules before anything reaches AWS."""

    class Meta:
        model = ScalingPolicy
        fields = SCALING_POLICY_EDITABLE

    def edit(self) -> scaling_policies.PolicyEdit:
        return scaling_policies.PolicyEdit(
            **{name: self.cleaned_data.get(name) for name in SCALING_POLICY_EDITABLE}
        )

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            try:
                scaling_policies.validate_edit(policy=self.instance, edit=self.edit())
            except DomainError as exc:
                self.add_error(exc.field, exc.message)
        return cleaned


@admin.register(ScalingPolicy)
class ScalingPolicyAdmin(admin.ModelAdmin):
    form = ScalingPolicyForm
    list_display = (
        "policy_name",
        "endpoint",
        "model",
        "policy_type",
        "metric",
        "target_value",
        "capacity",
        "operator_edited",
        "applied_at",
        "refused",
    )
    list_filter = ("policy_type", "metric", "operator_edited", "endpoint")
    list_select_related = ("endpoint", "model__tenant")
    search_fields = ("policy_name", "resource_id", "endpoint__name", "model__name", "metric")
    ordering = ("resource_id", "policy_name")
    fields = (
        "policy_name",
        "endpoint",
        "model",
        "resource_id",
        "scalable_dimension",
        "policy_type",
        "metric",
        *SCALING_POLICY_EDITABLE,
        "basis",
        "operator_edited",
        "policy_arn",
        "alarm_name",
        "applied_at",
        "apply_error",
        "created_at",
        "updated_at",
    )
    readonly_fields = tuple(field for field in fields if field not in SCALING_POLICY_EDITABLE)

    def has_add_permission(self, request) -> bool:
        # The platform registers policies when it rolls a model out; an operator tunes them.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A policy goes with its endpoint or component; deleting the row alone would leave the
        # policy scaling in the account with nothing showing it.
        return False

    @admin.display(description="Min–max")
    def capacity(self, obj: ScalingPolicy) -> str:
        return f"{obj.min_capacity}–{obj.max_capacity}"

    @admin.display(description="AWS refused it", boolean=True)
    def refused(self, obj: ScalingPolicy) -> bool:
        return bool(obj.apply_error)

    def save_model(self, request, obj, form, change):
        # The service saves the edit and applies it to AWS; the form's instance then shows
        # what the row holds (apply_error included).
        saved = scaling_policies.update_policy(
            policy=obj, edit=form.edit(), actor=admin_actor(request)
        )
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))

    def response_change(self, request, obj):
        if obj.apply_error:
            self.message_user(
                request,
                f"Saved as the operator's values, but AWS refused them: {obj.apply_error}",
                level=messages.ERROR,
            )
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)
