"""GET /api/v1/fleet/utilization and /costs return the overview's own figures."""

from __future__ import annotations

from django.urls import reverse

from tenants.services import issue_token


def test_fleet_api_numbers_equal_the_overview_for_staff(staff_client, fleet):
    overview = staff_client.get(reverse("dashboard:overview")).context["figures"]

    utilization = staff_client.get(reverse("fleet-utilization"))
    costs = staff_client.get(reverse("fleet-costs"))

    assert utilization.status_code == 200 and costs.status_code == 200
    assert utilization.json() == overview["utilization"]
    assert costs.json() == overview["costs"]
    assert costs.json()["scope"] == "fleet"


def test_platform_token_sees_the_whole_fleet(platform_client, staff_client, fleet):
    overview = staff_client.get(reverse("dashboard:overview")).context["figures"]

    assert platform_client.get(reverse("fleet-costs")).json() == overview["costs"]
    assert platform_client.get(reverse("fleet-utilization")).json() == overview["utilization"]


def test_tenant_token_sees_only_its_tenants_share(api_client, member_client, fleet):
    secret = issue_token(name="acme", tenant=fleet.acme, actor="test").secret
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    member_view = member_client.get(reverse("dashboard:overview")).context["figures"]

    costs = api_client.get(reverse("fleet-costs")).json()
    utilization = api_client.get(reverse("fleet-utilization")).json()

    assert costs == member_view["costs"]
    assert utilization == member_view["utilization"]
    assert costs["scope"] == "tenant" and costs["tenants_in_scope"] == ["acme"]
    assert [row["tenant"] for row in costs["tenants"]] == ["acme"]
    assert {row["model"] for row in costs["models"]} == {"intents"}
    assert "endpoints" not in costs and utilization["invocations_last_hour"] == 90


def test_fleet_api_needs_credentials(api_client, db):
    assert api_client.get(reverse("fleet-costs")).status_code in (401, 403)
