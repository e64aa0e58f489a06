"""The whole training lifecycle through the REST API alone, with a real training process: upload
a dataset, create a model, start a job, watch it finish, read the ready version's metrics, then
train again, roll back and promote."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from config.celery import app
from models_registry.demo.tickets import generate_tickets, to_csv

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
