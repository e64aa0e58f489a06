"""The landing page: staff see the fleet's headline figures; everyone else is sent to log in."""

from __future__ import annotations

from django.urls import reverse

from deployments.models import Instance
from tests.factories import InstanceFactory, PlacementFactory, TenantFactory


def test_anonymous_visitor_is_sent_to_log_in(client, db):
    response = client.get(reverse("home"))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_staff_see_counts_and_hourly_cost_of_live_instances(admin_client, db):
    TenantFactory()
    placement = PlacementFactory(actual_state="loaded")  # on a "local" instance, 0.23 USD/h
    InstanceFactory(endpoint=placement.endpoint, status=Instance.Status.STOPPED)

    response = admin_client.get(reverse("home"))

    assert response.status_code == 200
    figures = {row["label"]: row["value"] for row in response.context["figures"]}
    assert figures["models loaded"] == 1
    assert figures["active tenants"] == 2  # the placement's own tenant and the one above
    assert figures["fleet cost per hour"] == "$0.23"
    assert "Fleet at a glance" in response.content.decode()
