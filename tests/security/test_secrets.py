"""Secrets stay secret: bearer secrets and SigV4 secret access keys are never at rest in the
database, never in a log record (at any level, from any logger, SQL included) and never in an
Event, through every way a token is issued, used, refused and revoked.

Production settings passing ``manage.py check --deploy`` is
``tests/config/test_settings.py::test_check_deploy_is_clean_under_production_settings``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.contrib.sessions.models import Session as StoredLogin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from deployments.models import Event
from tenants.models import ApiToken
from tenants.services import derive_secret_access_key, issue_token, revoke_token
from tests.factories import TenantFactory, UserFactory
from tests.security.asgi import asgi_request

BEARER_PATTERN = re.compile(r"tml_[A-Za-z0-9_-]{20,}")
SECRET_ACCESS_KEY_PATTERN = re.compile(r"aws_secret_access_key (\S+)")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("botocore"):
            return  # the test's own AWS client logging what it signs, not the platform
        parts = [record.name, str(record.msg), repr(record.args), record.getMessage()]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.texts.append(" ".join(parts))


@contextmanager
def every_log_record() -> Iterator[Records]:
    """Every logger at DEBUG into one handler, SQL with its parameters included."""
    handler = Records()
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(handler)
    try:
        # As with DEBUG=True: django.db.backends logs every query and its parameters.
        with CaptureQueriesContext(connection):
            yield handler
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(handler)


def database_texts() -> list[tuple[str, str]]:
    """Every column of every row of every table as text, and every stored login decoded."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            columns = [c[0] for c in cursor.description]
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    if value is not None:
                        text = value.hex() if isinstance(value, bytes | memoryview) else str(value)
                        found.append((f"{table}.{column}", text))
    for login in StoredLogin.objects.all():
        found.append((f"{StoredLogin._meta.db_table} (decoded)", json.dumps(login.get_decoded())))
    return found


def assert_nowhere(secrets: list[str], texts: list[tuple[str, str]] | list[str]) -> None:
    pairs = [item if isinstance(item, tuple) else ("a log record", item) for item in texts]
    for number, secret in enumerate(secrets):
        assert len(secret) >= 20
        found = sorted({where for where, text in pairs if secret in text})
        assert not found, f"secret #{number} appears in {found}"


def _bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _admin_issue(admin: Client, tenant) -> tuple[str, str, str]:
    """Issue a token in the admin; the (bearer, secret access key) shown once, and the page."""
    response = admin.post(
        reverse("admin:tenants_apitoken_add"),
        {"name": "admin-issued", "tenant": tenant.pk, "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 302
    shown = " ".join(str(m) for m in response.wsgi_request._messages)
    return (
        BEARER_PATTERN.search(shown).group(0),
        SECRET_ACCESS_KEY_PATTERN.search(shown).group(1),
        shown,
    )


def _signed(access_key_id: str, secret_access_key: str, path: str) -> tuple[dict, bytes]:
    body = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1]}]})
    request = AWSRequest(
        method="POST",
        url=f"http://testserver{path}",
        data=body.encode(),
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "intents"},
    )
    SigV4Auth(Credentials(access_key_id, secret_access_key), "sagemaker", "us-east-1").add_auth(
        request
    )
    return {"host": "testserver", **dict(request.headers.items())}, body.encode()


async def _asgi(method: str, path: str, headers: dict[str, str], body: bytes = b""):
    status, _, text = await asgi_request(method, path, headers=headers, body=body)
    return status, text


def proxy(method: str, path: str, headers: dict[str, str], body: bytes = b""):
    return asyncio.run(_asgi(method, path, headers, body))


@pytest.fixture
def fresh_proxy():
    from deployments.proxy import core
    from deployments.proxy.routing import ROUTES

    ROUTES.invalidate(None)
    core._TOKENS.clear()
    yield
    ROUTES.invalidate(None)
    core._TOKENS.clear()


def test_issued_secrets_are_only_hashed_at_rest(db):
    tenant = TenantFactory(slug="acme")
    admin = Client()
    admin.force_login(UserFactory(username="root", is_staff=True, is_superuser=True, password=None))
    issued = [
        issue_token(name="service", tenant=tenant, actor="test"),
        issue_token(name="ops", tenant=None, actor="test"),
    ]
    secrets = [s for i in issued for s in (i.secret, i.secret_access_key)]
    created = _bearer(issued[1].secret).post(
        reverse("tenant-tokens", args=["acme"]), {"name": "api-issued"}, format="json"
    )
    assert created.status_code == 201
    secrets += [created.json()["token"], created.json()["aws_secret_access_key"]]
    bearer, secret_access_key, _ = _admin_issue(admin, tenant)
    secrets += [bearer, secret_access_key]
    # Used, refused and revoked, through the API and the admin.
    assert _bearer(bearer).get(reverse("tenant-detail", args=["acme"])).status_code == 200
    token = ApiToken.objects.get(name="admin-issued")
    revoke_token(token=token, actor="test")
    assert _bearer(bearer).get(reverse("tenant-detail", args=["acme"])).status_code == 401

    texts = database_texts()

    assert_nowhere(secrets, texts)
    # The scan does read what is stored: the digest and the access key id are there.
    assert any(token.key_digest in text for _, text in texts)
    assert any(token.access_key_id in text for _, text in texts)
    assert derive_secret_access_key(key_digest=token.key_digest) == secret_access_key


@pytest.mark.django_db(transaction=True)
def test_no_secret_reaches_a_log_record_or_an_event(fresh_proxy):
    tenant = TenantFactory(slug="acme")
    root = UserFactory(username="root", is_staff=True, is_superuser=True, password=None)
    admin = Client()
    admin.force_login(root)
    platform = issue_token(name="ops", tenant=None, actor="test")
    secrets = [platform.secret, platform.secret_access_key]
    bodies: list[str] = []

    with every_log_record() as logs:
        # Issued through the API and the admin.
        created = _bearer(platform.secret).post(
            reverse("tenant-tokens", args=["acme"]), {"name": "api-issued"}, format="json"
        )
        data = created.json()
        secrets += [data["token"], data["aws_secret_access_key"]]
        bearer, secret_access_key, _ = _admin_issue(admin, tenant)
        secrets += [bearer, secret_access_key]
        admin_token = ApiToken.objects.get(name="admin-issued")
        api_token = ApiToken.objects.get(pk=data["id"])

        # Bearer authentication: the API, the proxy (metrics), and failures of both.
        for secret in (data["token"], bearer):
            assert _bearer(secret).get(reverse("tenant-detail", args=["acme"])).status_code == 200
        assert proxy("GET", "/metrics", {"authorization": f"Bearer {platform.secret}"})[0] == 200
        near_miss = data["token"][:-2] + ("AA" if not data["token"].endswith("AA") else "BB")
        refused = _bearer(near_miss).get(reverse("tenant-detail", args=["acme"]))
        assert refused.status_code == 401
        bodies.append(refused.content.decode())
        status, text = proxy("GET", "/metrics", {"authorization": f"Bearer {near_miss}"})
        assert status == 401
        bodies.append(text)
        secrets.append(near_miss)

        # SigV4: accepted (the model does not exist: 404 after authentication), then refused
        # with a wrong signature; neither answer nor any record holds the right signature.
        path = "/endpoints/acme/invocations"
        headers, body = _signed(api_token.access_key_id, data["aws_secret_access_key"], path)
        status, text = proxy("POST", path, headers, body)
        assert status == 404, text
        good_signature = headers["Authorization"].rsplit("Signature=", 1)[1]
        forged = dict(headers)
        forged["Authorization"] = headers["Authorization"].replace(good_signature, "0" * 64)
        status, text = proxy("POST", path, forged, body)
        assert status == 403, text
        bodies.append(text)
        secrets.append(good_signature)
        wrong_key = _signed(api_token.access_key_id, "x" * 40, path)
        assert proxy("POST", path, *wrong_key)[0] == 403

        # Revoked through the API and the admin action; then refused.
        revoked = _bearer(platform.secret).delete(
            reverse("tenant-token-detail", args=["acme", api_token.pk])
        )
        assert revoked.status_code == 200
        bodies.append(revoked.content.decode())
        action = admin.post(
            reverse("admin:tenants_apitoken_changelist"),
            {"action": "revoke_tokens", "_selected_action": [admin_token.pk]},
        )
        assert action.status_code == 302
        assert _bearer(bearer).get(reverse("tenant-detail", args=["acme"])).status_code == 401
        status, text = proxy("GET", "/metrics", {"authorization": f"Bearer {data['token']}"})
        assert status == 401
        bodies.append(text)

    assert len(logs.texts) > 20  # SQL and the events' own records were captured
    assert any("tenants_apitoken" in text for text in logs.texts)
    assert_nowhere(secrets, logs.texts)
    assert_nowhere(secrets, bodies)
    events = [f"{e.message} {json.dumps(e.data)} {e.actor}" for e in Event.objects.all()]
    assert any(api_token.prefix in text for text in events)  # events name tokens by prefix
    assert_nowhere(secrets, events)
    assert_nowhere(secrets, database_texts())
