"""Writes for tenants and API tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from tenants import sigv4
from tenants.exceptions import InvalidToken, TenantAlreadyExists
from tenants.models import ACCESS_KEY_ID_PATTERN, SLUG_VALIDATOR, ApiToken, Tenant

TOKEN_PREFIX = "tml_"
# AWS-like access key ids: a fixed 4-letter prefix and 16 random uppercase letters or digits.
ACCESS_KEY_ID_PREFIX = "TMLK"
ACCESS_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ACCESS_KEY_ID_RANDOM_LENGTH = 16
SECRET_ACCESS_KEY_LENGTH = 40
# Domain separation: the same SECRET_KEY must never yield this value for another purpose.
SECRET_ACCESS_KEY_CONTEXT = b"tenantml-sigv4:"
SIGV4_SERVICE = "sagemaker"
# last_used_at is for people ("is this token still in use?"); minute precision avoids a write per
# request on the hot path.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly minted token with the secrets that are shown once and never stored."""

    token: ApiToken
    secret: str  # the bearer secret; only its digest is stored
    secret_access_key: str  # for SigV4 (boto3); derived again at verification, never stored

    @property
    def access_key_id(self) -> str:
        """The AWS-style access key id that pairs with ``secret_access_key``."""
        return self.token.access_key_id


def digest_secret(secret: str) -> str:
    """SHA-256 hex digest of a token secret (tokens are random, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_access_key_id() -> str:
    """A random AWS-style access key id (``TMLK`` + 16 uppercase letters or digits)."""
    random_part = "".join(
        secrets.choice(ACCESS_KEY_ID_ALPHABET) for _ in range(ACCESS_KEY_ID_RANDOM_LENGTH)
    )
    return ACCESS_KEY_ID_PREFIX + random_part


def derive_secret_access_key(*, key_digest: str) -> str:
    """The SigV4 secret access key of a token, derived from its digest and ``SECRET_KEY``.

    Nothing holding it is stored: it is recomputed for every signed request. Rotating
    ``SECRET_KEY`` therefore invalidates every issued secret access key (``SECRET_KEY_FALLBACKS``
    is not consulted); tenants then need new tokens. Reading it back needs both the database row
    and ``SECRET_KEY``, unlike the bearer secret, which cannot be recovered at all: SigV4 is a
    shared-secret HMAC, so the verifier must be able to produce the key.
    """
    mac = hmac.new(
        settings.SECRET_KEY.encode("utf-8"),
        SECRET_ACCESS_KEY_CONTEXT + key_digest.encode("ascii"),
        hashlib.sha256,
    ).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii")[:SECRET_ACCESS_KEY_LENGTH]


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
    max_length = ApiToken._meta.get_field("name").max_length
    if not name.strip() or len(name) > max_length:
        raise DomainError(f"name: 1 to {max_length} characters.", field="name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            name=name,
            tenant=tenant,
            scope=ApiToken.Scope.TENANT if tenant else ApiToken.Scope.PLATFORM,
            prefix=secret[: len(TOKEN_PREFIX) + 6],
            key_digest=digest_secret(secret),
            access_key_id=new_access_key_id(),
            created_by=created_by,
            expires_at=expires_at,
        )
        record_event(
            kind="token.issued",
            message=(
                f"{token.get_scope_display()} token {token.prefix}… ({name}) issued "
                f"with access key id {token.access_key_id}."
            ),
            actor=actor,
            tenant=tenant,
        )
    return IssuedToken(
        token=token,
        secret=secret,
        secret_access_key=derive_secret_access_key(key_digest=token.key_digest),
    )


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
    _record_use(token)
    return token


def sigv4_credential(access_key_id: str) -> tuple[ApiToken, str] | None:
    """The usable token behind an access key id and its secret access key, else None.

    Refuses what bearer authentication refuses (revoked, expired, suspended tenant), with no
    difference between the causes. Positional, as ``tenants.sigv4.verify_request`` calls it.
    """
    if not re.fullmatch(ACCESS_KEY_ID_PATTERN, access_key_id):
        return None
    token = ApiToken.objects.select_related("tenant").filter(access_key_id=access_key_id).first()
    if token is None or not token.is_usable():
        return None
    return token, derive_secret_access_key(key_digest=token.key_digest)


def authenticate_signed_request(
    *,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> ApiToken:
    """The token whose access key signed this SageMaker-runtime request (SigV4), else raises.

    Arguments are those of ``tenants.sigv4.verify_request``; raises its ``SignatureRejected``
    subclasses (HTTP 403). Records use like bearer authentication does, only once the signature
    has been verified.
    """
    token = sigv4.verify_request(
        method=method,
        path=path,
        query_string=query_string,
        headers=headers,
        body=body,
        lookup=sigv4_credential,
        now=now,
        service=SIGV4_SERVICE,
    )
    _record_use(token)
    return token


def _record_use(token: ApiToken) -> None:
    """Stamp ``last_used_at`` at most once per ``LAST_USED_RESOLUTION``."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
