"""Tenants (the SaaS's customers) and the API tokens that act for them or for operators."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and inner hyphens.",
)


class Tenant(models.Model):
    class Tier(models.TextChoices):
        STANDARD = "standard", "Standard"
        PREMIUM = "premium", "Premium (models pinned warm)"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.CharField(max_length=50, unique=True, validators=[SLUG_VALIDATOR])
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.STANDARD)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(tier__in=["standard", "premium"]), name="tenant_tier_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "suspended"]), name="tenant_status_valid"
            ),
            models.CheckConstraint(condition=~Q(slug=""), name="tenant_slug_not_empty"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def models_pinned(self) -> bool:
        """Whether this tenant's models are pinned warm wherever they are placed (premium)."""
        return self.tier == self.Tier.PREMIUM

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


ACCESS_KEY_ID_PATTERN = r"^TMLK[A-Z0-9]{16}$"


class ApiToken(models.Model):
    """A bearer token; only its SHA-256 digest is stored, the secret is shown once at issue.

    A token also carries an AWS-style access key id, so boto3 clients can sign requests (SigV4)
    for the same principal; its secret access key is derived, never stored (see
    ``tenants.services.derive_secret_access_key``). Tokens issued before access keys existed have
    none and cannot sign requests: issue a new token for SigV4 clients.
    """

    class Scope(models.TextChoices):
        TENANT = "tenant", "One tenant"
        PLATFORM = "platform", "Platform (operators)"

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.TENANT)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens"
    )
    # The first characters of the secret, kept so people can tell their tokens apart.
    prefix = models.CharField(max_length=16, db_index=True)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    # Not secret (like an AWS access key id): it names the credential in signed requests, and the
    # unique index is how the proxy finds the token. Null only on tokens issued before SigV4.
    access_key_id = models.CharField(
        max_length=20, unique=True, null=True, blank=True, editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(scope="tenant", tenant__isnull=False))
                | (Q(scope="platform", tenant__isnull=True)),
                name="apitoken_scope_matches_tenant",
            ),
            models.CheckConstraint(
                condition=Q(key_digest__regex=r"^[0-9a-f]{64}$"), name="apitoken_digest_is_sha256"
            ),
            models.CheckConstraint(
                condition=Q(access_key_id__isnull=True)
                | Q(access_key_id__regex=ACCESS_KEY_ID_PATTERN),
                name="apitoken_access_key_id_format",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_platform(self) -> bool:
        return self.scope == self.Scope.PLATFORM

    def is_usable(self, *, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        return self.tenant_id is None or self.tenant.is_active


class Membership(models.Model):
    """A dashboard user's access to one tenant (staff users see every tenant)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "tenant"], name="membership_unique_user_tenant"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant}"
