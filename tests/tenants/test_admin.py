"""The operator admin for tenants, API tokens and memberships: actions and forms call services,
and a token's secret is shown once."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from django.utils import timezone

from deployments.models import Event
from tenants.models import ApiToken, Membership, Tenant
from tenants.services import issue_token
from tests.admin_support import AppAdminChecks, admin_url, messages_of, run_action
from tests.factories import EventFactory, TenantFactory

# The whole secret, not the short prefix that names a token in lists and messages.
SECRET_PATTERN = re.compile(r"tml_[A-Za-z0-9_-]{20,}")


class TestEveryTenantsModel(AppAdminChecks):
    app_label = "tenants"
    expected_models = {Tenant, ApiToken, Membership}


def test_tenant_page_links_to_its_events(admin_client, everything, other_tenant):
    tenant = everything[Tenant]
    elsewhere = EventFactory(tenant=other_tenant)

    page = admin_client.get(admin_url(Tenant, "change", tenant.pk)).content.decode()
    events = admin_client.get(admin_url(Event, "changelist"), {"tenant__id__exact": tenant.pk})

    assert f"?tenant__id__exact={tenant.pk}" in page
    assert events.status_code == 200
    listed = list(events.context["cl"].result_list)
    assert everything[Event] in listed
    assert elsewhere not in listed
    assert {event.tenant_id for event in listed} == {tenant.pk}


def test_suspend_action_suspends_tenant_and_records_event(admin_client, admin_user, tenant):
    response = run_action(admin_client, Tenant, "suspend_tenants", [tenant])

    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.SUSPENDED
    event = Event.objects.get(kind="tenant.suspended", tenant=tenant)
    assert event.actor == f"admin:{admin_user.username}"


def test_reactivate_action_reactivates_tenant(admin_client, db):
    tenant = TenantFactory(status=Tenant.Status.SUSPENDED)

    run_action(admin_client, Tenant, "reactivate_tenants", [tenant])

    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ACTIVE
    assert Event.objects.filter(kind="tenant.reactivated", tenant=tenant).exists()


def test_adding_a_tenant_goes_through_the_service(admin_client, db):
    response = admin_client.post(
        admin_url(Tenant, "add"), {"slug": "acme", "name": "Acme", "tier": "premium"}
    )

    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.tier == Tenant.Tier.PREMIUM
    assert Event.objects.filter(kind="tenant.created", tenant=tenant).exists()


def test_revoke_action_revokes_token(admin_client, tenant):
    token = issue_token(name="bot", tenant=tenant, actor="test").token

    run_action(admin_client, ApiToken, "revoke_tokens", [token])

    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Event.objects.filter(kind="token.revoked", tenant=tenant).exists()


def test_adding_a_token_shows_its_secret_once(admin_client, admin_user, db):
    response = admin_client.post(
        admin_url(ApiToken, "add"),
        {"name": "ops-cli", "tenant": "", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    assert response.status_code == 200
    secrets_shown = [
        secret for m in messages_of(response) for secret in SECRET_PATTERN.findall(m.message)
    ]
    assert len(secrets_shown) == 1
    secret = secrets_shown[0]
    token = ApiToken.objects.get(name="ops-cli")
    assert token.key_digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.scope == ApiToken.Scope.PLATFORM
    assert token.created_by == admin_user
    assert Event.objects.filter(kind="token.issued").exists()

    change_page = admin_client.get(admin_url(ApiToken, "change", token.pk)).content.decode()
    changelist = admin_client.get(admin_url(ApiToken, "changelist")).content.decode()
    assert secret not in change_page
    assert secret not in changelist


def test_adding_a_tenant_token_scopes_it_to_the_tenant(admin_client, tenant):
    expires = timezone.now() + timedelta(days=30)

    admin_client.post(
        admin_url(ApiToken, "add"),
        {
            "name": "product",
            "tenant": tenant.pk,
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": expires.strftime("%H:%M:%S"),
        },
    )

    token = ApiToken.objects.get(name="product")
    assert token.tenant == tenant
    assert token.scope == ApiToken.Scope.TENANT
    assert token.expires_at is not None


def test_issued_token_cannot_be_edited(admin_client, tenant):
    token = issue_token(name="bot", tenant=tenant, actor="test").token

    response = admin_client.post(admin_url(ApiToken, "change", token.pk), {"name": "renamed"})

    assert response.status_code == 403
    token.refresh_from_db()
    assert token.name == "bot"


def test_token_changelist_never_shows_the_digest(admin_client, tenant):
    token = issue_token(name="bot", tenant=tenant, actor="test").token

    response = admin_client.get(admin_url(ApiToken, "changelist"))

    assert token.key_digest not in response.content.decode()
