"""Every list of the REST API is paginated alike: ``?limit=&offset=``, one envelope, a stable
order, 400s naming the parameter, counts scoped to the caller, and a bounded number of queries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from rest_framework.test import APIClient

from config.pagination import DEFAULT_LIMIT, MAX_LIMIT
from deployments.models import Event
from models_registry.models import Dataset, TrainingJob
from tenants.models import ApiToken, Tenant
from tenants.services import issue_token
from tests.factories import (
    DatasetFactory,
    EventFactory,
    ModelVersionFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)

pytestmark = pytest.mark.django_db

# Authentication, the tenant, the model, the count and the page: a page never costs more,
# however long it is.
MAX_QUERIES_PER_PAGE = 5


@dataclass
class World:
    tenant: Tenant
    other: Tenant
    clients: dict[str, APIClient]

    @property
    def model(self):
        return self.tenant.models.get(name="intents")

    @property
    def dataset(self) -> Dataset:
        return self.tenant.datasets.get(name="tickets.csv")


@pytest.fixture
def world(db) -> World:
    tenant = TenantFactory(slug="acme")
    other = TenantFactory(slug="globex")
    TenantModelFactory(tenant=tenant, name="intents")
    DatasetFactory(tenant=tenant, name="tickets.csv")
    clients = {}
    for scope, owner in (("platform", None), ("tenant", tenant)):
        client = APIClient()
        secret = issue_token(name=f"{scope}-caller", tenant=owner, actor="test").secret
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        clients[scope] = client
    return World(tenant=tenant, other=other, clients=clients)


def _newest_first(rows) -> list[int]:
    """Ids in the documented order of time-stamped lists: ``-created_at, -id``."""
    return [pk for _created, pk in sorted(rows, reverse=True)]


def _add_tenants(world: World, count: int) -> None:
    TenantFactory.create_batch(count)


def _add_tokens(world: World, count: int) -> None:
    for index in range(count):
        issue_token(name=f"batch-{index}", tenant=world.tenant, actor="test")
    issue_token(name="theirs", tenant=world.other, actor="test")


def _add_datasets(world: World, count: int) -> None:
    DatasetFactory.create_batch(count, tenant=world.tenant)
    DatasetFactory(tenant=world.other)


def _add_models(world: World, count: int) -> None:
    for model in TenantModelFactory.create_batch(count, tenant=world.tenant):
        model.active_version = ModelVersionFactory(model=model)
        model.save(update_fields=["active_version"])
    TenantModelFactory(tenant=world.other)


def _add_versions(world: World, count: int) -> None:
    versions = ModelVersionFactory.create_batch(count, model=world.model)
    world.model.active_version = versions[0]
    world.model.save(update_fields=["active_version"])
    ModelVersionFactory(model=TenantModelFactory(tenant=world.other))


def _add_jobs(world: World, count: int) -> None:
    model, dataset = world.model, world.dataset
    for index in range(count):
        job = TrainingJobFactory(model=model, dataset=dataset)
        if index % 2:
            ModelVersionFactory(model=model, training_job=job)
    TrainingJobFactory(model=TenantModelFactory(tenant=world.other))


def _add_tenant_events(world: World, count: int) -> None:
    EventFactory.create_batch(count, tenant=world.tenant, kind="training.started")
    EventFactory(tenant=world.other)
    EventFactory(tenant=None, kind="instance.unhealthy")


def _add_events(world: World, count: int) -> None:
    """Rows of either tenant and of the fleet: a platform caller reads them all."""
    for index in range(count):
        EventFactory(tenant=(world.tenant, world.other, None)[index % 3])


@dataclass(frozen=True)
class Listing:
    """One list endpoint: who reads it, how to add rows to it, its documented order."""

    url: Callable[[World], str]
    caller: str
    key: str
    add_rows: Callable[[World, int], None]
    documented_order: Callable[[World], list]


LISTINGS = {
    "tenants": Listing(
        url=lambda w: "/api/v1/tenants/",
        caller="platform",
        key="slug",
        add_rows=_add_tenants,
        documented_order=lambda w: sorted(Tenant.objects.values_list("slug", flat=True)),
    ),
    "tokens": Listing(
        url=lambda w: f"/api/v1/tenants/{w.tenant.slug}/tokens/",
        caller="tenant",
        key="id",
        add_rows=_add_tokens,
        documented_order=lambda w: _newest_first(
            ApiToken.objects.filter(tenant=w.tenant).values_list("created_at", "pk")
        ),
    ),
    "datasets": Listing(
        url=lambda w: f"/api/v1/tenants/{w.tenant.slug}/datasets/",
        caller="tenant",
        key="id",
        add_rows=_add_datasets,
        documented_order=lambda w: _newest_first(w.tenant.datasets.values_list("created_at", "pk")),
    ),
    "models": Listing(
        url=lambda w: f"/api/v1/tenants/{w.tenant.slug}/models/",
        caller="tenant",
        key="name",
        add_rows=_add_models,
        documented_order=lambda w: sorted(w.tenant.models.values_list("name", flat=True)),
    ),
    "versions": Listing(
        url=lambda w: f"/api/v1/tenants/{w.tenant.slug}/models/intents/versions/",
        caller="tenant",
        key="number",
        add_rows=_add_versions,
        documented_order=lambda w: sorted(
            w.model.versions.values_list("number", flat=True), reverse=True
        ),
    ),
    "training-jobs": Listing(
        url=lambda w: f"/api/v1/tenants/{w.tenant.slug}/models/intents/training-jobs/",
        caller="tenant",
        key="id",
        add_rows=_add_jobs,
        documented_order=lambda w: _newest_first(
            TrainingJob.objects.filter(model=w.model).values_list("created_at", "pk")
        ),
    ),
    "tenant-events": Listing(
        url=lambda w: f"/api/v1/tenants/{w.tenant.slug}/events/",
        caller="tenant",
        key="id",
        add_rows=_add_tenant_events,
        documented_order=lambda w: _newest_first(
            Event.objects.filter(tenant=w.tenant).values_list("created_at", "pk")
        ),
    ),
    "events": Listing(
        url=lambda w: "/api/v1/events/",
        caller="platform",
        key="id",
        add_rows=_add_events,
        documented_order=lambda w: _newest_first(Event.objects.values_list("created_at", "pk")),
    ),
}
listings = pytest.mark.parametrize("listing", LISTINGS.values(), ids=LISTINGS.keys())


def _same_instant_for_every_row() -> None:
    """Rows created in one instant: only the id can keep their order stable across pages."""
    instant = datetime(2026, 1, 1, tzinfo=UTC)
    for model in (ApiToken, Dataset, TrainingJob, Event):
        model.objects.update(created_at=instant)


def _query(url: str) -> dict[str, str]:
    return {name: values[-1] for name, values in parse_qs(urlsplit(url).query).items()}


@listings
def test_a_list_answers_the_envelope_with_the_default_limit(world, listing):
    listing.add_rows(world, DEFAULT_LIMIT + 5)

    response = world.clients[listing.caller].get(listing.url(world))

    assert response.status_code == 200, response.content
    body = response.json()
    assert list(body) == ["count", "next", "previous", "results"]
    assert body["count"] == len(listing.documented_order(world)) > DEFAULT_LIMIT
    assert len(body["results"]) == DEFAULT_LIMIT
    assert _query(body["next"]) == {"limit": str(DEFAULT_LIMIT), "offset": str(DEFAULT_LIMIT)}
    assert body["previous"] is None


@listings
def test_next_and_previous_walk_every_row_once_in_the_documented_order(world, listing):
    listing.add_rows(world, 7)
    _same_instant_for_every_row()
    client = world.clients[listing.caller]

    pages, url = [], f"{listing.url(world)}?limit=3"
    while url:
        body = client.get(url).json()
        pages.append([row[listing.key] for row in body["results"]])
        last, url = body, body["next"]
    walked_back, url = [], last["previous"]
    while url:
        body = client.get(url).json()
        walked_back.insert(0, [row[listing.key] for row in body["results"]])
        url = body["previous"]

    expected = listing.documented_order(world)
    assert [key for page in pages for key in page] == expected
    assert last["count"] == len(expected)
    assert all(len(page) == 3 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 3
    assert walked_back == pages[:-1]


def test_a_limit_above_the_maximum_is_capped(world):
    Tenant.objects.bulk_create(
        Tenant(slug=f"bulk-{index:04d}", name=f"Bulk {index}") for index in range(MAX_LIMIT + 5)
    )

    body = world.clients["platform"].get("/api/v1/tenants/?limit=5000").json()

    assert len(body["results"]) == MAX_LIMIT
    assert body["count"] == Tenant.objects.count()
    assert _query(body["next"]) == {"limit": str(MAX_LIMIT), "offset": str(MAX_LIMIT)}


def test_an_offset_past_the_end_is_an_empty_page(world):
    client = world.clients["platform"]

    for offset in ("2", "3", "9" * 40):
        body = client.get(f"/api/v1/tenants/?offset={offset}").json()
        assert body["count"] == 2 and body["results"] == [] and body["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=+5", "limit"),
        ("limit=%205", "limit"),
        ("limit=%D9%A5", "limit"),  # an Arabic-Indic five: a digit, but not 0-9
        ("offset=-1", "offset"),
        ("offset=1e3", "offset"),
        ("offset=", "offset"),
        ("limit=10&offset=later", "offset"),
    ],
)
def test_a_malformed_limit_or_offset_is_a_400_naming_it(world, query, field):
    response = world.clients["platform"].get(f"/api/v1/tenants/?{query}")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and field in error["message"]


@listings
def test_every_list_refuses_a_malformed_limit(world, listing):
    response = world.clients[listing.caller].get(f"{listing.url(world)}?limit=-3")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "limit"


def test_a_400_does_not_echo_the_value_sent(world):
    sent = "x" * 20_000

    response = world.clients["platform"].get(f"/api/v1/tenants/?offset={sent}")

    assert response.status_code == 400
    assert len(response.content) < 300 and "xxxx" not in response.content.decode()


def test_a_tenant_token_counts_only_its_own_rows(world):
    TenantFactory.create_batch(3)
    DatasetFactory.create_batch(4, tenant=world.other)
    issue_token(name="theirs", tenant=world.other, actor="test")
    client = world.clients["tenant"]

    tenants = client.get("/api/v1/tenants/?limit=1").json()
    datasets = client.get(f"/api/v1/tenants/{world.tenant.slug}/datasets/").json()
    tokens = client.get(f"/api/v1/tenants/{world.tenant.slug}/tokens/").json()
    everyone = world.clients["platform"].get("/api/v1/tenants/?limit=1").json()

    assert (tenants["count"], tenants["next"]) == (1, None)
    assert [row["slug"] for row in tenants["results"]] == ["acme"]
    assert datasets["count"] == 1 and datasets["results"][0]["name"] == "tickets.csv"
    assert tokens["count"] == 1 and tokens["results"][0]["tenant"] == "acme"
    assert everyone["count"] == 5 and everyone["next"] is not None


@listings
def test_a_page_costs_the_same_queries_for_3_rows_as_for_150(
    world, listing, django_assert_max_num_queries
):
    client = world.clients[listing.caller]
    url = f"{listing.url(world)}?limit={MAX_LIMIT}"
    listing.add_rows(world, 3)
    client.get(url)  # the token's once-a-minute last_used_at write happens here

    with django_assert_max_num_queries(MAX_QUERIES_PER_PAGE) as few:
        small = client.get(url).json()
    listing.add_rows(world, 147)
    with django_assert_max_num_queries(MAX_QUERIES_PER_PAGE) as many:
        large = client.get(url).json()

    assert len(large["results"]) - len(small["results"]) == 147
    assert len(many.captured_queries) == len(few.captured_queries)
