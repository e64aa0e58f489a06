"""Logging in and out, and who sees what: staff every tenant, members only theirs."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.deployments.dashboard.conftest import PASSWORD

PAGES = [
    ("dashboard:overview", []),
    ("dashboard:endpoints", []),
    ("dashboard:what-if", []),
    ("dashboard:events", []),
    ("dashboard:tenants", []),
    ("dashboard:tenant", ["acme"]),
]


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_anonymous_visitor_is_redirected_to_log_in(client, fleet, name, args):
    url = reverse(name, args=args)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_login_form_logs_in_and_lands_on_the_overview(client, staff_user):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'data-testid="login-form"' in page.content.decode()

    response = client.post(
        reverse("login"), {"username": "operator", "password": PASSWORD}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("dashboard:overview")
    assert 'data-testid="fleet-cost-per-month"' in response.content.decode()


def test_wrong_password_shows_the_error_and_stays_logged_out(client, staff_user):
    response = client.post(reverse("login"), {"username": "operator", "password": "nope"})

    assert response.status_code == 200
    assert 'data-testid="login-error"' in response.content.decode()
    assert client.get(reverse("dashboard:overview")).status_code == 302


def test_logout_is_a_post_with_csrf_and_ends_the_login(staff_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    page = client.get(reverse("dashboard:overview"))
    assert 'data-testid="logout-button"' in page.content.decode()

    assert client.post(reverse("logout")).status_code == 403  # no token

    token = client.cookies["csrftoken"].value
    response = client.post(reverse("logout"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:overview")).status_code == 302


def test_member_sees_their_tenant_page(member_client, fleet):
    response = member_client.get(reverse("dashboard:tenant", args=["acme"]))

    assert response.status_code == 200
    assert 'data-testid="model-intents"' in response.content.decode()


def test_member_gets_404_for_another_tenants_pages(member_client, fleet):
    from tests.factories import TrainingJobFactory

    job = TrainingJobFactory(model__tenant=fleet.globex)
    urls = [
        reverse("dashboard:tenant", args=["globex"]),
        reverse("dashboard:training-job", args=["globex", job.pk]),
        reverse("dashboard:training-job", args=["acme", job.pk]),  # right tenant, wrong job
    ]
    for url in urls:
        assert member_client.get(url).status_code == 404, url
    for name in ("deploy", "rollback", "retire"):
        url = reverse(f"dashboard:{name}", args=["globex", "routing"])
        assert member_client.post(url).status_code == 404


def test_member_tenant_list_shows_only_their_tenant(member_client, fleet):
    body = member_client.get(reverse("dashboard:tenants")).content.decode()

    assert 'data-testid="tenant-row-acme"' in body
    assert "globex" not in body


def test_fleet_wide_pages_are_for_staff_only(member_client, fleet):
    for url in (
        reverse("dashboard:endpoints"),
        reverse("dashboard:endpoint", args=[fleet.endpoint.name]),
        reverse("dashboard:what-if"),
    ):
        assert member_client.get(url).status_code == 404, url


def test_staff_see_every_tenant(staff_client, fleet):
    body = staff_client.get(reverse("dashboard:tenants")).content.decode()
    assert 'data-testid="tenant-row-acme"' in body and 'data-testid="tenant-row-globex"' in body
    assert staff_client.get(reverse("dashboard:tenant", args=["globex"])).status_code == 200


def test_member_overview_shows_only_their_share(member_client, fleet):
    response = member_client.get(reverse("dashboard:overview"))

    figures = response.context["figures"]
    assert figures["costs"]["scope"] == "tenant"
    assert [row["tenant"] for row in figures["costs"]["tenants"]] == ["acme"]
    assert figures["utilization"]["invocations_last_hour"] == 90
    assert figures["utilization"]["host_memory_budget_mb"] is None
    assert "globex" not in response.content.decode()


def test_member_events_are_only_their_tenants(member_client, fleet):
    body = member_client.get(reverse("dashboard:events")).content.decode()

    assert "acme deploy" in body
    assert "globex evict" not in body and "fleet repair" not in body
