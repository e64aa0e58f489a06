"""The whole training lifecycle through the REST API alone, with a real training process: upload
a dataset, create a model, start a job, watch it finish, read the ready version's metrics, then
train again, roll back and promote."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from config.celery import app
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.services.training import launch_training_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks_run_inline():
    """The worker's part, run in the test: the task the API enqueues executes on commit."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_upload_train_watch_and_promote_through_the_api(
    tenant_client, tenant, tasks_run_inline, django_capture_on_commit_callbacks
):
    base = f"/api/v1/tenants/{tenant.slug}"
    content = to_csv(generate_tickets("threadline", rows=240, seed=5))
    uploaded = tenant_client.post(
        f"{base}/datasets/",
        {"file": SimpleUploadedFile("tickets.csv", content)},
        format="multipart",
    )
    assert uploaded.status_code == 201, uploaded.content
    assert uploaded.json()["rows"] == 240
    created = tenant_client.post(
        f"{base}/models/", {"name": "intents", "kind": "intent-classifier"}, format="json"
    )
    assert created.status_code == 201, created.content

    with django_capture_on_commit_callbacks(execute=True):
        started = tenant_client.post(
            f"{base}/models/intents/training-jobs/", {"dataset": "tickets.csv"}, format="json"
        )
    assert started.status_code == 202, started.content

    job = tenant_client.get(f"/api/v1/training-jobs/{started.json()['id']}/").json()
    assert job["status"] == "succeeded", job.get("failure_reason")
    assert job["progress_pct"] == 100 and job["version"] == 1
    versions = tenant_client.get(f"{base}/models/intents/versions/").json()["results"]
    assert versions[0]["status"] == "ready" and versions[0]["is_active"]
    assert versions[0]["metrics"]["macro_f1"] >= 0.85
    assert len(versions[0]["sha256"]) == 64

    with django_capture_on_commit_callbacks(execute=True):
        again = tenant_client.post(
            f"{base}/models/intents/training-jobs/",
            {"dataset": "tickets.csv", "hyperparameters": {"epochs": 200}},
            format="json",
        )
    assert tenant_client.get(f"/api/v1/training-jobs/{again.json()['id']}/").json()["version"] == 2
    active = tenant_client.get(f"{base}/models/intents/").json()
    assert active["active_version"] == 2  # as good as v1, so the gate promoted it

    rolled_back = tenant_client.post(f"{base}/models/intents/rollback")
    assert rolled_back.status_code == 200, rolled_back.content
    assert tenant_client.get(f"{base}/models/intents/").json()["active_version"] == 1
    promoted = tenant_client.post(f"{base}/models/intents/versions/2/promote", {}, format="json")
    assert promoted.status_code == 200, promoted.content
    assert tenant_client.get(f"{base}/models/intents/").json()["active_version"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_job_polled_to_succeeded_can_be_deployed_at_once_and_names_its_promoted_version(
    tenant_client, tenant, django_capture_on_commit_callbacks
):
    base = f"/api/v1/tenants/{tenant.slug}"
    content = to_csv(generate_tickets("threadline", rows=240, seed=5))
    tenant_client.post(
        f"{base}/datasets/",
        {"file": SimpleUploadedFile("tickets.csv", content)},
        format="multipart",
    )
    tenant_client.post(
        f"{base}/models/", {"name": "intents", "kind": "intent-classifier"}, format="json"
    )
    started = tenant_client.post(
        f"{base}/models/intents/training-jobs/", {"dataset": "tickets.csv"}, format="json"
    )
    assert started.status_code == 202, started.content
    job_id = started.json()["id"]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            launch_training_job(job_id=job_id)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    # The worker trains in its own thread while the client polls, as a script against the API
    # does: the first answer that says succeeded must already be deployable.
    thread = threading.Thread(target=worker)
    thread.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = tenant_client.get(f"/api/v1/training-jobs/{job_id}/").json()
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if job["status"] == "packaging":
                assert job["version"] == 1 and job["gate"]["outcome"] is None
                assert job["deployable"] is False
            time.sleep(0.02)
        deployed = tenant_client.post(f"{base}/models/intents/deployments/", {}, format="json")
    finally:
        thread.join()
    assert errors == []
    assert seen[-1] == "succeeded", (seen, job["failure_reason"])
    assert deployed.status_code == 202, deployed.content
    assert deployed.json()["target_version"] == 1
    assert job["version"] == 1 and job["deployable"] is True
    assert job["gate"]["outcome"] == "promoted"
    assert job["gate"]["reason"].startswith("No active version")
    order = ["queued", "launching", "running", "packaging", "succeeded"]
    assert seen == sorted(seen, key=order.index)
