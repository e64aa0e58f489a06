"""The Python client's HTTP behaviour against a scripted server (httpx's MockTransport): error
envelopes become typed exceptions, 429/503 are retried as Retry-After asks and no further,
broken connections are retried only where repeating is safe, lists are read page by page as
they are iterated, and the wait helpers end on the job's or deployment's final state."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import tenantml_client
from tenantml_client import (
    Client,
    Conflict,
    ConnectionFailed,
    DeploymentFailed,
    NotFound,
    RateLimited,
    RetryPolicy,
    TrainingFailed,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from tenantml_client.retries import parse_retry_after

BASE = "https://ml.example.com"
MODEL = "/api/v1/tenants/acme/models/intents"


class Server:
    """Answers requests in turn from ``answers`` (a response, an exception to raise, or a
    callable of the request), recording every request it was sent."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def client_for(server: Server, *, retry: RetryPolicy | None = None):
    """A client on ``server`` and the list of waits it slept, in seconds."""
    waits: list[float] = []
    client = Client(
        BASE, "tml_test", transport=httpx.MockTransport(server), retry=retry, sleep=waits.append
    )
    return client, waits


def error(status: int, code: str, message: str, *, field: str | None = None, headers=None):
    body = {"code": code, "message": message} | ({"field": field} if field else {})
    return httpx.Response(status, json={"error": body}, headers=headers or {})


INVOCATION = {"outputs": [{"label": "refund"}], "model_version": 1, "cold_start": False}


def job_answer(status: str, progress_pct: int = 0, **fields) -> dict:
    return {
        "id": 7,
        "tenant": "acme",
        "model": "intents",
        "dataset": "tickets.csv",
        "backend": "local",
        "status": status,
        "progress_pct": progress_pct,
        "hyperparameters": {},
        "metrics": {},
        "failure_reason": "",
        "log_tail": "",
        "version": None,
        "attempts": 1,
        "cancel_requested": False,
        "created_at": "2026-01-05T10:00:00Z",
        "started_at": None,
        "heartbeat_at": None,
        "finished_at": None,
    } | fields


def deployment_answer(status: str, **fields) -> dict:
    return {
        "tenant": "acme",
        "model": "intents",
        "mode": "mme",
        "backend": "local",
        "replicas": 1,
        "endpoint": "local-intent-classifier",
        "status": status,
        "status_reason": "",
        "live_version": None,
        "target_version": 1,
        "previous_version": None,
        "rollout_started_at": "2026-01-05T10:00:00Z",
        "live_since": None,
        "updated_at": "2026-01-05T10:00:00Z",
    } | fields


# --- Errors ----------------------------------------------------------------------------------


def test_error_envelope_becomes_a_typed_exception_with_its_code_message_and_field():
    server = Server(error(409, "conflict", "acme/intents already exists.", field="name"))
    client, _ = client_for(server)
    with pytest.raises(Conflict) as raised:
        client.create_model("acme", "intents", "intent-classifier")
    assert raised.value.status == 409
    assert raised.value.code == "conflict"
    assert raised.value.message == "acme/intents already exists."
    assert raised.value.field == "name"
    assert str(raised.value) == "409 conflict: acme/intents already exists. (field name)"


def test_a_validation_error_names_its_first_field_and_keeps_them_all():
    fields = {"kind": ["Unknown model kind."], "name": ["This field is required."]}
    body = {"error": {"code": "invalid", "message": "kind: Unknown model kind.", "fields": fields}}
    client, _ = client_for(Server(httpx.Response(400, json=body)))
    with pytest.raises(ValidationError) as raised:
        client.create_model("acme", "", "nope")
    assert raised.value.field == "kind"
    assert raised.value.fields == fields


def test_an_answer_without_the_envelope_still_raises_by_its_status():
    page = httpx.Response(404, text="<html><h1>Not Found</h1></html>")
    client, _ = client_for(Server(page))
    with pytest.raises(NotFound) as raised:
        client.get_model("acme", "intents")
    assert raised.value.status == 404
    assert "Not Found" in raised.value.message and "<html>" not in raised.value.message


# --- Retries ---------------------------------------------------------------------------------


def test_a_503_is_retried_after_the_seconds_its_retry_after_asks():
    server = Server(
        error(503, "rollout_in_progress", "Rolling out.", headers={"Retry-After": "2"}),
        httpx.Response(200, json=INVOCATION),
    )
    client, waits = client_for(server, retry=RetryPolicy.retry_after_only())
    answer = client.invoke("acme", "intents", ["Where is my refund?"])
    assert answer.outputs == [{"label": "refund"}]
    assert waits == [2.0]
    assert [json.loads(r.content) for r in server.requests] == [
        {"inputs": ["Where is my refund?"]}
    ] * 2


def test_a_429_with_an_http_date_retry_after_waits_until_that_date():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    server = Server(
        error(429, "rate_limited", "Over the rate.", headers={"Retry-After": when}),
        httpx.Response(200, json=INVOCATION),
    )
    client, waits = client_for(server)
    client.invoke("acme", "intents", ["hi"])
    assert len(waits) == 1 and 2 <= waits[0] <= 3


def test_a_retry_after_longer_than_the_wait_cap_is_raised_at_once_with_its_delay():
    server = Server(error(429, "rate_limited", "Over the rate.", headers={"Retry-After": "120"}))
    client, waits = client_for(server, retry=RetryPolicy(max_total_wait_s=30))
    with pytest.raises(RateLimited) as raised:
        client.invoke("acme", "intents", ["hi"])
    assert raised.value.retry_after_s == 120
    assert waits == [] and len(server.requests) == 1


def test_503s_are_retried_a_bounded_number_of_times():
    busy = error(503, "unavailable", "Every copy is busy.", headers={"Retry-After": "1"})
    server = Server(*[busy] * 10)
    client, waits = client_for(server, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(Unavailable) as raised:
        client.get_deployment("acme", "intents")
    assert len(server.requests) == 3 and waits == [1.0, 1.0]
    assert raised.value.retry_after_s == 1


def test_only_when_asked_a_503_without_retry_after_is_not_retried():
    server = Server(error(503, "unavailable", "Down."))
    client, waits = client_for(server, retry=RetryPolicy.retry_after_only())
    with pytest.raises(Unavailable):
        client.get_model("acme", "intents")
    assert len(server.requests) == 1 and waits == []


def test_by_default_a_503_without_retry_after_backs_off_and_retries():
    down = error(503, "unavailable", "Down.")
    server = Server(down, down, httpx.Response(200, json={"name": "intents"}))
    client, waits = client_for(server, retry=RetryPolicy(backoff_s=0.5))
    assert client.get_model("acme", "intents").name == "intents"
    assert waits == [0.5, 1.0]


def test_other_refusals_are_never_retried():
    server = Server(error(409, "not_deployed", "acme/intents is not serving yet."))
    client, waits = client_for(server)
    with pytest.raises(Conflict):
        client.invoke("acme", "intents", ["hi"])
    assert len(server.requests) == 1 and waits == []


def test_a_read_that_broke_mid_answer_is_retried_for_a_get():
    server = Server(httpx.ReadError("connection reset"), httpx.Response(200, json={"name": "x"}))
    client, waits = client_for(server)
    assert client.get_model("acme", "x").name == "x"
    assert len(server.requests) == 2 and len(waits) == 1


def test_an_invoke_whose_connection_broke_after_sending_is_not_sent_again():
    server = Server(httpx.ReadError("connection reset"))
    client, _ = client_for(server)
    with pytest.raises(ConnectionFailed) as raised:
        client.invoke("acme", "intents", ["hi"])
    assert len(server.requests) == 1
    assert "no answer from https://ml.example.com" in str(raised.value)


def test_a_connection_that_never_opened_is_retried_whatever_the_method():
    server = Server(httpx.ConnectError("refused"), httpx.Response(200, json=INVOCATION))
    client, _ = client_for(server)
    assert client.invoke("acme", "intents", ["hi"]).model_version == 1
    assert len(server.requests) == 2


def test_starting_training_is_retried_with_the_same_idempotency_key():
    server = Server(httpx.ReadTimeout("timed out"), httpx.Response(202, json=job_answer("queued")))
    client, _ = client_for(server)
    job = client.start_training("acme", "intents", "tickets.csv")
    assert job.id == 7 and job.status == "queued"
    keys = [request.headers["Idempotency-Key"] for request in server.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 36


def test_a_given_idempotency_key_is_sent_as_given():
    server = Server(httpx.Response(202, json=job_answer("queued")))
    client, _ = client_for(server)
    client.start_training("acme", "intents", 3, idempotency_key="nightly-2026-01-05")
    assert server.requests[0].headers["Idempotency-Key"] == "nightly-2026-01-05"
    assert json.loads(server.requests[0].content) == {"dataset": "3"}


def test_retry_after_reads_seconds_and_dates_and_ignores_nonsense():
    now = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5
    assert parse_retry_after("Mon, 05 Jan 2026 10:00:07 GMT", now=now) == 7
    assert parse_retry_after("Mon, 05 Jan 2026 09:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- Requests and answers --------------------------------------------------------------------


def test_a_dataset_upload_sends_the_file_and_its_name_as_multipart():
    dataset = {
        "id": 3,
        "name": "tickets",
        "format": "csv",
        "status": "valid",
        "rows": 2,
        "labels": ["refund"],
        "train_rows": 1,
        "validation_rows": 1,
        "size_bytes": 30,
        "sha256": "0" * 64,
        "created_at": "2026-01-05T10:00:00.123456Z",
    }
    server = Server(httpx.Response(201, json=dataset))
    client, _ = client_for(server)
    uploaded = client.upload_dataset("acme", io.BytesIO(b"text,label\nhi,refund\n"), name="tickets")
    assert uploaded.id == 3 and uploaded.labels == ["refund"]
    assert uploaded.created_at == datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    request = server.requests[0]
    assert request.url.path == "/api/v1/tenants/acme/datasets/"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    assert b"text,label\nhi,refund\n" in request.content and b'name="name"' in request.content
    assert request.headers["Authorization"] == "Bearer tml_test"


def test_a_base_url_ending_in_the_api_prefix_is_not_doubled():
    server = Server(httpx.Response(200, json={"name": "intents"}))
    client = Client(f"{BASE}/api/v1/", "tml_test", transport=httpx.MockTransport(server))
    client.get_model("acme", "intents")
    assert str(server.requests[0].url) == f"{BASE}{MODEL}/"


def test_invoke_refuses_a_bare_string_before_sending():
    server = Server()
    client, _ = client_for(server)
    with pytest.raises(TypeError, match="list of inputs"):
        client.invoke("acme", "intents", "Where is my refund?")
    assert server.requests == []


def test_a_newer_field_of_an_answer_is_kept_in_raw():
    answer = job_answer("succeeded", 100, queue_position=None, gate={"outcome": "promoted"})
    client, _ = client_for(Server(httpx.Response(200, json=answer)))
    job = client.get_training_job(7)
    assert job.gate == {"outcome": "promoted"} and job.deployable is None
    assert "queue_position" in job.raw


# --- Pagination ------------------------------------------------------------------------------


def paged_models(names: list[str], page_size: int) -> Callable[[httpx.Request], httpx.Response]:
    """A list endpoint over ``names`` that pages as the platform does (next carries a host the
    client did not call, as it does behind a proxy)."""

    def answer(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", 100))
        offset = int(request.url.params.get("offset", 0))
        rows = [{"name": name, "kind": "embedding"} for name in names[offset : offset + limit]]
        following = offset + limit
        nxt = f"http://internal:8000{request.url.path}?limit={limit}&offset={following}"
        return httpx.Response(
            200,
            json={
                "count": len(names),
                "next": nxt if following < len(names) else None,
                "previous": None,
                "results": rows,
            },
        )

    return answer


def test_a_list_is_read_page_by_page_only_as_far_as_it_is_iterated():
    names = [f"model-{i:02}" for i in range(5)]
    server = Server(*[paged_models(names, 2)] * 3)
    client, _ = client_for(server)
    models = client.list_models("acme", page_size=2)
    assert server.requests == []  # nothing is fetched before iterating
    iterator = iter(models)
    assert next(iterator).name == "model-00"
    assert len(server.requests) == 1
    assert [model.name for model in iterator] == names[1:]
    offsets = [request.url.params.get("offset") for request in server.requests]
    assert offsets == [None, "2", "4"]
    assert {request.url.host for request in server.requests} == {"ml.example.com"}


def test_a_list_says_its_count_from_the_first_page_and_reuses_that_page():
    names = ["a", "b", "c"]
    server = Server(*[paged_models(names, 2)] * 2)
    client, _ = client_for(server)
    models = client.list_models("acme", page_size=2)
    assert models.count == 3
    assert [model.name for model in models] == names
    assert len(server.requests) == 2


def test_a_status_filter_is_sent_and_holds_even_where_the_platform_ignores_it():
    page = {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [job_answer("failed"), job_answer("succeeded", 100)],
    }
    server = Server(httpx.Response(200, json=page))
    client, _ = client_for(server)
    jobs = list(client.list_training_jobs("acme", "intents", status="succeeded"))
    assert [job.status for job in jobs] == ["succeeded"]
    assert server.requests[0].url.params["status"] == "succeeded"


# --- Waiting ---------------------------------------------------------------------------------


class PlainStream(io.StringIO):
    """stderr redirected to a file: not a terminal."""

    def isatty(self) -> bool:
        return False


def test_waiting_for_training_polls_until_success_and_shows_progress(monkeypatch):
    states = [("queued", 0), ("running", 20), ("running", 25), ("running", 60), ("packaging", 100)]
    answers = [httpx.Response(200, json=job_answer(s, p)) for s, p in states]
    done = job_answer("succeeded", 100, version=1, deployable=True)
    server = Server(*answers, httpx.Response(200, json=done))
    client, waits = client_for(server)
    stream = PlainStream()
    monkeypatch.setattr("sys.stderr", stream)
    job = client.wait_for_training(7, progress=True, poll_interval_s=0.5)
    assert job.status == "succeeded" and job.version == 1 and job.deployable is True
    assert waits == [0.5] * 5
    # Off a terminal: a line per status change or ten percent, never a carriage return.
    assert stream.getvalue().splitlines() == [
        "training job 7: queued 0%",
        "training job 7: running 20%",
        "training job 7: running 60%",
        "training job 7: packaging 100%",
        "training job 7: succeeded 100%",
    ]


def test_a_progress_bar_is_redrawn_in_place_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    server = Server(
        httpx.Response(200, json=job_answer("running", 50)),
        httpx.Response(200, json=job_answer("succeeded", 100)),
    )
    client, _ = client_for(server)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    client.wait_for_training(7, progress=True)
    drawn = terminal.getvalue()
    assert drawn.count("\r") == 2 and drawn.endswith("\n")
    assert "[" + "#" * 15 + "." * 15 + "]  50% running" in drawn
    assert "[" + "#" * 30 + "] 100% succeeded" in drawn


def test_a_failed_training_job_raises_with_its_reason_and_the_job():
    failed = job_answer("failed", 40, failure_reason="The dataset has one label; two are needed.")
    client, _ = client_for(Server(httpx.Response(200, json=failed)))
    with pytest.raises(TrainingFailed) as raised:
        client.wait_for_training(7, progress=lambda job: None)
    assert "one label" in str(raised.value) and raised.value.job.progress_pct == 40


def test_waiting_for_training_gives_up_after_its_timeout():
    client, _ = client_for(Server(httpx.Response(200, json=job_answer("running", 10))))
    with pytest.raises(WaitTimeout, match="still running"):
        client.wait_for_training(7, timeout_s=0)


def test_waiting_for_a_deployment_returns_once_it_serves_with_nothing_pending():
    seen: list[str] = []
    server = Server(
        httpx.Response(200, json=deployment_answer("rolling_out")),
        httpx.Response(200, json=deployment_answer("live", live_version=1, target_version=1)),
        httpx.Response(200, json=deployment_answer("live", live_version=1, target_version=None)),
    )
    client, _ = client_for(server)
    deployment = client.wait_for_deployment(
        "acme", "intents", progress=lambda d: seen.append(d.status)
    )
    assert deployment.live_version == 1 and seen == ["rolling_out", "live", "live"]


def test_a_failed_deployment_raises_with_its_reason():
    failed = deployment_answer("failed", status_reason="No instance has room for 900 MB.")
    client, _ = client_for(Server(httpx.Response(200, json=failed)))
    with pytest.raises(DeploymentFailed, match="No instance has room") as raised:
        client.wait_for_deployment("acme", "intents")
    assert raised.value.deployment.status == "failed"


# --- The README's example ----------------------------------------------------------------------


def readme_example() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_example_runs_as_written(monkeypatch, capsys, tmp_path):
    """Every call of the README's example exists with the arguments it passes, in an order the
    platform accepts: against a server scripted with the platform's answers, it prints the
    model's outputs."""
    dataset = {"id": 3, "name": "tickets.csv", "rows": 120, "labels": ["refund"]}
    model = {"name": "intents", "kind": "intent-classifier", "active_version": None}
    succeeded = job_answer("succeeded", 100, version=1, deployable=True)
    live = deployment_answer("live", live_version=1, target_version=None)
    server = Server(
        httpx.Response(201, json=model),
        httpx.Response(201, json=dataset),
        httpx.Response(202, json=job_answer("queued")),
        httpx.Response(200, json=succeeded),
        httpx.Response(202, json=deployment_answer("rolling_out")),
        httpx.Response(200, json=live),
        httpx.Response(200, json=INVOCATION),
    )

    class ScriptedClient(Client):
        def __init__(self, base_url, token, **options):
            super().__init__(base_url, token, transport=httpx.MockTransport(server), **options)

    monkeypatch.setattr(tenantml_client, "Client", ScriptedClient)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tickets.csv").write_text("text,label\nWhere is my refund?,refund\n")
    exec(compile(readme_example(), "README.md", "exec"), {"token": "tml_team"})
    assert capsys.readouterr().out.strip() == "[{'label': 'refund'}]"
    assert [
        (r.method, r.url.path.removeprefix("/api/v1/tenants/acme")) for r in server.requests
    ] == [
        ("POST", "/models/"),
        ("POST", "/datasets/"),
        ("POST", "/models/intents/training-jobs/"),
        ("GET", "/api/v1/training-jobs/7/"),
        ("POST", "/models/intents/deployments/"),
        ("GET", "/models/intents/deployments/"),
        ("POST", "/models/intents/invoke"),
    ]
    assert json.loads(server.requests[2].content) == {"dataset": "3"}
