"""The event log over the API: platform callers read every event at /api/v1/events/, a tenant
reads its own at /api/v1/tenants/{slug}/events/, newest first, filtered by type (exact, or every
type under a prefix ending in a dot), severity and time; a bad filter is a 400 naming it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from deployments.models import Event
from tenants.services import issue_token
from tests.factories import EventFactory, ModelVersionFactory, TenantFactory, TenantModelFactory

pytestmark = pytest.mark.django_db

MORNING = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def client_for(tenant=None) -> APIClient:
    client = APIClient()
    secret = issue_token(name="reader", tenant=tenant, actor="test").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def log(db):
    """Events of two tenants and of the fleet, an hour apart, the newest last."""
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    version = ModelVersionFactory(model=TenantModelFactory(tenant=acme, name="intents"), number=3)
    rows = [
        ("training.started", "info", acme, None),
        ("training.succeeded", "info", acme, version),
        ("deployment.failed", "error", acme, version),
        ("training.failed", "warning", globex, None),
        ("instance.unhealthy", "warning", None, None),
        ("training", "info", acme, None),
    ]
    for hour, (kind, severity, tenant, on_version) in enumerate(rows):
        event = EventFactory(kind=kind, severity=severity, tenant=tenant, version=on_version)
        Event.objects.filter(pk=event.pk).update(created_at=MORNING + timedelta(hours=hour))
    # Issuing the readers' tokens records events too; they are not part of this log.
    client = {"platform": client_for(), "acme": client_for(acme), "globex": client_for(globex)}
    Event.objects.filter(kind="token.issued").delete()
    return client


def types(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [event["type"] for event in response.json()["results"]]


def test_a_tenant_reads_its_own_events_newest_first(log):
    response = log["acme"].get("/api/v1/tenants/acme/events/")

    assert types(response) == [
        "training",
        "deployment.failed",
        "training.succeeded",
        "training.started",
    ]
    failed = response.json()["results"][1]
    assert failed["tenant"] == "acme" and failed["severity"] == "error"
    assert (failed["model"], failed["version"]) == ("intents", 3)
    assert response.json()["count"] == 4


def test_platform_callers_read_every_event_and_tenants_only_theirs(log):
    everything = log["platform"].get("/api/v1/events/")
    theirs = log["platform"].get("/api/v1/tenants/globex/events/")

    assert len(types(everything)) == 6 and "instance.unhealthy" in types(everything)
    assert types(theirs) == ["training.failed"]
    assert log["acme"].get("/api/v1/events/").status_code == 403
    assert log["acme"].get("/api/v1/tenants/globex/events/").status_code == 404


def test_a_type_matches_exactly_and_a_prefix_ending_in_a_dot_matches_every_type_under_it(log):
    exact = log["acme"].get("/api/v1/tenants/acme/events/?type=training")
    prefix = log["acme"].get("/api/v1/tenants/acme/events/?type=training.")
    one = log["platform"].get("/api/v1/events/?type=training.failed")

    assert types(exact) == ["training"]
    assert types(prefix) == ["training.succeeded", "training.started"]
    assert types(one) == ["training.failed"]


def test_events_are_filtered_by_severity_and_a_time_window(log):
    warnings = log["platform"].get("/api/v1/events/?severity=warning")
    window = log["acme"].get(
        "/api/v1/tenants/acme/events/",
        {"since": "2026-03-02T10:00:00Z", "until": "2026-03-02T11:00:00+00:00"},
    )
    # Without an offset a time is UTC; since is inclusive, until exclusive.
    naive = log["acme"].get("/api/v1/tenants/acme/events/?since=2026-03-02T11:00:00")
    empty = log["acme"].get(
        "/api/v1/tenants/acme/events/?since=2026-03-02T12:00:00Z&until=2026-03-02T09:00:00Z"
    )

    assert types(warnings) == ["instance.unhealthy", "training.failed"]
    assert types(window) == ["training.succeeded"]
    assert types(naive) == ["training", "deployment.failed"]
    assert types(empty) == []


def test_filters_combine_with_pages(log):
    first = log["platform"].get("/api/v1/events/?type=training.&limit=2").json()
    second = log["platform"].get(first["next"]).json()

    assert first["count"] == 3
    assert [e["type"] for e in first["results"] + second["results"]] == [
        "training.failed",
        "training.succeeded",
        "training.started",
    ]
    assert "type=training." in first["next"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("type=Training", "type"),
        ("type=training..failed", "type"),
        ("type=" + "a" * 65, "type"),
        ("type=", "type"),
        ("severity=fatal", "severity"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("since=", "since"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_parameter_without_repeating_it(log, query, parameter):
    response = log["acme"].get(f"/api/v1/tenants/acme/events/?{query}")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == parameter and parameter in error["message"]
    sent = query.split("=", 1)[1]
    assert not sent or sent not in response.content.decode()
