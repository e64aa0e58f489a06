"""Pages and fleet APIs at scale: their queries do not grow with the fleet, their answers stay
one page long, and the overview's 5-second refresh sends nothing while its figures hold still.

(Timings at 1,000 to 100,000 models are measured by bench/control_plane.py, not here.)
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deployments.models import Endpoint, Instance, Placement
from deployments.selectors.endpoints import PLACEMENTS_PER_PAGE, SEGMENTS_PER_INSTANCE
from tenants.models import Tenant
from tenants.services import issue_token
from tests.deployments.dashboard.conftest import htmx
from tests.deployments.fleet_support import build_mixed_fleet
from tests.factories import (
    EndpointFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
)

pytestmark = pytest.mark.django_db


def requests(world: dict) -> dict:
    """Every fleet page and API a person or a script reads, as (client, method, url, extra)."""
    staff, api, tenant, endpoint = world["staff"], world["api"], world["tenant"], world["endpoint"]
    what_if = {"instance_type": "ml.m5.xlarge", "target_utilization": "0.8", "replicas": "1"}
    return {
        "fleet costs API": (api, "get", reverse("fleet-costs"), {}),
        "fleet utilization API": (api, "get", reverse("fleet-utilization"), {}),
        "tenant costs API": (api, "get", reverse("fleet-tenant-costs"), {}),
        "endpoint costs API": (api, "get", reverse("fleet-endpoint-costs"), {}),
        "tenants API": (api, "get", reverse("tenant-list"), {}),
        "overview": (staff, "get", reverse("dashboard:overview"), {}),
        "overview refresh": (staff, "get", reverse("dashboard:overview"), htmx("overview-figures")),
        "overview costs": (staff, "get", reverse("dashboard:overview"), htmx("overview-costs")),
        "overview charts": (staff, "get", reverse("dashboard:overview"), htmx("overview-charts")),
        "tenant costs": (staff, "get", reverse("dashboard:tenant-costs"), {}),
        "endpoints": (staff, "get", reverse("dashboard:endpoints"), {}),
        "endpoint": (staff, "get", reverse("dashboard:endpoint", args=[endpoint]), {}),
        "tenants": (staff, "get", reverse("dashboard:tenants"), {}),
        "tenant": (staff, "get", reverse("dashboard:tenant", args=[tenant]), {}),
        "what-if": (staff, "post", reverse("dashboard:what-if"), {"data": what_if}),
    }


def measure(world: dict) -> dict[str, tuple[int, int]]:
    """(status, queries) of each request."""
    counts = {}
    for name, (client, method, url, extra) in requests(world).items():
        extra = dict(extra)
        data = extra.pop("data", None)
        with CaptureQueriesContext(connection) as queries:
            response = getattr(client, method)(url, data, **extra)
        counts[name] = (response.status_code, len(queries))
    return counts


@pytest.fixture
def world(client, staff_user, api_client):
    tenants = build_mixed_fleet(tenants=4)
    client.force_login(staff_user)
    api_client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {issue_token(name='ops', tenant=None, actor='t').secret}"
    )
    endpoint = Endpoint.objects.filter(name__startswith="local-").order_by("pk").first()
    return {
        "staff": client,
        "api": api_client,
        "tenant": tenants[0].slug,
        "endpoint": endpoint.name,
    }


def test_fleet_pages_and_apis_make_as_many_queries_for_a_larger_fleet(world):
    measure(world)  # first uses (a token's first use is recorded) are not the steady state
    small = measure(world)
    build_mixed_fleet(tenants=40, seed=8)  # ten times the tenants, more endpoints and traffic
    assert Placement.objects.count() > 8 * 4

    large = measure(world)

    assert all(status == 200 for status, _ in small.values()), small
    assert large == small


def test_lists_on_a_page_stay_bounded(world):
    build_mixed_fleet(tenants=40, seed=8)
    staff, api = world["staff"], world["api"]

    costs = api.get(reverse("fleet-costs")).json()
    assert len(costs["tenants"]) == 10 < costs["tenants_count"]
    first = api.get(reverse("fleet-tenant-costs"), {"limit": 5}).json()
    assert first["count"] == costs["tenants_count"]
    assert [r["tenant"] for r in first["results"]] == [r["tenant"] for r in costs["tenants"][:5]]
    assert "offset=5" in first["next"]
    rest = api.get(first["next"]).json()["results"]
    assert [r["tenant"] for r in rest] == [r["tenant"] for r in costs["tenants"][5:10]]
    endpoints = api.get(reverse("fleet-endpoint-costs"), {"limit": 2}).json()
    assert endpoints["count"] == costs["endpoints_count"] and len(endpoints["results"]) == 2

    overview = staff.get(reverse("dashboard:overview")).content.decode()
    assert overview.count('data-testid="tenant-cost-') == 10 + ('tenant-cost-idle"' in overview)
    assert f"All {costs['tenants_count']} tenants' costs" in overview
    full = staff.get(reverse("dashboard:tenant-costs"), {"page": 2}).context["page"]
    assert full.number == 1  # 50 a page: one page holds them all
    assert len(full.costs.rows) == costs["tenants_count"]


@pytest.fixture
def crowded_endpoint(db) -> Endpoint:
    """One instance holding 60 models of 10 MB and one of 500 MB, recently used in order."""
    from datetime import timedelta

    from django.utils import timezone

    endpoint = EndpointFactory(name="crowded")
    instance = InstanceFactory(endpoint=endpoint, memory_budget_mb=13107)
    now = timezone.now()
    for index in range(60):
        tenant = TenantFactory(slug=f"crowd-{index:02d}")
        PlacementFactory(
            version=ModelVersionFactory(model=TenantModelFactory(tenant=tenant, name="intents")),
            instance=instance,
            host_memory_mb=10.0 + index / 100,
            last_invoked_at=now - timedelta(minutes=index),
        )
    big = PlacementFactory(instance=instance, host_memory_mb=500.0, last_invoked_at=None)
    big.version.model.tenant.slug = "whale"
    big.version.model.tenant.save()
    return endpoint


def test_an_instance_bar_draws_its_largest_models_then_the_rest_as_one(
    staff_client, crowded_endpoint
):
    response = staff_client.get(reverse("dashboard:endpoint", args=["crowded"]))

    bar = response.context["detail"]["instances"][0]
    shown = bar["segments"]
    assert len(shown) == SEGMENTS_PER_INSTANCE
    sizes = sorted((s["memory_mb"] for s in shown), reverse=True)
    assert sizes[0] == 500.0 and sizes[1:] == [10.0 + i / 100 for i in range(59, 52, -1)]
    # Drawn most recently used first; the never-invoked whale last.
    assert [s["lru_rank"] for s in shown] == sorted(s["lru_rank"] for s in shown)
    assert shown[-1]["memory_mb"] == 500.0
    assert bar["more"]["models"] == 61 - SEGMENTS_PER_INSTANCE
    assert bar["models"] == 61
    assert bar["used_mb"] == pytest.approx(500 + sum(10 + i / 100 for i in range(60)))
    assert bar["more"]["memory_mb"] == pytest.approx(bar["used_mb"] - sum(sizes))
    body = response.content.decode()
    assert body.count('class="segment seg-') == SEGMENTS_PER_INSTANCE
    assert f'data-testid="segment-more-{bar["instance"].pk}" data-models="53"' in body
    assert "61 models resident" in body


def test_the_model_table_is_paginated_and_searchable(staff_client, crowded_endpoint):
    url = reverse("dashboard:endpoint", args=["crowded"])

    first = staff_client.get(url)
    second = staff_client.get(url, {"page": 2})
    found = staff_client.get(url, {"q": "crowd-0"})
    nothing = staff_client.get(url, {"q": "nobody"}, **htmx("endpoint-placements"))

    page = first.context["detail"]["placements"]
    assert len(page.object_list) == PLACEMENTS_PER_PAGE and page.paginator.count == 61
    assert page.object_list[0]["placement"].version.model.tenant.slug == "crowd-00"
    assert "Page 1 of 2 (61 models)" in first.content.decode()
    assert len(second.context["detail"]["placements"].object_list) == 11
    assert {
        r["placement"].version.model.tenant.slug for r in found.context["detail"]["placements"]
    } == {f"crowd-0{i}" for i in range(10)}
    body = nothing.content.decode()
    assert "<html" not in body and 'data-testid="no-placements"' in body and "nobody" in body
    assert found.content.decode().count('data-testid="placement-row-') == 10


def test_the_overview_refresh_is_empty_until_a_figure_changes(staff_client, fleet):
    page = staff_client.get(reverse("dashboard:overview"))
    version = page.context["figures_version"]
    assert f'data-figures-version="{version}"' in page.content.decode()
    poll = htmx("overview-figures") | {"HTTP_IF_NONE_MATCH": f'"{version}"'}

    unchanged = staff_client.get(reverse("dashboard:overview"), **poll)
    Placement.objects.filter(pk=fleet.globex_placement.pk).update(actual_state="evicted")
    changed = staff_client.get(reverse("dashboard:overview"), **poll)

    assert unchanged.status_code == 204 and unchanged.content == b""
    assert changed.status_code == 200
    assert changed["ETag"] != f'"{version}"'
    assert changed.context["figures"]["utilization"]["models_loaded"] == 1
    assert f'data-figures-version="{changed["ETag"].strip(chr(34))}"' in changed.content.decode()
    # The refresh carries the figures only, not the cost tables or charts.
    assert 'id="tenant-costs"' not in changed.content.decode()
    again = staff_client.get(
        reverse("dashboard:overview"),
        **htmx("overview-figures") | {"HTTP_IF_NONE_MATCH": changed["ETag"]},
    )
    assert again.status_code == 204


def test_the_endpoint_refresh_is_empty_until_its_instances_change(staff_client, fleet):
    url = reverse("dashboard:endpoint", args=[fleet.endpoint.name])
    version = staff_client.get(url).context["live_version"]
    poll = htmx("endpoint-instances") | {"HTTP_IF_NONE_MATCH": f'"{version}"'}

    assert staff_client.get(url, **poll).status_code == 204
    Instance.objects.filter(pk=fleet.instance.pk).update(status=Instance.Status.UNHEALTHY)
    changed = staff_client.get(url, **poll)

    assert changed.status_code == 200 and 'id="endpoint-instances"' in changed.content.decode()


def test_the_tenants_page_is_paginated_and_searchable(staff_client, db):
    for index in range(55):
        TenantFactory(slug=f"acme-{index:02d}" if index % 2 else f"zeta-{index:02d}")
    url = reverse("dashboard:tenants")

    first = staff_client.get(url)
    last = staff_client.get(url, {"page": 2})
    found = staff_client.get(url, {"q": "zeta"})

    assert len(first.context["tenants"]) == 50
    assert len(last.context["tenants"]) == Tenant.objects.count() - 50
    assert "Page 1 of 2" in first.content.decode()
    assert {t.slug[:4] for t in found.context["tenants"]} == {"zeta"}
    assert len(found.context["tenants"]) == 28


def test_a_tenant_member_sees_only_its_own_costs_in_the_full_list(member_client, fleet):
    response = member_client.get(reverse("dashboard:tenant-costs"))

    assert [row["tenant"] for row in response.context["page"].costs.rows] == ["acme"]
    assert 'data-testid="tenant-cost-globex"' not in response.content.decode()


def test_an_endpoints_instances_are_drawn_a_page_at_a_time(staff_client, db):
    from deployments.selectors.endpoints import INSTANCES_PER_PAGE

    endpoint = EndpointFactory(name="wide")
    for ordinal in range(INSTANCES_PER_PAGE + 2):
        PlacementFactory(instance=InstanceFactory(endpoint=endpoint, ordinal=ordinal))
    url = reverse("dashboard:endpoint", args=["wide"])

    first = staff_client.get(url)
    second = staff_client.get(url, {"instances": 2, "q": "tenant"})

    assert [b["instance"].ordinal for b in first.context["detail"]["instances"]] == list(
        range(INSTANCES_PER_PAGE)
    )
    body = first.content.decode()
    assert f"Instances 1–{INSTANCES_PER_PAGE} of {INSTANCES_PER_PAGE + 2}" in body
    assert f"× {INSTANCES_PER_PAGE + 2})" in body  # the cost counts every live instance
    assert [b["instance"].ordinal for b in second.context["detail"]["instances"]] == [
        INSTANCES_PER_PAGE,
        INSTANCES_PER_PAGE + 1,
    ]
    # The refresh keeps its page; the pager keeps the model table's search.
    assert f'hx-get="{url}?instances=2"' in second.content.decode()
    assert "?q=tenant&amp;instances=1" in second.content.decode()
