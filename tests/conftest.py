"""Shared fixtures. The suite runs on whatever DATABASE_URL / CELERY_BROKER_URL name (Postgres and
Redis in CI) and on the embedded SQLite and file-system defaults with nothing set."""

from __future__ import annotations

import os

import pytest

from tenants.services import issue_token
from tests.factories import TenantFactory

pytest_plugins = [
    "tests.serving_fixtures",
    "tests.admin_support",
    "tests.sagemaker_standin_support",
]
POSTGRES_SKIP_REASON = (
    "needs PostgreSQL (row locks, real concurrency, or a server to restart); the embedded SQLite "
    "default has none of them. CI points DATABASE_URL at Postgres, where these always run."
)


REDIS_SKIP_REASON = (
    "needs a Redis broker (pub/sub between processes, or a server to restart); the embedded "
    "file-system broker has neither. CI points CELERY_BROKER_URL at Redis, where these always run."
)


CHROMIUM = "/usr/bin/chromium"
BROWSER_SKIP_REASON = (
    "drives Debian's Chromium with Playwright (`apt-get install chromium`); this machine has no "
    f"{CHROMIUM}. CI installs it and always runs these."
)


def _browser_available() -> bool:
    import importlib.util

    return os.access(CHROMIUM, os.X_OK) and importlib.util.find_spec("playwright") is not None


def pytest_collection_modifyitems(config, items):
    """Skip tests that need a server the embedded default lacks (``postgres``, ``redis``), and
    refuse to skip them where CI asks for it (``TENANTML_REQUIRE_POSTGRES_TESTS=1``)."""
    from django.conf import settings

    required = os.environ.get("TENANTML_REQUIRE_POSTGRES_TESTS") == "1"
    available = {
        "postgres": "postgresql" in settings.DATABASES["default"]["ENGINE"],
        "redis": settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")),
    }
    reasons = {"postgres": POSTGRES_SKIP_REASON, "redis": REDIS_SKIP_REASON}
    for marker, present in available.items():
        if present:
            continue
        marked = [item for item in items if item.get_closest_marker(marker)]
        if marked and required:
            raise pytest.UsageError(
                f"TENANTML_REQUIRE_POSTGRES_TESTS=1 (CI) but there is no {marker} server: "
                "set DATABASE_URL and CELERY_BROKER_URL."
            )
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reasons[marker]))
    browser_tests = [item for item in items if item.get_closest_marker("browser")]
    if browser_tests and not _browser_available():
        if os.environ.get("TENANTML_REQUIRE_BROWSER_TESTS") == "1":
            raise pytest.UsageError(
                f"TENANTML_REQUIRE_BROWSER_TESTS=1 (CI) but {CHROMIUM} or playwright is missing."
            )
        for item in browser_tests:
            item.add_marker(pytest.mark.skip(reason=BROWSER_SKIP_REASON))


def _skips_refused(item) -> bool:
    """Whether a skip of ``item`` must fail instead: under ``TENANTML_REQUIRE_POSTGRES_TESTS=1``
    (CI) every test runs, whatever skipped it (a marker, a fixture, a helper, ``skipif``). Only
    the browser tests may still skip there, where ``TENANTML_REQUIRE_BROWSER_TESTS`` does not ask
    for them (CI does, and then a missing Chromium stops collection above)."""
    if os.environ.get("TENANTML_REQUIRE_POSTGRES_TESTS") != "1":
        return False
    browser_optional = os.environ.get("TENANTML_REQUIRE_BROWSER_TESTS") != "1"
    return not (browser_optional and item.get_closest_marker("browser"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and _skips_refused(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"TENANTML_REQUIRE_POSTGRES_TESTS=1 (CI): no test may skip, and this one did "
            f"({report.when}): {reason}"
        )
    return report


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Test users' throwaway passwords are hashed with a fast hasher: the platform's PBKDF2 takes
    a quarter of a second a hash, paid by every user a test creates or logs in."""
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def instance_catalog(request):
    """The seeded instance catalog, for every test that touches the database.

    A data migration seeds it, but a transactional test ends by flushing every table, which would
    leave the tests after it without the catalog the platform always has.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if not (marker or transactional or "db" in request.fixturenames):
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    from deployments.catalog import seed_instance_catalog
    from deployments.models import InstanceType

    if not InstanceType.objects.exists():
        seed_instance_catalog(InstanceType)


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def other_tenant(db):
    return TenantFactory()


@pytest.fixture
def platform_token(db):
    return issue_token(name="ops", tenant=None, actor="test").secret


@pytest.fixture
def tenant_token(tenant):
    return issue_token(name="product", tenant=tenant, actor="test").secret


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def platform_client(api_client, platform_token):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {platform_token}")
    return api_client


@pytest.fixture
def tenant_client(api_client, tenant_token):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    return api_client


@pytest.fixture(autouse=True)
def isolated_artifact_store(settings, tmp_path):
    """Each test writes artifacts under its own temporary directory."""
    from config.env import ArtifactStore

    settings.ARTIFACT_STORE = ArtifactStore(kind="local", root=str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


@pytest.fixture(autouse=True)
def explicit_usage_flushes(settings):
    """Tests flush serving counters explicitly; no background thread writes behind their back."""
    settings.TENANTML_USAGE_FLUSH_INTERVAL_S = 0
    settings.TENANTML_CAPTURE_FLUSH_INTERVAL_S = 0
    from deployments import usage
    from deployments.backends.local import runtime

    # Counts and recency stamps from an earlier test name rows that test's database rolled back.
    usage.COUNTERS.drain()
    from deployments.proxy import capture

    capture.BUFFER.drain()
    capture.SETTINGS.forget()
    runtime._LAST_USED.clear()


@pytest.fixture
def dummy_aws_credentials(monkeypatch):
    """Fake credentials so boto3 never looks for real ones (and moto accepts the calls)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
