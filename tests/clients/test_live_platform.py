"""The Python client against a running platform (``manage.py up`` on a fresh install, with its
Celery worker and local Triton): the first-use script end to end, the platform's refusals as
typed exceptions, and lists read across the platform's pages."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from tenantml_client import (
    AuthenticationError,
    Client,
    Conflict,
    NotFound,
    RetryPolicy,
    ValidationError,
)

from tests.clients.live_platform import CLIENT_SOURCE, REPO

FIRST_USE = REPO / "clients" / "python" / "examples" / "first_use.py"


def test_first_use_script_trains_deploys_on_success_and_classifies_36_texts(
    live_platform, tickets_csv
):
    """The acceptance script: a fresh platform, a model trained, deployed as soon as its job
    reports success, and 36 texts classified in one request, retrying nothing but what a
    Retry-After asks for."""
    env = os.environ | {
        "TENANTML_URL": live_platform.url,
        "TENANTML_TOKEN": live_platform.platform_token,
        "PYTHONPATH": str(CLIENT_SOURCE),
    }
    run = subprocess.run(
        [sys.executable, str(FIRST_USE), "--tenant", "first-use", "--dataset", str(tickets_csv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "created tenant first-use" in run.stdout
    assert "uploaded tickets.csv: 120 rows, 8 labels" in run.stdout
    assert "live: version 1 on local-intent-classifier" in run.stdout
    assert "36 texts classified by version 1" in run.stdout
    # Progress was shown while waiting (a plain line per change, stderr not being a terminal).
    assert re.search(r"^training job \d+: succeeded 100%$", run.stderr, re.M)
    assert "deployment of first-use/intents: live" in run.stderr


@pytest.fixture
def platform_client(live_platform):
    with Client(live_platform.url, live_platform.platform_token) as client:
        yield client


def test_the_live_platforms_refusals_arrive_as_typed_exceptions(platform_client, live_platform):
    client = platform_client
    client.create_tenant("sdk-errors", "SDK errors")

    with pytest.raises(NotFound) as missing:
        client.get_model("sdk-errors", "missing")
    assert missing.value.status == 404 and "missing" in missing.value.message

    with pytest.raises(ValidationError) as invalid:
        client.create_model("sdk-errors", "intents", "no-such-kind")
    assert invalid.value.status == 400 and invalid.value.field == "kind"

    client.create_model("sdk-errors", "intents", "intent-classifier")
    with pytest.raises(Conflict) as taken:
        client.create_model("sdk-errors", "intents", "intent-classifier")
    assert taken.value.status == 409

    with pytest.raises(NotFound):  # never deployed
        client.get_deployment("sdk-errors", "intents")

    stranger = Client(live_platform.url, "tml_not-a-token", retry=RetryPolicy.never())
    with stranger, pytest.raises(AuthenticationError) as refused:
        stranger.get_tenant("sdk-errors")
    assert refused.value.status == 401 and refused.value.code == "authentication_failed"


def test_a_tenant_token_sees_its_lists_across_pages_and_nothing_of_other_tenants(
    platform_client, live_platform
):
    client = platform_client
    client.create_tenant("sdk-pages", "SDK pages")
    client.create_tenant("sdk-others", "SDK others")
    names = [f"embedder-{number}" for number in range(5)]
    for name in reversed(names):
        client.create_model("sdk-pages", name, "embedding")
    client.create_model("sdk-others", "hidden", "embedding")

    issued = client.issue_token("sdk-pages", "product team")
    assert issued.token.startswith("tml_") and issued.tenant == "sdk-pages"
    with Client(live_platform.url, issued.token) as team:
        models = team.list_models("sdk-pages", page_size=2)
        assert models.count == 5
        assert [model.name for model in models] == names  # by name, over three pages
        assert [tenant.slug for tenant in team.list_tenants()] == ["sdk-pages"]
        with pytest.raises(NotFound):
            team.get_model("sdk-others", "hidden")
