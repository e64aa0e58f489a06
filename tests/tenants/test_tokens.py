"""API tokens: hashed at rest, scoped, revocable, expiring, shown once."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection
from django.utils import timezone

from deployments.models import Event
from tenants.exceptions import InvalidToken
from tenants.models import ApiToken, Tenant
from tenants.services import authenticate_token, issue_token, revoke_token, set_tenant_status

pytestmark = pytest.mark.django_db


def test_only_the_sha256_digest_is_stored(tenant):
    issued = issue_token(name="ci", tenant=tenant, actor="test")
    token = ApiToken.objects.get(pk=issued.token.pk)
    assert token.key_digest == hashlib.sha256(issued.secret.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tenants_apitoken WHERE id = %s", [token.pk])
        row = cursor.fetchone()
    assert all(issued.secret not in str(value) for value in row)
    assert issued.secret.startswith(token.prefix)


def test_secrets_are_unique_and_long(tenant):
    secrets = {issue_token(name=f"t{i}", tenant=tenant, actor="test").secret for i in range(20)}
    assert len(secrets) == 20
    assert all(len(secret) >= 40 for secret in secrets)


def test_authenticate_returns_the_token_and_its_scope(tenant):
    tenant_secret = issue_token(name="a", tenant=tenant, actor="test").secret
    platform_secret = issue_token(name="ops", tenant=None, actor="test").secret
    tenant_token = authenticate_token(secret=tenant_secret)
    platform_token = authenticate_token(secret=platform_secret)
    assert tenant_token.tenant == tenant and not tenant_token.is_platform
    assert platform_token.tenant is None and platform_token.is_platform


@pytest.mark.parametrize("secret", ["", "tml_", "tml_nope", "Bearer x", "x" * 500])
def test_unknown_secrets_are_rejected(secret):
    with pytest.raises(InvalidToken):
        authenticate_token(secret=secret)


def test_revoked_token_is_rejected_and_revoke_is_idempotent(tenant):
    issued = issue_token(name="a", tenant=tenant, actor="test")
    revoke_token(token=issued.token, actor="test")
    first_revoked_at = ApiToken.objects.get(pk=issued.token.pk).revoked_at
    revoke_token(token=issued.token, actor="test")
    assert ApiToken.objects.get(pk=issued.token.pk).revoked_at == first_revoked_at
    assert Event.objects.filter(kind="token.revoked").count() == 1
    with pytest.raises(InvalidToken):
        authenticate_token(secret=issued.secret)


def test_expired_token_is_rejected(tenant):
    issued = issue_token(
        name="a", tenant=tenant, actor="test", expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(InvalidToken):
        authenticate_token(secret=issued.secret)


def test_suspended_tenant_tokens_stop_working(tenant):
    issued = issue_token(name="a", tenant=tenant, actor="test")
    set_tenant_status(tenant=tenant, status=Tenant.Status.SUSPENDED, actor="test")
    with pytest.raises(InvalidToken):
        authenticate_token(secret=issued.secret)
    set_tenant_status(tenant=tenant, status=Tenant.Status.ACTIVE, actor="test")
    assert authenticate_token(secret=issued.secret).pk == issued.token.pk


def test_last_used_is_recorded_at_most_once_a_minute(tenant, django_assert_num_queries):
    issued = issue_token(name="a", tenant=tenant, actor="test")
    authenticate_token(secret=issued.secret)
    first = ApiToken.objects.get(pk=issued.token.pk).last_used_at
    assert first is not None
    # Within the minute: a single read, no write.
    with django_assert_num_queries(1):
        authenticate_token(secret=issued.secret)
    ApiToken.objects.filter(pk=issued.token.pk).update(last_used_at=first - timedelta(minutes=2))
    authenticate_token(secret=issued.secret)
    assert ApiToken.objects.get(pk=issued.token.pk).last_used_at > first - timedelta(minutes=1)


def test_scope_must_match_tenant_at_the_database_level(tenant):
    with pytest.raises(IntegrityError):
        ApiToken.objects.create(
            name="bad", scope="platform", tenant=tenant, prefix="tml_x", key_digest="a" * 64
        )


def test_tenant_scope_without_tenant_is_rejected_by_the_database():
    with pytest.raises(IntegrityError):
        ApiToken.objects.create(
            name="bad", scope="tenant", tenant=None, prefix="tml_x", key_digest="b" * 64
        )


def test_plaintext_cannot_be_stored_as_digest(tenant):
    with pytest.raises(IntegrityError):
        ApiToken.objects.create(
            name="bad", scope="tenant", tenant=tenant, prefix="tml_x", key_digest="tml_plaintext"
        )
