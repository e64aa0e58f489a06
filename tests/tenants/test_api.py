"""Tenant and token endpoints: scoping by token, clear 4xx errors naming the field."""

from __future__ import annotations

import pytest

from tenants.models import ApiToken, Tenant
from tenants.services import issue_token, revoke_token
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def bearer(client, secret):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_platform_token_creates_a_tenant(platform_client):
    response = platform_client.post(
        "/api/v1/tenants/",
        {"slug": "zoomride", "name": "ZoomRide", "tier": "premium"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["slug"] == "zoomride"
    assert Tenant.objects.get(slug="zoomride").tier == "premium"


def test_tenant_token_cannot_create_tenants(tenant_client):
    response = tenant_client.post("/api/v1/tenants/", {"slug": "x", "name": "X"}, format="json")
    assert response.status_code == 403
    assert not Tenant.objects.filter(slug="x").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "No slug"}, "slug"),
        ({"slug": "Bad Slug!", "name": "x"}, "slug"),
        ({"slug": "ok-slug"}, "name"),
        ({"slug": "ok-slug", "name": "x", "tier": "gold"}, "tier"),
    ],
)
def test_invalid_tenant_input_is_a_400_naming_the_field(platform_client, payload, field):
    response = platform_client.post("/api/v1/tenants/", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in (error.get("fields") or {error.get("field"): None})
    assert field in error["message"]


def test_duplicate_slug_is_a_409_naming_the_field(platform_client, tenant):
    response = platform_client.post(
        "/api/v1/tenants/", {"slug": tenant.slug, "name": "Again"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["field"] == "slug"


def test_tenant_token_sees_only_its_tenant(tenant_client, tenant, other_tenant):
    assert tenant_client.get(f"/api/v1/tenants/{tenant.slug}/").status_code == 200
    hidden = tenant_client.get(f"/api/v1/tenants/{other_tenant.slug}/")
    missing = tenant_client.get("/api/v1/tenants/no-such-tenant/")
    # Another tenant's name answers exactly like a name that does not exist.
    assert hidden.status_code == missing.status_code == 404
    assert other_tenant.slug not in hidden.content.decode().replace(f"'{other_tenant.slug}'", "")
    listing = tenant_client.get("/api/v1/tenants/").json()
    assert listing["count"] == 1
    assert [t["slug"] for t in listing["results"]] == [tenant.slug]


def test_platform_token_sees_every_tenant(platform_client, tenant, other_tenant):
    slugs = {t["slug"] for t in platform_client.get("/api/v1/tenants/").json()["results"]}
    assert {tenant.slug, other_tenant.slug} <= slugs
    assert platform_client.get(f"/api/v1/tenants/{other_tenant.slug}/").status_code == 200


def test_missing_malformed_and_revoked_tokens_are_401(api_client, tenant):
    assert api_client.get("/api/v1/tenants/").status_code == 401
    api_client.credentials(HTTP_AUTHORIZATION="Bearer")
    assert api_client.get("/api/v1/tenants/").status_code == 401
    issued = issue_token(name="soon revoked", tenant=tenant, actor="test")
    bearer(api_client, issued.secret)
    assert api_client.get(f"/api/v1/tenants/{tenant.slug}/").status_code == 200
    revoke_token(token=issued.token, actor="test")
    response = api_client.get(f"/api/v1/tenants/{tenant.slug}/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_issuing_a_token_shows_the_secret_once(tenant_client, tenant):
    created = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/tokens/", {"name": "batch jobs"}, format="json"
    )
    assert created.status_code == 201
    secret = created.json()["token"]
    assert ApiToken.objects.get(pk=created.json()["id"]).tenant == tenant
    listing = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/tokens/")
    assert listing.status_code == 200
    assert secret not in listing.content.decode()
    assert all("token" not in row for row in listing.json()["results"])


def test_token_expiry_in_the_past_is_a_400(tenant_client, tenant):
    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/tokens/",
        {"name": "x", "expires_at": "2000-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "expires_at"


def test_tenant_cannot_mint_or_revoke_tokens_for_another_tenant(tenant_client, other_tenant):
    theirs = issue_token(name="theirs", tenant=other_tenant, actor="test").token
    minted = tenant_client.post(
        f"/api/v1/tenants/{other_tenant.slug}/tokens/", {"name": "sneaky"}, format="json"
    )
    revoked = tenant_client.delete(f"/api/v1/tenants/{other_tenant.slug}/tokens/{theirs.pk}/")
    assert minted.status_code == revoked.status_code == 404
    assert not ApiToken.objects.filter(name="sneaky").exists()
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_revoking_a_token_by_api(tenant_client, tenant):
    token = issue_token(name="old", tenant=tenant, actor="test").token
    response = tenant_client.delete(f"/api/v1/tenants/{tenant.slug}/tokens/{token.pk}/")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None


def test_openapi_schema_and_docs_are_served(platform_client, client):
    schema = platform_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/tenants/" in schema.content
    assert b"BearerToken" in schema.content
    # The docs page ships its own assets (no CDN).
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn." not in docs.content


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["problems"] == []


def test_suspended_tenants_token_is_rejected(api_client):
    suspended = TenantFactory(status=Tenant.Status.SUSPENDED)
    secret = issue_token(name="x", tenant=suspended, actor="test").secret
    assert bearer(api_client, secret).get(f"/api/v1/tenants/{suspended.slug}/").status_code == 401
