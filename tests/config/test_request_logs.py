"""Every request gets an id, answered in ``X-Request-ID`` and carried by its log lines (JSON, one
object per line, in the production profile): the caller's id when it is sane, a new one when it is
not; through Django under WSGI and ASGI, the inference proxy's own routes, and the tasks a request
queues."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from config.celery import app
from config.logs import JsonFormatter
from config.queue import registered_task
from config.request_id import MAX_LENGTH, REQUEST_ID

REPO = Path(__file__).resolve().parents[2]
GENERATED = re.compile(r"[0-9a-f]{32}")

# Two requests through Django's own request handling, in a process of its own with the
# production profile; each answer's header is printed, the log lines go to stderr.
PRODUCTION_REQUESTS = """
import json, django
django.setup()
from django.test import Client
for sent in ("checkout-7f3a", "x" * 300 + "\\nERROR forged line"):
    answer = Client().get("/no-such-page", secure=True, HTTP_X_REQUEST_ID=sent)
    print(json.dumps({"status": answer.status_code, "request_id": answer["X-Request-ID"]}))
"""


@pytest.fixture
def json_lines():
    """What the root logger writes while the test runs, through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)


def test_production_logs_one_json_object_per_line_with_the_answers_request_id(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "LOG_FORMAT"}
    } | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TENANTML_PROFILE": "production",
        "TENANTML_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": "a-production-secret-key-for-this-test-only-0123456789",
        "ALLOWED_HOSTS": "testserver",
    }

    run = subprocess.run(
        [sys.executable, "-c", PRODUCTION_REQUESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    sane, forged = (json.loads(line) for line in run.stdout.splitlines())
    assert sane == {"status": 404, "request_id": "checkout-7f3a"}
    assert forged["status"] == 404 and GENERATED.fullmatch(forged["request_id"])
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    not_found = [line for line in lines if line["message"] == "Not Found: /no-such-page"]
    assert [line["request_id"] for line in not_found] == ["checkout-7f3a", forged["request_id"]]
    for line in not_found:
        assert line["level"] == "WARNING" and line["logger"] == "django.request"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert "forged" not in run.stderr


def test_an_exception_is_logged_with_its_type_and_traceback_in_the_line(json_lines):
    token = REQUEST_ID.set("job-9")
    try:
        try:
            {}["missing"]
        except KeyError:
            logging.getLogger("tenantml.test").exception("Could not read %s.", "the row")
    finally:
        REQUEST_ID.reset(token)

    (line,) = [line for line in json_lines() if line["logger"] == "tenantml.test"]
    assert line["message"] == "Could not read the row." and line["request_id"] == "job-9"
    assert line["exception"]["type"] == "KeyError"
    assert line["exception"]["message"] == "'missing'"
    assert 'line["exception"]' not in line["exception"]["traceback"]
    assert "Traceback (most recent call last)" in line["exception"]["traceback"]


@pytest.mark.parametrize(
    "sent",
    [
        "x" * (MAX_LENGTH + 1),
        "abc\nERROR forged",
        'abc" "injected": "1',
        "spaces are not ids",
        "",
    ],
)
def test_an_unsafe_request_id_is_replaced_by_a_new_one(client, sent, json_lines):
    answer = client.get("/no-such-page", headers={"X-Request-ID": sent})

    assert GENERATED.fullmatch(answer["X-Request-ID"])
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["request_id"] == answer["X-Request-ID"]


def test_a_sane_request_id_up_to_the_limit_is_kept(client):
    sent = "a1._:-" + "z" * (MAX_LENGTH - 6)

    assert client.get("/healthz", headers={"X-Request-ID": sent})["X-Request-ID"] == sent


def test_each_request_without_an_id_gets_its_own_and_none_outlives_it(client, json_lines):
    first = client.get("/no-such-page")["X-Request-ID"]
    second = client.get("/no-such-page")["X-Request-ID"]
    logging.getLogger("tenantml.test").warning("between requests")

    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second
    assert [line["request_id"] for line in json_lines()] == [first, second, None]


def fetch(url: str, **headers: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@pytest.mark.django_db(transaction=True)
def test_over_asgi_django_and_the_proxy_answer_with_the_id_their_log_lines_carry(
    proxy_url, json_lines
):
    status, headers = fetch(f"{proxy_url}/api/v1/tenants/", **{"X-Request-ID": "web-1234"})
    proxy_status, proxy_headers = fetch(
        f"{proxy_url}/v2/models/acme.intents", Authorization="Bearer tml_not-a-token"
    )
    unsafe_status, unsafe_headers = fetch(f"{proxy_url}/metrics", **{"X-Request-ID": "a b"})

    assert (status, headers["x-request-id"]) == (401, "web-1234")
    unauthorized = [line for line in json_lines() if line["logger"] == "django.request"]
    assert [line["request_id"] for line in unauthorized] == ["web-1234"]
    assert unauthorized[0]["message"] == "Unauthorized: /api/v1/tenants/"
    # The proxy's routes answer before Django and carry an id too, one per request.
    assert proxy_status == 401 and GENERATED.fullmatch(proxy_headers["x-request-id"])
    assert unsafe_status == 401 and GENERATED.fullmatch(unsafe_headers["x-request-id"])
    assert proxy_headers["x-request-id"] != unsafe_headers["x-request-id"]
    assert len([name for name in proxy_headers if name.lower() == "x-request-id"]) == 1


@pytest.fixture
def task_log_lines():
    """What Celery's task tracer logs (a task's outcome), through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    tracer = logging.getLogger("celery.app.trace")
    tracer.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    tracer.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
def test_a_task_queued_while_a_request_is_handled_logs_with_that_requests_id(task_log_lines):
    app.control.purge()  # messages other tests sent and no worker took
    task = registered_task("deployments.tasks.sample_fleet_utilization")
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        token = REQUEST_ID.set("rollout-42")
        try:
            task.delay()
        finally:
            REQUEST_ID.reset(token)
        task.delay()  # queued outside any request
        deadline = time.monotonic() + 30
        while len(task_log_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)

    outcomes = [line for line in task_log_lines() if "succeeded" in line["message"]]
    assert [line["request_id"] for line in outcomes] == ["rollout-42", None]


def test_an_unknown_log_format_stops_the_platform_naming_the_variable(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"} | {
        "TENANTML_VAR_DIR": str(tmp_path / "var"),
        "LOG_FORMAT": "xml",
    }

    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode != 0
    assert "LOG_FORMAT must be json or plain, not 'xml'." in run.stderr
