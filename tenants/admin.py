"""Operator admin for tenants, their API tokens and dashboard memberships.

Also home to the small helpers every app's admin shares (actor naming, service-created adds,
view-only tables), since the other apps already depend on tenants.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from tenants.models import ApiToken, Membership, Tenant
from tenants.services import create_tenant, issue_token, revoke_token, set_tenant_status

# Event.actor holds 64 characters; a long username must not make the service's write fail.
ACTOR_MAX_LENGTH = 64


def admin_actor(request: HttpRequest) -> str:
    """The actor string services record for an operator acting in the admin."""
    return f"admin:{request.user.get_username()}"[:ACTOR_MAX_LENGTH]


def adopt_saved(obj: models.Model, saved: models.Model) -> None:
    """Make the admin's unsaved form instance stand for the row a service created.

    The admin logs the addition and redirects using the instance it built from the form, so it
    needs the primary key and every value the service filled in.
    """
    for field in obj._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


def changelist_link(*, view: str, label: str, **filters: object) -> str:
    """A link to an admin changelist (``view`` like "deployments_event") filtered by ``filters``."""
    url = f"{reverse(f'admin:{view}_changelist')}?{urlencode(filters)}"
    return format_html('<a href="{}">{}</a>', url, label)


def events_link(*, label: str, **filters: object) -> str:
    """A link to the Event changelist filtered by ``filters`` (e.g. ``tenant__id__exact=3``)."""
    return changelist_link(view="deployments_event", label=label, **filters)


class AddFieldsMixin:
    """Shows ``add_fields`` (all editable) on the add form, the full field list on change."""

    add_fields: tuple[str, ...] = ()

    def get_fields(self, request, obj=None):
        if obj is None and self.add_fields:
            return self.add_fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None and self.add_fields:
            return ()
        return super().get_readonly_fields(request, obj)


class ViewOnlyAdmin(admin.ModelAdmin):
    """For rows only the platform writes (events, usage): viewable, never added, changed or
    deleted here.

    The admin also refuses to delete a row whose deletion would cascade into these tables (an
    instance, endpoint, version or tenant with usage history), which keeps billing history from
    vanishing through a changelist checkbox.
    """

    # These tables grow by the minute; skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(AddFieldsMixin, admin.ModelAdmin):
    list_display = ("slug", "name", "tier", "status", "created_at", "events")
    list_filter = ("status", "tier")
    search_fields = ("slug", "name")
    ordering = ("slug",)
    add_fields = ("slug", "name", "tier")
    fields = ("slug", "name", "tier", "status", "created_at", "updated_at", "events")
    # Status changes go through the Suspend/Reactivate actions so they are recorded as events;
    # the slug is the permanent handle in URLs and Triton model names.
    readonly_fields = ("slug", "status", "created_at", "updated_at", "events")
    actions = ("suspend_tenants", "reactivate_tenants")

    @admin.display(description="Events")
    def events(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "-"
        return events_link(label=f"Events for {obj.slug}", tenant__id__exact=obj.pk)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        tenant = create_tenant(
            slug=form.cleaned_data["slug"],
            name=form.cleaned_data["name"],
            tier=form.cleaned_data["tier"],
            actor=admin_actor(request),
        )
        adopt_saved(obj, tenant)

    def _set_status(self, request, queryset, status: str, verb: str) -> None:
        actor = admin_actor(request)
        count = 0
        for tenant in queryset:
            set_tenant_status(tenant=tenant, status=status, actor=actor)
            count += 1
        self.message_user(request, f"{verb} {count} tenant(s).", level=messages.SUCCESS)

    @admin.action(description="Suspend selected tenants (their tokens stop working)")
    def suspend_tenants(self, request, queryset):
        self._set_status(request, queryset, Tenant.Status.SUSPENDED, "Suspended")

    @admin.action(description="Reactivate selected tenants")
    def reactivate_tenants(self, request, queryset):
        self._set_status(request, queryset, Tenant.Status.ACTIVE, "Reactivated")


class ApiTokenIssueForm(forms.ModelForm):
    """What an operator chooses when issuing a token; the service mints the secret."""

    class Meta:
        model = ApiToken
        fields = ("name", "tenant", "expires_at")
        help_texts = {"tenant": "Leave empty for a platform (operator) token."}


@admin.register(ApiToken)
class ApiTokenAdmin(AddFieldsMixin, admin.ModelAdmin):
    # key_digest stays off the list on purpose: a digest next to a prefix helps nobody and
    # leaks more than needed.
    list_display = (
        "prefix_display",
        "name",
        "scope",
        "tenant",
        "usable",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter), "created_at")
    list_select_related = ("tenant", "created_by")
    search_fields = ("name", "prefix", "tenant__slug")
    ordering = ("-created_at",)
    autocomplete_fields = ("tenant",)
    add_fields = ("name", "tenant", "expires_at")
    fields = (
        "name",
        "scope",
        "tenant",
        "prefix",
        "key_digest",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ("revoke_tokens",)

    @admin.display(description="Token", ordering="prefix")
    def prefix_display(self, obj: ApiToken) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="Usable", boolean=True)
    def usable(self, obj: ApiToken) -> bool:
        return obj.is_usable()

    def has_change_permission(self, request, obj=None) -> bool:
        # Issued tokens are immutable (revoke and issue a new one instead), so an existing token's
        # page is view-only while the changelist keeps its actions.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenIssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        issued = issue_token(
            name=form.cleaned_data["name"],
            tenant=form.cleaned_data["tenant"],
            expires_at=form.cleaned_data["expires_at"],
            created_by=request.user,
            actor=admin_actor(request),
        )
        adopt_saved(obj, issued.token)
        messages.success(
            request,
            f"Token {issued.token.prefix}… issued. Copy it now; it is not stored: {issued.secret} "
            f"— for boto3 (SigV4): aws_access_key_id {issued.access_key_id}, "
            f"aws_secret_access_key {issued.secret_access_key} (also shown only now).",
        )

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        actor = admin_actor(request)
        count = 0
        for token in queryset.select_related("tenant"):
            revoke_token(token=token, actor=actor)
            count += 1
        self.message_user(request, f"Revoked {count} token(s).", level=messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "created_at")
    list_select_related = ("user", "tenant")
    list_filter = ("tenant__tier", "tenant__status")
    search_fields = ("user__username", "user__email", "tenant__slug", "tenant__name")
    ordering = ("tenant__slug", "user__username")
    autocomplete_fields = ("user", "tenant")
    readonly_fields = ("created_at",)
