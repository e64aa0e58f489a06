"""Reads for tenants, scoped to what the caller may see."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.access import Caller
from tenants.exceptions import TenantNotFound
from tenants.models import ApiToken, Tenant


def visible_tenants(*, caller: Caller) -> QuerySet[Tenant]:
    """Every tenant for a platform caller, only its own for anyone else; by slug."""
    if caller.is_platform:
        return Tenant.objects.order_by("slug")
    return Tenant.objects.filter(pk__in=caller.tenant_ids).order_by("slug")


def tenant_for_caller(*, caller: Caller, slug: str) -> Tenant:
    """The tenant named by ``slug`` if the caller may see it; otherwise 404 (never 403, so tenant
    names do not leak)."""
    tenant = visible_tenants(caller=caller).filter(slug=slug).first()
    if tenant is None:
        raise TenantNotFound(f"No tenant {slug!r}.")
    return tenant


def tokens_for_tenant(*, tenant: Tenant) -> QuerySet[ApiToken]:
    """The tenant's tokens, revoked ones included, newest first (ties by id, newest first)."""
    return (
        ApiToken.objects.filter(tenant=tenant)
        .select_related("tenant")
        .order_by("-created_at", "-pk")
    )


def all_tokens(*, tenant: Tenant | None = None, platform_only: bool = False) -> QuerySet[ApiToken]:
    """Every token (revoked ones included), one tenant's, or only the platform's; newest first."""
    tokens = ApiToken.objects.select_related("tenant").order_by("-created_at", "-pk")
    if tenant is not None:
        tokens = tokens.filter(tenant=tenant)
    if platform_only:
        tokens = tokens.filter(scope=ApiToken.Scope.PLATFORM)
    return tokens
