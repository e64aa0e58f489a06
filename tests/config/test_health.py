"""``/healthz`` and ``/readyz``: each dependency's status, and a failing one named in a fixed phrase
that never carries the driver's text (hosts, users, passwords), which goes to the log instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Asked through Django's own request handling, in a process of its own with these settings.
PROBE = """
import json, django
django.setup()
from django.test import Client
answer = Client().get("/readyz")
print(json.dumps({"status": answer.status_code, "body": answer.content.decode()}))
"""


@pytest.mark.django_db
def test_readyz_lists_each_dependency_as_ok_when_they_answer(client):
    answer = client.get("/readyz")

    assert answer.status_code == 200
    assert answer.json()["checks"] == {"database": {"status": "ok"}, "broker": {"status": "ok"}}
    assert answer.json()["status"] == "ready" and answer.json()["problems"] == []


def test_readyz_names_an_unreachable_database_and_broker_without_their_error_text(tmp_path):
    secret = "pw-never-shown-9f3"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL"}
    } | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TENANTML_VAR_DIR": str(tmp_path / "var"),
        # Nothing listens on port 1.
        "DATABASE_URL": f"postgres://tenantml:{secret}@127.0.0.1:1/tenantml",
        "CELERY_BROKER_URL": f"redis://:{secret}@127.0.0.1:1/0",
    }

    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    body = json.loads(answer["body"])
    assert body == {
        "status": "not ready",
        "profile": "embedded",
        "checks": {
            "database": {"status": "failing", "reason": "database unreachable"},
            "broker": {"status": "failing", "reason": "task broker unreachable"},
        },
        "problems": ["database unreachable", "task broker unreachable"],
    }
    for leak in (secret, "127.0.0.1", "tenantml:", "refused", "Error"):
        assert leak not in answer["body"]
    # The operator still finds out why, in the server's log.
    assert "Readiness check 'database' failed" in probe.stderr
    assert "Readiness check 'broker' failed" in probe.stderr
    assert "OperationalError" in probe.stderr
