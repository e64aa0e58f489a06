"""Each page renders the fleet's figures, and each live part returns alone for htmx."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from html import unescape
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from deployments.models import Deployment, Event
from tests.deployments.dashboard.conftest import htmx
from tests.factories import EventFactory, TrainingJobFactory

SVG = "{http://www.w3.org/2000/svg}"


def test_overview_shows_cost_savings_utilization_and_traffic(staff_client, fleet):
    response = staff_client.get(reverse("dashboard:overview"))

    assert response.status_code == 200
    utilization = response.context["figures"]["utilization"]
    costs = response.context["figures"]["costs"]
    assert costs["usd_per_hour"] == 0.23  # one live local instance
    assert costs["usd_per_month"] == pytest.approx(0.23 * 730)
    # Baseline: each 111/222 MB model alone on the cheapest type that holds it (ml.c5.xlarge).
    assert costs["dedicated_usd_per_hour"] == pytest.approx(2 * 0.204)
    assert costs["savings"] == pytest.approx(round(1 - 0.23 / 0.408, 4))
    assert utilization["host_memory_used_mb"] == 333.0
    assert utilization["host_memory_budget_mb"] == 13107.0
    assert (utilization["models_loaded"], utilization["models_placed"]) == (2, 2)
    assert utilization["invocations_last_hour"] == 120
    assert utilization["cold_starts_last_hour"] == 3
    assert utilization["invocations_per_minute"] == 2.0
    # 120 requests: the 119th falls in the 25 ms bucket, the slowest (2500 ms) is the 120th.
    assert utilization["p99_latency_ms_last_hour"] == 25.0
    body = response.content.decode()
    assert 'id="fleet-cost-per-month"' in body and "$167.90" in body
    assert "savings = 1 − actual hourly cost / dedicated hourly cost" in body
    assert "= 1 − $0.23 / $0.41 = 43.6 %" in body
    assert 'hx-trigger="every 5s"' in body


def test_tenant_cost_shares_split_each_instance_by_resident_memory(staff_client, fleet):
    costs = staff_client.get(reverse("dashboard:overview")).context["figures"]["costs"]

    shares = {row["tenant"]: row["usd_per_hour"] for row in costs["tenants"]}
    assert shares["acme"] == pytest.approx(0.23 * 111 / 333, abs=1e-4)
    assert shares["globex"] == pytest.approx(0.23 * 222 / 333, abs=1e-4)
    assert costs["unattributed_usd_per_hour"] == 0.0


def test_overview_partial_returns_alone_for_htmx(staff_client, fleet):
    response = staff_client.get(reverse("dashboard:overview"), **htmx("overview-figures"))

    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith("<section") and "<html" not in body
    assert 'id="overview-figures"' in body and 'id="overview-charts"' not in body


def test_overview_charts_are_valid_svg_with_titles(staff_client, fleet):
    response = staff_client.get(reverse("dashboard:overview"), **htmx("overview-charts"))

    body = response.content.decode()
    assert 'id="overview-charts"' in body and "<html" not in body
    charts = response.context["charts"]
    assert {c["id"] for c in charts} == {"chart-invocations", "chart-utilization", "chart-cost"}
    for chart in charts:
        root = ET.fromstring(str(chart["svg"]))
        assert root.tag == f"{SVG}svg"
        assert root.get("role") == "img"
        assert root.find(f"{SVG}title").text
        assert "latest" in root.find(f"{SVG}desc").text
        assert root.findall(f".//{SVG}polyline"), chart["id"]


def test_line_chart_escapes_text_and_marks_gaps():
    from datetime import UTC, datetime, timedelta

    from deployments.dashboard.charts import Series, line_chart, nice_ticks

    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = [(start + timedelta(minutes=5 * i), None if i == 3 else float(i)) for i in range(8)]
    svg = line_chart(title="A <b> & c", series=[Series("x & y", points)], y_label="n")

    root = ET.fromstring(svg)
    assert root.find(f"{SVG}title").text == "A <b> & c"
    assert len(root.findall(f"{SVG}polyline")) == 2  # the gap splits the line
    assert nice_ticks(7.3) == [0.0, 2.0, 4.0, 6.0, 8.0]
    empty = ET.fromstring(line_chart(title="empty", series=[], y_label="n"))
    assert empty.find(f"{SVG}title").text == "empty"


def test_endpoint_list_and_detail_draw_each_instance_as_a_packed_memory_bar(staff_client, fleet):
    listing = staff_client.get(reverse("dashboard:endpoints")).content.decode()
    assert f'data-testid="endpoint-row-{fleet.endpoint.name}"' in listing

    response = staff_client.get(reverse("dashboard:endpoint", args=[fleet.endpoint.name]))

    assert response.status_code == 200
    body = response.content.decode()
    bar = response.context["detail"]["instances"][0]
    # Most recently used first: acme (1 min ago) before globex (5 min ago).
    assert [s["placement"].pk for s in bar["segments"]] == [
        fleet.acme_placement.pk,
        fleet.globex_placement.pk,
    ]
    assert bar["segments"][0]["width_pct"] == pytest.approx(111 / 13107 * 100, abs=0.01)
    assert f'data-testid="memory-bar-{fleet.instance.pk}"' in body
    assert f'data-testid="segment-{fleet.acme_placement.pk}"' in body
    assert 'data-pinned="true"' in body and "(pinned)" in body
    assert "load 2,100 ms" in body  # measured load time in the tooltip
    assert f'data-testid="placement-invocations-{fleet.acme_placement.pk}">90<' in body


def test_endpoint_partial_returns_alone_for_htmx(staff_client, fleet):
    url = reverse("dashboard:endpoint", args=[fleet.endpoint.name])
    body = staff_client.get(url, **htmx("endpoint-instances")).content.decode()
    assert body.lstrip().startswith("<section") and "<html" not in body
    assert 'id="endpoint-instances"' in body


def test_unknown_endpoint_is_404(staff_client, fleet):
    assert staff_client.get(reverse("dashboard:endpoint", args=["nope"])).status_code == 404


def test_events_filter_by_kind_prefix_severity_and_tenant(staff_client, fleet):
    url = reverse("dashboard:events")
    body = staff_client.get(url).content.decode()
    assert "acme deploy" in body and "globex evict" in body and "fleet repair" in body

    assert "globex evict" in staff_client.get(url, {"kind": "placement."}).content.decode()
    assert "acme deploy" not in staff_client.get(url, {"kind": "placement."}).content.decode()
    only_errors = staff_client.get(url, {"severity": "error"}).content.decode()
    assert "fleet repair" in only_errors and "acme deploy" not in only_errors
    only_acme = staff_client.get(url, {"tenant": "acme"}).content.decode()
    assert "acme deploy" in only_acme and "globex evict" not in only_acme


def test_events_are_paginated_and_the_partial_keeps_filters(staff_client, fleet):
    for number in range(30):
        EventFactory(kind="warmup.completed", message=f"warm-up {number}")
    url = reverse("dashboard:events")

    first = staff_client.get(url, {"kind": "warmup"})
    second = staff_client.get(url, {"kind": "warmup", "page": 2}, **htmx("event-rows"))

    assert len(first.context["page"]) == 25
    assert "Page 1 of 2 (30 events)" in first.content.decode()
    body = second.content.decode()
    assert "<html" not in body and len(second.context["page"]) == 5
    assert "kind=warmup&amp;page=2" in body  # the live refresh keeps the filter and the page


def test_tenant_page_shows_models_versions_deployment_and_cost_share(staff_client, fleet):
    response = staff_client.get(reverse("dashboard:tenant", args=["acme"]))

    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="version-intents-v1"' in body
    assert 'data-testid="metric-intents-v1-macro_f1">macro_f1 0.910' in body
    assert 'data-testid="deployment-status-intents"' in body and "Not deployed" in body
    costs = response.context["costs"]
    assert costs["scope"] == "tenant"
    assert costs["usd_per_hour"] == pytest.approx(0.23 * 111 / 333, abs=1e-4)
    assert costs["dedicated_usd_per_hour"] == pytest.approx(0.204)
    assert 'data-testid="tenant-cost-per-month"' in body


def test_running_training_job_polls_and_a_finished_one_stops(staff_client, fleet):
    running = TrainingJobFactory(model=fleet.acme_model, status="running", progress_pct=42)
    done = TrainingJobFactory(model=fleet.acme_model, status="succeeded", progress_pct=100)

    page = staff_client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()
    assert f'data-testid="training-progress-{running.pk}" max="100" value="42"' in page

    url = reverse("dashboard:training-job", args=["acme", running.pk])
    partial = staff_client.get(url, **htmx(f"training-job-{running.pk}")).content.decode()
    assert "<html" not in partial and 'hx-trigger="every 2s"' in partial

    running.status, running.progress_pct = "succeeded", 100
    running.save()
    finished = staff_client.get(url, **htmx()).content.decode()
    assert "hx-trigger" not in finished and 'value="100"' in finished
    done_page = staff_client.get(reverse("dashboard:training-job", args=["acme", done.pk]))
    assert done_page.status_code == 200 and "<html" in done_page.content.decode()


def test_what_if_projects_cost_and_savings_for_the_placed_fleet(staff_client, fleet):
    url = reverse("dashboard:what-if")
    assert staff_client.get(url).status_code == 200

    response = staff_client.post(
        url, {"instance_type": "ml.m5.xlarge", "target_utilization": "0.8", "replicas": "2"}
    )

    assert response.status_code == 200
    result = response.context["result"]
    assert result["instances"] == 2  # two replicas land on distinct instances
    assert result["usd_per_hour"] == pytest.approx(2 * 0.23)
    assert result["usd_per_month"] == pytest.approx(2 * 0.23 * 730)
    assert result["dedicated_usd_per_hour"] == pytest.approx(2 * 2 * 0.204)
    assert result["savings"] == pytest.approx(round(1 - 0.46 / 0.816, 4))
    assert 'data-testid="what-if-cost-per-month"' in response.content.decode()


def test_what_if_htmx_returns_only_the_result(staff_client, fleet):
    response = staff_client.post(
        reverse("dashboard:what-if"),
        {"instance_type": "ml.c5.xlarge", "target_utilization": "0.5", "replicas": "1"},
        **htmx("what-if-result"),
    )
    body = response.content.decode()
    assert body.lstrip().startswith("<section") and "<html" not in body
    assert math.isclose(response.context["result"]["usd_per_hour"], 0.204)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"instance_type": "ml.m5.xlarge", "target_utilization": "1.5", "replicas": "1"},
            "target_utilization",
        ),
        (
            {"instance_type": "ml.m5.xlarge", "target_utilization": "0.8", "replicas": "0"},
            "replicas",
        ),
        (
            {"instance_type": "no.such.type", "target_utilization": "0.8", "replicas": "1"},
            "instance_type",
        ),
        (
            {"instance_type": "ml.m5.xlarge", "target_utilization": "", "replicas": "1"},
            "target_utilization",
        ),
    ],
)
def test_what_if_bad_input_names_the_field(staff_client, fleet, data, field):
    response = staff_client.post(reverse("dashboard:what-if"), data)

    assert response.status_code == 422
    assert field in response.context["form"].errors
    assert f'data-testid="what-if-error-{field}"' in response.content.decode()
    assert response.context["result"] is None


def test_what_if_bad_input_under_htmx_answers_422_with_the_result_naming_the_field(
    staff_client, fleet
):
    response = staff_client.post(
        reverse("dashboard:what-if"),
        {"instance_type": "ml.m5.xlarge", "target_utilization": "7.25", "replicas": "1"},
        **htmx("what-if-result"),
    )

    body = response.content.decode()
    # 422 is the status the dashboard's htmx configuration swaps, so the errors show in place.
    assert response.status_code == 422
    assert body.lstrip().startswith('<section id="what-if-result"') and "<html" not in body
    assert 'data-testid="what-if-error-target_utilization"' in body
    assert "7.25" not in body  # the input is not echoed back


def test_what_if_on_a_type_too_small_is_a_form_error(staff_client, fleet):
    fleet.acme_v1.host_memory_mb = 20000.0
    fleet.acme_v1.save()
    fleet.acme_placement.host_memory_mb = None
    fleet.acme_placement.save()

    response = staff_client.post(
        reverse("dashboard:what-if"),
        {"instance_type": "ml.c5.xlarge", "target_utilization": "0.8", "replicas": "1"},
    )

    assert response.status_code == 422
    assert "fits no instance type" in response.context["form"].errors["instance_type"][0]


def test_landing_page_renders_for_staff_with_an_empty_fleet(staff_client):
    response = staff_client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    costs = response.context["figures"]["costs"]
    assert costs["usd_per_hour"] == 0 and costs["savings"] is None


def test_the_overview_refresh_has_no_live_region_but_names_each_figure_for_the_announcer(
    staff_client, fleet
):
    page = staff_client.get(reverse("dashboard:overview")).content.decode()
    partial = staff_client.get(reverse("dashboard:overview"), **htmx("overview-figures"))

    body = partial.content.decode()
    assert "aria-live" not in body  # screen readers no longer re-read every card every 5 s
    assert 'data-testid="fleet-cost-per-hour" data-announce="Cost per hour"' in body
    assert 'data-testid="models-loaded" data-announce="Models loaded"' in body
    # The one live region on the page: small, polite, outside every refreshed part.
    assert page.count("aria-live") == 1
    assert 'id="live-announcer" data-testid="live-announcer"' in page
    assert 'aria-live="polite"' in page and "js/dashboard.js" in page


def test_a_members_overview_announces_their_share_by_its_name(member_client, fleet):
    body = member_client.get(reverse("dashboard:overview"), **htmx("overview-figures"))

    assert 'data-announce="Your share of cost per hour"' in body.content.decode()


def test_events_refuse_an_unknown_severity_naming_the_field_without_echoing_it(staff_client, fleet):
    url = reverse("dashboard:events")

    page = staff_client.get(url, {"severity": "catastrophic"})
    partial = staff_client.get(url, {"severity": "catastrophic"}, **htmx("event-rows"))

    for response in (page, partial):
        body = response.content.decode()
        assert response.status_code == 422
        assert 'data-testid="event-filter-error-severity"' in body
        assert "Choose one of the listed severities." in body
        assert "catastrophic" not in body
        assert "fleet repair" not in body  # no events the filter did not select
    assert "<html" not in partial.content.decode()
    assert 'hx-trigger="every 10s"' not in partial.content.decode()  # nothing to refresh


class _Elements(HTMLParser):
    """Each start tag of a page with its attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def _pollers(html: str) -> list[tuple[str, str]]:
    """(element id, URL) of every element of a page that polls."""
    return [
        (attrs["id"], unescape(attrs["hx-get"]))
        for _, attrs in _Elements(html).tags
        if attrs.get("hx-trigger", "").startswith("every ")
    ]


def _form_fields(html: str) -> list[str]:
    """The fields a user can edit (hidden inputs such as the CSRF token are not)."""
    return [
        attrs.get("id") or attrs.get("name", tag)
        for tag, attrs in _Elements(html).tags
        if tag in ("select", "textarea")
        or (tag == "input" and attrs.get("type") not in ("hidden", "submit", "button"))
    ]


def test_no_poll_answer_carries_a_form_field_so_a_poll_never_replaces_one_being_edited(
    staff_client, fleet
):
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()
    Deployment.objects.create(
        model=fleet.acme_model,
        status=Deployment.Status.ROLLING_OUT,
        target_version=fleet.acme_v1,
        endpoint=fleet.endpoint,
    )
    job = TrainingJobFactory(model=fleet.acme_model, status="running", progress_pct=42)
    pages = [
        reverse("dashboard:overview"),
        reverse("dashboard:endpoints"),
        reverse("dashboard:endpoint", args=[fleet.endpoint.name]),
        reverse("dashboard:tenant", args=["acme"]),
        reverse("dashboard:training-job", args=["acme", job.pk]),
        reverse("dashboard:events"),
    ]

    polled = {}
    for url in pages:
        page = staff_client.get(url).content.decode()
        for element, poll_url in _pollers(page):
            answer = staff_client.get(poll_url, **htmx(element))
            assert answer.status_code == 200, (url, element)
            polled[element] = _form_fields(answer.content.decode())

    # Every live part of every page was polled, the rollout's and the training job's included ...
    assert {
        "overview-figures",
        "overview-costs",
        "overview-charts",
        "endpoint-rows",
        "endpoint-instances",
        "tenant-cost",
        "tenant-models-status",
        f"training-job-{job.pk}",
        "event-rows",
    } <= set(polled)
    # ... and none answered a field: the deploy forms' choices are never replaced mid-selection.
    assert {element: fields for element, fields in polled.items() if fields} == {}


def test_the_what_if_page_shows_what_a_rebalance_would_save_and_runs_it(staff_client, fleet):
    page = staff_client.get(reverse("dashboard:what-if")).content.decode()
    assert reverse("dashboard:rebalance") in page

    shown = staff_client.get(reverse("dashboard:rebalance"), **htmx("rebalance"))
    asked = staff_client.post(reverse("dashboard:rebalance"), **htmx("rebalance"))

    body = shown.content.decode()
    assert shown.status_code == 200 and body.lstrip().startswith('<section id="rebalance"')
    assert 'data-testid="rebalance-instances-saved"' in body and "<html" not in body
    assert asked.status_code == 200
    assert 'data-testid="rebalance-requested"' in asked.content.decode()
    assert Event.objects.filter(kind="rebalance.requested").count() == 1
