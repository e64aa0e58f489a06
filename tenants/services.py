"""Writes for tenants and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import DomainError
from deployments.events import record_event
from tenants.exceptions import InvalidToken, TenantAlreadyExists
from tenants.models import SLUG_VALIDATOR, ApiToken, Tenant

TOKEN_PREFIX = "tml_"
# last_used_at is for people ("is this token still in use?"); minute precision avoids a write per
# request on the hot path.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once; only its digest is stored


def digest_secret(secret: str) -> str:
    """SHA-256 hex digest of a token secret (tokens are random, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_tenant(*, slug: str, name: str, tier: str = Tenant.Tier.STANDARD, actor: str) -> Tenant:
    """Create a tenant; the slug is its permanent handle in URLs and model names."""
    try:
        SLUG_VALIDATOR(slug)
    except ValidationError as exc:
        raise DomainError(f"slug {slug!r}: {exc.messages[0]}", field="slug") from exc
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(slug=slug, name=name, tier=tier)
            record_event(
                kind="tenant.created",
                message=f"Tenant {slug} created ({tier}).",
                actor=actor,
                tenant=tenant,
            )
    except IntegrityError as exc:
        raise TenantAlreadyExists(
            f"A tenant with slug {slug!r} already exists.", field="slug"
        ) from exc
    return tenant


def set_tenant_status(*, tenant: Tenant, status: str, actor: str) -> Tenant:
    """Suspend or reactivate a tenant; a suspended tenant's tokens stop working at once."""
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if tenant.status == status:
            return tenant
        tenant.status = status
        tenant.save(update_fields=["status", "updated_at"])
        record_event(
            kind=f"tenant.{'suspended' if status == Tenant.Status.SUSPENDED else 'reactivated'}",
            message=f"Tenant {tenant.slug} is now {status}.",
            actor=actor,
            tenant=tenant,
        )
    return tenant


def issue_token(
    *,
    name: str,
    tenant: Tenant | None,
    actor: str,
    created_by=None,
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Mint a token for one tenant, or a platform token when ``tenant`` is None."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            name=name,
            tenant=tenant,
            scope=ApiToken.Scope.TENANT if tenant else ApiToken.Scope.PLATFORM,
            prefix=secret[: len(TOKEN_PREFIX) + 6],
            key_digest=digest_secret(secret),
            created_by=created_by,
            expires_at=expires_at,
        )
        record_event(
            kind="token.issued",
            message=f"{token.get_scope_display()} token {token.prefix}… ({name}) issued.",
            actor=actor,
            tenant=tenant,
        )
    return IssuedToken(token=token, secret=secret)


def revoke_token(*, token: ApiToken, actor: str) -> ApiToken:
    """Revoke a token; idempotent."""
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if updated:
            record_event(
                kind="token.revoked",
                message=f"Token {token.prefix}… ({token.name}) revoked.",
                actor=actor,
                tenant=token.tenant,
            )
    token.refresh_from_db()
    return token


def authenticate_token(*, secret: str) -> ApiToken:
    """The usable token for a presented secret, or InvalidToken (same message for every cause)."""
    if not secret.startswith(TOKEN_PREFIX):
        raise InvalidToken("Invalid or revoked token.")
    token = (
        ApiToken.objects.select_related("tenant").filter(key_digest=digest_secret(secret)).first()
    )
    if token is None or not token.is_usable():
        raise InvalidToken("Invalid or revoked token.")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
