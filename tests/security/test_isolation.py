"""Tenant isolation: every API route and dashboard page, for every kind of caller.

The routes come from the URL resolver, so a route added without an entry in the matrix below fails
``test_every_route_has_a_matrix_entry``. Each entry is called for real against tenant Alpha's
objects (tenant, dataset, model, versions, training job, deployment, instance, endpoint) by:
Alpha's token, Bravo's token, Bravo's dashboard login on the API, no token, a revoked Alpha token
and a platform token (API); Alpha's member, Bravo's member, an anonymous visitor and staff
(dashboard). Every answer is checked for its status and for the names of any tenant the caller may
not see; another tenant's object answers exactly like a missing one. The inference proxy's routes
(answered by the ASGI application before Django) are called through ``config.asgi.application``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from config.events import record_event
from deployments.models import Deployment, Placement, VersionUsageMinute
from tenants.models import Membership
from tenants.services import IssuedToken, issue_token, revoke_token
from tests.factories import (
    DatasetFactory,
    EndpointFactory,
    EventFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
    UserFactory,
)
from tests.security.asgi import asgi_request
from webhooks.models import WebhookDelivery
from webhooks.services import create_webhook

# Routes with rules of their own: the admin (staff only, checked below), the OpenAPI schema and
# its docs (public descriptions of the API, no tenant data), static files.
EXCLUDED_PREFIXES = ("admin/", "api/schema/", "api/docs/", "static/")
GHOST_SLUG = "ghost-corp-0x"
GHOST_ID = 987654321


# --- The world: two tenants with distinctive names --------------------------------------------


@dataclass
class TenantWorld:
    """One tenant's objects and the strings that must never reach another tenant's callers."""

    tenant: object
    model: object
    dataset: object
    versions: list
    job: object
    token: IssuedToken
    spare_token: IssuedToken
    member: object
    webhook: object
    delivery: object
    markers: set[str] = field(default_factory=set)


@dataclass
class World:
    alpha: TenantWorld
    bravo: TenantWorld
    revoked: IssuedToken
    platform: IssuedToken
    staff: object
    endpoint: object
    instance: object
    spare_instance: object


def _tenant_world(prefix: str, display: str, *, endpoint, instance) -> TenantWorld:
    tenant = TenantFactory(slug=f"{prefix}-corp", name=f"{display} Holdings")
    dataset = DatasetFactory(
        tenant=tenant,
        name=f"{prefix}-tickets.csv",
        labels={f"{prefix}-refund": 150, f"{prefix}-cancel": 150},
    )
    model = TenantModelFactory(tenant=tenant, name=f"{prefix}-intents")
    TenantModelFactory(tenant=tenant, name=f"{prefix}-sentiment")
    job = TrainingJobFactory(model=model, dataset=dataset)
    now = timezone.now()
    metrics = {"macro_f1": 0.9, "per_label": {f"{prefix}-refund": 0.9}}
    v1, v2, v3 = (
        ModelVersionFactory(
            model=model,
            number=number,
            package_uri=f"/tmp/{prefix}-intents-v{number}.tar.gz",
            metrics=metrics,
            promoted_at=now - timedelta(days=3 - number) if number < 3 else None,
        )
        for number in (1, 2, 3)
    )
    v1.training_job = job
    v1.save()
    model.active_version = v2
    model.save()
    Deployment.objects.create(
        model=model,
        endpoint=endpoint,
        status=Deployment.Status.LIVE,
        live_version=v2,
        previous_version=v1,
    )
    PlacementFactory(
        version=v2,
        instance=instance,
        endpoint=endpoint,
        desired_state=Placement.DesiredState.LOADED,
        last_invoked_at=now,
    )
    VersionUsageMinute.objects.create(
        version=v2,
        endpoint=endpoint,
        tenant=tenant,
        minute=now.replace(second=0, microsecond=0) - timedelta(minutes=2),
        invocations=7,
        latency_histogram={"10": 7},
    )
    EventFactory(kind="deployment.requested", tenant=tenant, message=f"{prefix}-event rollout")
    token = issue_token(name=f"{prefix}-ci-token", tenant=tenant, actor="test")
    spare = issue_token(name=f"{prefix}-spare-token", tenant=tenant, actor="test")
    member = UserFactory(username=f"{prefix}-engineer", password=None)
    Membership.objects.create(user=member, tenant=tenant)
    webhook, _ = create_webhook(
        tenant=tenant,
        url=f"https://{prefix}-hooks.example.com/tenantml",
        event_types=["training."],
        description=f"{prefix}-webhook",
        actor="test",
    )
    record_event(kind="training.succeeded", message="Done.", actor="worker", tenant=tenant)
    delivery = webhook.deliveries.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.SUCCEEDED)
    world = TenantWorld(
        tenant=tenant,
        model=model,
        dataset=dataset,
        versions=[v1, v2, v3],
        job=job,
        token=token,
        spare_token=spare,
        member=member,
        webhook=webhook,
        delivery=delivery,
    )
    # Each marker names exactly one tenant's data: its slug and display name, its models,
    # dataset, labels, token names, token prefixes and access key ids, its events.
    world.markers = {
        tenant.slug,
        tenant.name,
        f"{prefix}-intents",
        f"{prefix}-sentiment",
        f"{prefix}-tickets",
        f"{prefix}-refund",
        f"{prefix}-ci-token",
        f"{prefix}-spare-token",
        f"{prefix}-event",
        f"{prefix}-engineer",
        f"{prefix}-hooks",
        f"{prefix}-webhook",
        delivery.event_id,
        token.token.prefix,
        spare.token.prefix,
        token.access_key_id,
        spare.access_key_id,
    }
    return world


def build_world() -> World:
    """Alpha and Bravo side by side on one shared endpoint, with every kind of caller."""
    endpoint = EndpointFactory(name="shared-intent-endpoint", max_instances=2)
    instance = InstanceFactory(endpoint=endpoint, ordinal=0)
    spare = InstanceFactory(endpoint=endpoint, ordinal=1)
    alpha = _tenant_world("alpha", "Alphaville", endpoint=endpoint, instance=instance)
    bravo = _tenant_world("bravo", "Bravoland", endpoint=endpoint, instance=instance)
    revoked = issue_token(name="alpha-old-token", tenant=alpha.tenant, actor="test")
    revoke_token(token=revoked.token, actor="test")
    alpha.markers |= {"alpha-old-token", revoked.token.prefix, revoked.access_key_id}
    return World(
        alpha=alpha,
        bravo=bravo,
        revoked=revoked,
        platform=issue_token(name="ops-token", tenant=None, actor="test"),
        staff=UserFactory(username="operator", is_staff=True, password=None),
        endpoint=endpoint,
        instance=instance,
        spare_instance=spare,
    )


@pytest.fixture
def world(db) -> World:
    return build_world()


# --- The matrix ---------------------------------------------------------------------------------

Kwargs = Callable[[World], dict]


def _slug(w: World) -> dict:
    return {"slug": w.alpha.tenant.slug}


def _model(w: World) -> dict:
    return {"slug": w.alpha.tenant.slug, "name": w.alpha.model.name}


def _no_args(w: World) -> dict:
    return {}


def _webhook(w: World) -> dict:
    return {"webhook_id": w.alpha.webhook.pk}


def _csv_upload(w: World) -> dict:
    rows = "text,label\n" + "".join(
        f"ticket {i} about a refund,refund\nticket {i} to cancel,cancel\n" for i in range(8)
    )
    return {"file": SimpleUploadedFile("fresh.csv", rows.encode(), content_type="text/csv")}


@dataclass(frozen=True)
class ApiCall:
    """One method of an API route and the status each caller gets.

    ``own`` is Alpha's token on Alpha's objects, ``other`` Bravo's token (and Bravo's dashboard
    login), ``platform`` a platform token; no token and a revoked token are always 401.
    """

    method: str
    kwargs: Kwargs
    own: int
    other: int
    platform: int
    body: Callable[[World], dict] | None = None
    multipart: bool = False


def api(method, kwargs, own, other=404, platform=None, body=None, multipart=False) -> ApiCall:
    return ApiCall(
        method, kwargs, own, other, own if platform is None else platform, body, multipart
    )


API_MATRIX: dict[str, list[ApiCall]] = {
    "tenant-list": [
        api("get", _no_args, 200, other=200),
        api(
            "post",
            _no_args,
            403,
            other=403,
            platform=201,
            body=lambda w: {"slug": "charlie-corp", "name": "Charlie"},
        ),
    ],
    "tenant-detail": [api("get", _slug, 200)],
    "tenant-tokens": [
        api("get", _slug, 200),
        api("post", _slug, 201, body=lambda w: {"name": "fresh-token"}),
    ],
    "tenant-token-detail": [
        api("delete", lambda w: _slug(w) | {"token_id": w.alpha.spare_token.token.pk}, 200)
    ],
    "dataset-list": [
        api("get", _slug, 200),
        api("post", _slug, 201, body=_csv_upload, multipart=True),
    ],
    "model-list": [
        api("get", _slug, 200),
        api("post", _slug, 201, body=lambda w: {"name": "fresh", "kind": "intent-classifier"}),
    ],
    "model-detail": [api("get", _model, 200)],
    "version-list": [api("get", _model, 200)],
    "version-promote": [
        api("post", lambda w: _model(w) | {"number": 3}, 200, body=lambda w: {"force": False})
    ],
    "model-rollback": [api("post", _model, 200)],
    "training-job-list": [
        api("get", _model, 200),
        api("post", _model, 202, body=lambda w: {"dataset": w.alpha.dataset.name}),
    ],
    "training-job-detail": [api("get", lambda w: {"job_id": w.alpha.job.pk}, 200)],
    "training-job-cancel": [api("post", lambda w: {"job_id": w.alpha.job.pk}, 202)],
    "deployment": [
        api("get", _model, 200),
        api("patch", _model, 200, body=lambda w: {"capture_sample_percent": 5}),
        api("post", _model, 202, body=lambda w: {}),
        api("delete", _model, 202),
    ],
    "deployment-rollback": [api("post", _model, 202)],
    # No canary or shadow is under way on Alpha's model: its owner is told so, others see no
    # model at all.
    "rollout": [
        api("get", _model, 404),
        api("post", _model, 400, body=lambda w: {"strategy": "canary"}),
    ],
    "rollout-strategy": [api("put", _model, 200, body=lambda w: {"strategy": "immediate"})],
    "rollout-promote": [api("post", _model, 409)],
    "rollout-abort": [api("post", _model, 409)],
    # Nothing captured yet: an empty list of days for the named model, and a day with nothing
    # is 404 to everyone.
    "captured-days": [api("get", _model, 200)],
    "captured-day-dataset": [
        api(
            "post",
            lambda w: _model(w) | {"day": "2026-12-01"},
            404,
            body=lambda w: {"name": "from-capture"},
        )
    ],
    # Django's own invoke view (the dashboard's path, logged in); no serving instance answers here.
    "model-invoke": [api("post", _model, 503, body=lambda w: {"inputs": ["Where is my refund?"]})],
    "drain": [
        # An empty instance: moving loaded models needs a running Triton (tests/deployments).
        api("post", lambda w: {"instance_id": w.spare_instance.pk}, 403, other=403, platform=200),
    ],
    "fleet-utilization": [api("get", _no_args, 200, other=200)],
    "fleet-costs": [api("get", _no_args, 200, other=200)],
    # Each caller's own share of the cost; the endpoints' cost is the operators'.
    "fleet-tenant-costs": [api("get", _no_args, 200, other=200)],
    "fleet-endpoint-costs": [api("get", _no_args, 403, other=403, platform=200)],
    # Rebalancing moves every tenant's copies: the operators'.
    "fleet-rebalance": [
        api("get", _no_args, 403, other=403, platform=200),
        api("post", _no_args, 403, other=403, platform=202),
    ],
    # The whole event log is the operators'; a tenant reads its own.
    "event-list": [api("get", _no_args, 403, other=403, platform=200)],
    "tenant-events": [api("get", _slug, 200)],
    # A tenant's webhooks are its own; naming another tenant to register one is a 400 (field
    # "tenant") that says nothing of it.
    "webhook-list": [
        api("get", _no_args, 200, other=200),
        api(
            "post",
            _no_args,
            201,
            other=400,
            body=lambda w: {
                "url": "https://fresh-hooks.example.com/",
                "event_types": ["deployment."],
                "tenant": w.alpha.tenant.slug,
            },
        ),
    ],
    "webhook-detail": [
        api("get", _webhook, 200),
        api("patch", _webhook, 200, body=lambda w: {"enabled": False}),
        api("delete", _webhook, 204),
    ],
    "webhook-rotate-secret": [api("post", _webhook, 200)],
    "webhook-test": [api("post", _webhook, 202)],
    "webhook-delivery-list": [api("get", _webhook, 200)],
    "webhook-redeliver": [
        api("post", lambda w: _webhook(w) | {"delivery_id": w.alpha.delivery.pk}, 202)
    ],
}


# Every element id a dashboard view answers with its own partial ("" is the default one).
HTMX_TARGETS = (
    "",
    "overview-figures",
    "overview-charts",
    "overview-costs",
    "endpoint-rows",
    "endpoint-instances",
    "endpoint-placements",
    "event-rows",
    "tenant-cost",
    "tenant-jobs",
)


@dataclass(frozen=True)
class PageCall:
    """One method of a dashboard page and the status each logged-in caller gets (anonymous
    visitors are always sent to the login page)."""

    method: str
    kwargs: Kwargs
    own: int
    other: int
    staff: int
    data: Callable[[World], dict] | None = None


def page(method, kwargs, own, other=404, staff=None, data=None) -> PageCall:
    return PageCall(method, kwargs, own, other, own if staff is None else staff, data)


DASHBOARD_MATRIX: dict[str, list[PageCall]] = {
    "dashboard:overview": [page("get", _no_args, 200, other=200)],
    "dashboard:tenant-costs": [page("get", _no_args, 200, other=200)],
    # Fleet-wide pages show every tenant's models: operators only, 404 for members.
    "dashboard:endpoints": [page("get", _no_args, 404, staff=200)],
    "dashboard:endpoint": [
        page("get", lambda w: {"name": w.endpoint.name}, 404, staff=200),
    ],
    "dashboard:what-if": [
        page("get", _no_args, 404, staff=200),
        page(
            "post",
            _no_args,
            404,
            staff=200,
            data=lambda w: {"instance_type": "local", "target_utilization": "0.8", "replicas": 1},
        ),
    ],
    "dashboard:rebalance": [
        page("get", _no_args, 404, staff=200),
        page("post", _no_args, 404, staff=200),
    ],
    "dashboard:events": [page("get", _no_args, 200, other=200)],
    "dashboard:tenants": [page("get", _no_args, 200, other=200)],
    "dashboard:tenant": [page("get", _slug, 200)],
    "dashboard:training-job": [page("get", lambda w: _slug(w) | {"job_id": w.alpha.job.pk}, 200)],
    "dashboard:deploy": [page("post", _model, 302, data=lambda w: {"mode": "mme"})],
    "dashboard:rollback": [page("post", _model, 302)],
    "dashboard:retire": [page("post", _model, 302)],
    "dashboard:promote": [page("post", lambda w: _model(w) | {"number": 3}, 302)],
}

# Pages with no tenant data, open to everyone: (method, status anonymous, status logged in).
PUBLIC_MATRIX: dict[str, tuple[str, int, int]] = {
    "home": ("get", 302, 302),
    "login": ("get", 200, 302),
    "logout": ("post", 302, 302),
    "healthz": ("get", 200, 200),
    "readyz": ("get", 200, 200),
}


# --- Enumeration --------------------------------------------------------------------------------


def _walk(patterns, prefix: str = "", namespace: str = ""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, route, inner)
        elif isinstance(entry, URLPattern):
            yield route, f"{namespace}{entry.name}" if entry.name else route, entry.callback


def routes() -> dict[str, tuple[str, object]]:
    """Every route the matrix must cover: ``{name: (route, view)}``."""
    return {
        name: (route, callback)
        for route, name, callback in _walk(get_resolver().url_patterns)
        if not route.startswith(EXCLUDED_PREFIXES)
    }


def test_every_route_has_a_matrix_entry():
    found = routes()
    covered = set(API_MATRIX) | set(DASHBOARD_MATRIX) | set(PUBLIC_MATRIX)

    assert set(found) - covered == set(), "routes with no isolation matrix entry"
    assert covered - set(found) == set(), "matrix entries for routes that no longer exist"
    for name, (route, callback) in found.items():
        if route.startswith("api/v1/"):
            assert name in API_MATRIX, f"{route} is an API route; add it to API_MATRIX"
            view = callback.view_class
            handled = {m for m in view.http_method_names if m not in ("options", "head")}
            methods = {m for m in handled if hasattr(view, m)}
            assert methods == {c.method for c in API_MATRIX[name]}, route
        elif route.startswith("dashboard/"):
            assert name in DASHBOARD_MATRIX, f"{route} is a dashboard page"


# --- Checks -------------------------------------------------------------------------------------


def _forbidden_markers(w: World, caller: str) -> set[str]:
    """The marker strings of tenants this caller must not see."""
    return {
        "own": w.bravo.markers,
        "other": w.alpha.markers,
        "none": w.alpha.markers | w.bravo.markers,
        "revoked": w.alpha.markers | w.bravo.markers,
        "platform": set(),
        "staff": set(),
    }[caller]


def assert_no_foreign_data(body: str, forbidden: set[str], sent: str) -> None:
    """No forbidden marker in ``body``, except what the caller itself sent (a URL it typed)."""
    leaked = sorted(m for m in forbidden if m in body and m not in sent)
    assert not leaked, f"foreign data {leaked} in {body[:600]}"


def _api_client(w: World, caller: str) -> APIClient:
    client = APIClient()
    secret = {
        "own": w.alpha.token.secret,
        "other": w.bravo.token.secret,
        "revoked": w.revoked.secret,
        "platform": w.platform.secret,
    }.get(caller)
    if caller == "other-member":
        client.force_login(w.bravo.member)
    elif secret:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _send_api(client: APIClient, call: ApiCall, url: str, w: World):
    body = call.body(w) if call.body else None
    if call.multipart:
        return getattr(client, call.method)(url, body, format="multipart")
    return getattr(client, call.method)(url, body, format="json")


def _ghost(kwargs: dict) -> dict:
    """The same URL arguments naming a tenant and objects that do not exist."""
    ghost = dict(kwargs)
    if "slug" in ghost:
        ghost["slug"] = GHOST_SLUG
    for key in ("job_id", "token_id", "instance_id", "webhook_id", "delivery_id"):
        if key in ghost:
            ghost[key] = GHOST_ID
    return ghost


def _unghost(text: str, kwargs: dict) -> str:
    text = text.replace(GHOST_SLUG, kwargs.get("slug", GHOST_SLUG))
    for key in ("job_id", "token_id", "instance_id", "webhook_id", "delivery_id"):
        if key in kwargs:
            text = text.replace(str(GHOST_ID), str(kwargs[key]))
    return text


API_CASES = [
    pytest.param(name, index, caller, id=f"{name}-{call.method}-{caller}")
    for name, calls in API_MATRIX.items()
    for index, call in enumerate(calls)
    for caller in ("own", "other", "other-member", "none", "revoked", "platform")
]


@pytest.mark.parametrize(("name", "index", "caller"), API_CASES)
def test_api_route_answers_each_caller_within_its_tenant(world, name, index, caller):
    call = API_MATRIX[name][index]
    kwargs = call.kwargs(world)
    url = reverse(name, kwargs=kwargs)
    expected = {
        "own": call.own,
        "other": call.other,
        "other-member": call.other,
        "none": 401,
        "revoked": 401,
        "platform": call.platform,
    }[caller]

    response = _send_api(_api_client(world, caller), call, url, world)

    body = response.content.decode()
    assert response.status_code == expected, body[:600]
    forbidden = _forbidden_markers(world, "other" if caller == "other-member" else caller)
    assert_no_foreign_data(body, forbidden, sent=url)
    if caller == "own" and call.method == "get" and expected == 200:
        # The markers are what these answers are made of, so their absence above means something.
        assert any(m in body for m in world.alpha.markers), body[:600]
    if caller == "other" and expected == 404:
        # Another tenant's object answers exactly like one that does not exist.
        ghost = _ghost(kwargs)
        missing = _send_api(_api_client(world, caller), call, reverse(name, kwargs=ghost), world)
        assert missing.status_code == 404
        assert _unghost(missing.content.decode(), kwargs) == body


DASHBOARD_CASES = [
    pytest.param(name, index, caller, id=f"{name}-{call.method}-{caller}")
    for name, calls in DASHBOARD_MATRIX.items()
    for index, call in enumerate(calls)
    for caller in ("own", "other", "none", "staff")
]


def _dashboard_client(w: World, caller: str) -> Client:
    client = Client()
    user = {"own": w.alpha.member, "other": w.bravo.member, "staff": w.staff}.get(caller)
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize(("name", "index", "caller"), DASHBOARD_CASES)
def test_dashboard_page_answers_each_caller_within_its_tenant(world, name, index, caller):
    call = DASHBOARD_MATRIX[name][index]
    kwargs = call.kwargs(world)
    url = reverse(name, kwargs=kwargs)
    client = _dashboard_client(world, caller)
    data = call.data(world) if call.data else {}

    response = getattr(client, call.method)(url, data)

    body = response.content.decode()
    if caller == "none":
        assert response.status_code == 302
        assert response["Location"] == f"{reverse('login')}?next={url}"
        return
    expected = {"own": call.own, "other": call.other, "staff": call.staff}[caller]
    assert response.status_code == expected, body[:600]
    if expected == 302:
        assert response["Location"] == reverse("dashboard:tenant", args=[world.alpha.tenant.slug])
        # What the action left for the next page (its messages) is checked there too.
        body = client.get(response["Location"]).content.decode()
    assert_no_foreign_data(body, _forbidden_markers(world, caller), sent=url)
    if call.method == "get" and expected == 200:
        # The partials htmx refreshes are scoped like the page.
        for target in HTMX_TARGETS:
            partial = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=target)
            assert partial.status_code == 200, target
            assert_no_foreign_data(
                partial.content.decode(), _forbidden_markers(world, caller), sent=url
            )
    if caller == "other" and expected == 404:
        missing = getattr(client, call.method)(reverse(name, kwargs=_ghost(kwargs)), data)
        assert missing.status_code == 404


@pytest.mark.parametrize("name", sorted(PUBLIC_MATRIX))
def test_public_pages_show_no_tenant_data(world, name):
    method, anonymous, logged_in = PUBLIC_MATRIX[name]
    for caller, expected in (("none", anonymous), ("own", logged_in)):
        client = _dashboard_client(world, caller)
        response = getattr(client, method)(reverse(name))
        assert response.status_code == expected, name
        assert_no_foreign_data(
            response.content.decode(), world.alpha.markers | world.bravo.markers, sent=""
        )


def test_admin_needs_staff(world):
    urls = [reverse("admin:index"), reverse("admin:tenants_tenant_changelist")]
    for url in urls:
        for client in (Client(), _dashboard_client(world, "own")):
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login"))
        bearer = Client(HTTP_AUTHORIZATION=f"Bearer {world.platform.secret}")
        assert bearer.get(url).status_code == 302  # tokens never open the admin
    staff = _dashboard_client(world, "staff")
    assert staff.get(urls[0]).status_code == 200
    # Staff see the tables their permissions grant; an operator with them sees every tenant.
    assert staff.get(urls[1]).status_code == 403
    staff.force_login(UserFactory(username="root", is_staff=True, is_superuser=True, password=None))
    assert staff.get(urls[1]).status_code == 200


def test_own_listings_hold_only_own_objects(world):
    """The listings a tenant gets name its objects and no one else's."""
    client = _api_client(world, "own")
    slug = world.alpha.tenant.slug

    tenants = client.get(reverse("tenant-list")).json()["results"]
    models = client.get(reverse("model-list", args=[slug])).json()["results"]
    tokens = client.get(reverse("tenant-tokens", args=[slug])).json()["results"]
    costs = client.get(reverse("fleet-costs")).json()

    assert [t["slug"] for t in tenants] == [slug]
    assert {m["name"] for m in models} == {"alpha-intents", "alpha-sentiment"}
    assert {t["name"] for t in tokens} == {"alpha-ci-token", "alpha-spare-token", "alpha-old-token"}
    assert {row["tenant"] for row in costs["tenants"]} == {slug}
    shares = client.get(reverse("fleet-tenant-costs")).json()
    assert [row["tenant"] for row in shares["results"]] == [slug] and shares["count"] == 1
    platform = _api_client(world, "platform").get(reverse("tenant-list")).json()["results"]
    assert {t["slug"] for t in platform} == {slug, world.bravo.tenant.slug}


def test_training_on_another_tenants_dataset_is_refused_without_naming_it(world):
    response = _api_client(world, "own").post(
        reverse("training-job-list", args=[world.alpha.tenant.slug, world.alpha.model.name]),
        {"dataset": world.bravo.dataset.pk},
        format="json",
    )

    assert response.status_code == 400
    assert_no_foreign_data(response.content.decode(), world.bravo.markers, sent="")


def test_names_taken_by_another_tenant_are_free_and_say_nothing(world):
    """Model, dataset and token names and idempotency keys are per tenant: reusing Bravo's is
    accepted, where a conflict would tell Alpha that Bravo has them."""
    client = _api_client(world, "own")
    slug = world.alpha.tenant.slug
    upload = _csv_upload(world)["file"]

    answers = [
        client.post(
            reverse("model-list", args=[slug]),
            {"name": world.bravo.model.name, "kind": "intent-classifier"},
            format="json",
        ),
        client.post(
            reverse("dataset-list", args=[slug]),
            {"file": upload, "name": world.bravo.dataset.name},
            format="multipart",
        ),
        client.post(
            reverse("tenant-tokens", args=[slug]), {"name": "bravo-ci-token"}, format="json"
        ),
        client.post(
            reverse("training-job-list", args=[slug, world.bravo.model.name]),
            {"dataset": world.bravo.dataset.name},
            format="json",
            HTTP_IDEMPOTENCY_KEY=world.bravo.job.idempotency_key,
        ),
    ]

    assert [a.status_code for a in answers] == [201, 201, 201, 202]
    sent = f"{world.bravo.model.name} {world.bravo.dataset.name} bravo-ci-token"
    for answer in answers:
        assert_no_foreign_data(answer.content.decode(), world.bravo.markers, sent=sent)
    assert world.bravo.model.training_jobs.count() == 1


def test_event_filter_by_another_tenant_shows_nothing(world):
    client = _dashboard_client(world, "own")

    response = client.get(reverse("dashboard:events"), {"tenant": world.bravo.tenant.slug})

    assert response.status_code == 200
    assert_no_foreign_data(
        response.content.decode(), world.bravo.markers, sent=world.bravo.tenant.slug
    )


class TritonStandIn:
    """Stands in for the Triton HTTP client an eviction unloads through (no server runs here)."""

    def __init__(self) -> None:
        self.unloaded: list[str] = []

    def unload_model(self, name: str, timeout_s: float | None = None) -> None:
        self.unloaded.append(name)


def test_eviction_event_names_no_other_tenants_model(world):
    from deployments.backends.local import runtime

    placements = {p.version.model.tenant_id: p for p in world.instance.placements.all()}
    runtime._evict(
        client=TritonStandIn(),
        placement=placements[world.bravo.tenant.pk],
        to_make_room_for=placements[world.alpha.tenant.pk],
        actor="test",
    )

    response = _dashboard_client(world, "other").get(reverse("dashboard:events"))

    assert "evicted" in response.content.decode()
    assert_no_foreign_data(response.content.decode(), world.alpha.markers, sent="")


# --- The inference proxy (ASGI, before Django) --------------------------------------------------


async def _asgi(method: str, path: str, *, headers: dict[str, str], body: bytes = b""):
    return await asgi_request(method, path, headers=headers, body=body)


def proxy_call(method: str, path: str, *, token: str | None = None, body: object = None, **extra):
    headers = {"host": "testserver", "content-type": "application/json", **extra}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else b""
    return asyncio.run(_asgi(method, path, headers=headers, body=data))


def sigv4_call(issued: IssuedToken, path: str, target: str, body: object):
    data = json.dumps(body).encode()
    request = AWSRequest(
        method="POST",
        url=f"http://testserver{path}",
        data=data,
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": target},
    )
    credentials = Credentials(issued.access_key_id, issued.secret_access_key)
    SigV4Auth(credentials, "sagemaker", "us-east-1").add_auth(request)
    headers = {"host": "testserver", **{k: v for k, v in request.headers.items()}}
    return asyncio.run(_asgi("POST", path, headers=headers, body=data))


@pytest.fixture
def proxy_world(transactional_db):
    """The matrix's world, committed: the proxy reads it from worker threads."""
    from deployments.proxy import core
    from deployments.proxy.routing import ROUTES

    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core.reset_rate_limits()
    w = build_world()
    yield w
    ROUTES.invalidate(None)
    core._TOKENS.clear()


INPUTS = {"inputs": ["Where is my refund?"]}
V2_INFER = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}


def _proxy_paths(slug: str, model: str) -> list[tuple[str, str, object, dict]]:
    """(method, path, body, extra headers) of each tenant-model route of the proxy."""
    return [
        ("POST", f"/api/v1/tenants/{slug}/models/{model}/invoke", INPUTS, {}),
        ("GET", f"/v2/models/{slug}.{model}", None, {}),
        ("GET", f"/v2/models/{slug}.{model}/ready", None, {}),
        ("POST", f"/v2/models/{slug}.{model}/infer", V2_INFER, {}),
        ("POST", f"/v2/models/{slug}.{model}/versions/2/infer", V2_INFER, {}),
        (
            "POST",
            f"/endpoints/{slug}/invocations",
            V2_INFER,
            {"x-amzn-sagemaker-target-model": model},
        ),
        (
            "POST",
            "/endpoints/any/invocations",
            V2_INFER,
            {"x-amzn-sagemaker-target-model": f"{slug}/{model}"},
        ),
    ]


def test_proxy_answers_another_tenants_model_like_a_missing_one(proxy_world):
    w = proxy_world
    alpha, model = w.alpha.tenant.slug, w.alpha.model.name
    for (method, path, body, extra), (_, ghost_path, _, ghost_extra) in zip(
        _proxy_paths(alpha, model), _proxy_paths(GHOST_SLUG, model), strict=True
    ):
        status, _, text = proxy_call(method, path, token=w.bravo.token.secret, body=body, **extra)
        assert status == 404, (path, text)
        assert_no_foreign_data(text, w.alpha.markers, sent=path + json.dumps(extra))
        ghost = proxy_call(method, ghost_path, token=w.bravo.token.secret, body=body, **ghost_extra)
        assert ghost[0] == 404
        assert ghost[2].replace(GHOST_SLUG, alpha) == text, path


def test_proxy_hides_a_suspended_tenant_from_other_tenants(proxy_world):
    """Suspension is news for the tenant and operators only: another tenant still gets 404."""
    from deployments.proxy.routing import ROUTES
    from tenants.services import set_tenant_status

    w = proxy_world
    set_tenant_status(tenant=w.alpha.tenant, status="suspended", actor="test")
    ROUTES.invalidate(None)
    path = f"/v2/models/{w.alpha.tenant.slug}.{w.alpha.model.name}"

    other = proxy_call("GET", path, token=w.bravo.token.secret)
    ghost = proxy_call(
        "GET", f"/v2/models/{GHOST_SLUG}.{w.alpha.model.name}", token=w.bravo.token.secret
    )

    assert other[0] == 404
    assert other[2] == ghost[2].replace(GHOST_SLUG, w.alpha.tenant.slug)
    assert proxy_call("GET", path, token=w.platform.secret)[0] == 403
    assert proxy_call("GET", path, token=w.alpha.token.secret)[0] == 401


def test_proxy_refuses_callers_without_a_usable_token(proxy_world):
    w = proxy_world
    for method, path, body, extra in _proxy_paths(w.alpha.tenant.slug, w.alpha.model.name):
        for token in (None, w.revoked.secret, "tml_not-a-real-token"):
            status, _, text = proxy_call(method, path, token=token, body=body, **extra)
            assert status == 401, (path, token, text)
            assert_no_foreign_data(text, w.alpha.markers | w.bravo.markers, sent=path + str(extra))


def test_proxy_sigv4_with_another_tenants_keys_is_404(proxy_world):
    w = proxy_world
    alpha, model = w.alpha.tenant.slug, w.alpha.model.name

    status, _, text = sigv4_call(w.bravo.token, f"/endpoints/{alpha}/invocations", model, V2_INFER)
    revoked = sigv4_call(w.revoked, f"/endpoints/{alpha}/invocations", model, V2_INFER)

    assert status == 404, text
    assert_no_foreign_data(text, w.alpha.markers, sent=f"{alpha} {model}")
    assert revoked[0] == 403  # SigV4 refusals are AWS's 403 (UnrecognizedClientException)
    assert_no_foreign_data(revoked[2], w.alpha.markers | w.bravo.markers, sent=f"{alpha} {model}")


def test_proxy_serves_own_and_platform_callers_up_to_the_model(proxy_world):
    """No Triton runs here: an own model that is not deployed is 409, a deployed one's metadata
    is answered from the route; both for the tenant's token and a platform token."""
    w = proxy_world
    alpha = w.alpha.tenant.slug
    for token in (w.alpha.token.secret, w.platform.secret):
        status, _, text = proxy_call(
            "POST",
            f"/api/v1/tenants/{alpha}/models/alpha-sentiment/invoke",
            token=token,
            body=INPUTS,
        )
        assert status == 409, text
        status, _, text = proxy_call("GET", f"/v2/models/{alpha}.alpha-intents", token=token)
        assert status == 200, text
        assert json.loads(text)["name"] == f"{alpha}.alpha-intents"
    own = proxy_call("GET", f"/v2/models/{alpha}.alpha-intents", token=w.alpha.token.secret)[2]
    assert_no_foreign_data(own, w.bravo.markers, sent="")


def test_proxy_metrics_need_a_platform_token(proxy_world):
    w = proxy_world
    assert proxy_call("GET", "/metrics")[0] == 401
    assert proxy_call("GET", "/metrics", token=w.revoked.secret)[0] == 401
    for token in (w.alpha.token.secret, w.bravo.token.secret):
        status, _, text = proxy_call("GET", "/metrics", token=token)
        assert status == 403
        assert_no_foreign_data(text, w.alpha.markers | w.bravo.markers, sent="")
    assert proxy_call("GET", "/metrics", token=w.platform.secret)[0] == 200


def test_proxy_leaves_dashboard_logins_to_django(proxy_world):
    """A request with no Authorization header on the native route is Django's logged-in view: an
    anonymous one is 401 there too, never routed."""
    w = proxy_world
    status, _, text = proxy_call(
        "POST", f"/api/v1/tenants/{w.alpha.tenant.slug}/models/alpha-intents/invoke", body=INPUTS
    )
    assert status == 401, text
