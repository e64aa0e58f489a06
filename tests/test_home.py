"""The landing page is the dashboard's overview; anonymous visitors are sent to log in."""

from __future__ import annotations

from django.urls import reverse

from deployments.models import Instance
from tests.factories import InstanceFactory, PlacementFactory, TenantFactory


def test_anonymous_visitor_is_sent_to_log_in(client, db):
    response = client.get(reverse("home"), follow=True)

    assert response.redirect_chain[0] == (reverse("dashboard:overview"), 302)
    assert response.redirect_chain[-1][0].startswith(reverse("login"))
    assert 'data-testid="login-form"' in response.content.decode()


def test_staff_land_on_the_overview_with_loaded_models_and_hourly_cost(admin_client, db):
    TenantFactory()
    placement = PlacementFactory(actual_state="loaded")  # on a "local" instance, 0.23 USD/h
    InstanceFactory(endpoint=placement.endpoint, status=Instance.Status.STOPPED)

    response = admin_client.get(reverse("home"), follow=True)

    assert response.status_code == 200
    figures = response.context["figures"]
    assert figures["utilization"]["models_loaded"] == 1
    assert figures["costs"]["usd_per_hour"] == 0.23  # the stopped instance costs nothing
    assert "Fleet overview" in response.content.decode()
