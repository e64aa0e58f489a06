"""Registry services: models, versions, datasets, cancellation."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from django.db import connection

from config.errors import DomainError
from deployments.models import Event
from models_registry.exceptions import InvalidDataset, JobNotCancellable, ModelAlreadyExists
from models_registry.kinds import UnknownKind, kind_names
from models_registry.models import Dataset, ModelVersion, TrainingJob
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model, register_version
from models_registry.services.training import request_training_cancel
from tests.factories import TenantModelFactory, TrainingJobFactory

pytestmark = pytest.mark.django_db


def test_create_model_checks_the_kind_and_the_name(tenant):
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    assert model.kind == "intent-classifier"
    with pytest.raises(UnknownKind) as unknown:
        create_model(tenant=tenant, name="other", kind="llm", actor="t")
    assert unknown.value.field == "kind"
    assert "intent-classifier" in unknown.value.message
    with pytest.raises(ModelAlreadyExists):
        create_model(tenant=tenant, name="intents", kind="embedding", actor="t")
    with pytest.raises(DomainError) as bad_name:
        create_model(tenant=tenant, name="Has Spaces", kind="embedding", actor="t")
    assert bad_name.value.field == "name"


def test_builtin_kinds_are_registered():
    assert {"intent-classifier", "embedding"} <= set(kind_names())


def test_every_builtin_kind_is_known_after_one_kind_module_was_imported_first():
    # A fresh interpreter: importing one kind registers it before anything asks the registry.
    script = (
        "import models_registry.kinds.intent_classifier\n"
        "from models_registry.kinds import get_kind, kind_names\n"
        "print(get_kind('embedding').name, kind_names())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "embedding"


def test_versions_are_numbered_consecutively_and_recorded(tenant):
    model = TenantModelFactory(tenant=tenant)
    numbers = [register_version(model=model, actor="t").number for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert Event.objects.filter(kind="version.registered", tenant=tenant).count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_get_distinct_numbers():
    model = TenantModelFactory()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def register():
        try:
            barrier.wait()
            register_version(model=model, actor="worker")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=register) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(ModelVersion.objects.filter(model=model).values_list("number", flat=True))
    assert numbers == [1, 2, 3, 4, 5, 6]


def test_dataset_upload_is_stored_with_digest_and_label_counts(tenant, isolated_artifact_store):
    lines = [f"where is my driver {n},driver_late" for n in range(5)]
    lines += [f"refund please {n},refund" for n in range(6)]
    content = ("text,label\n" + "\n".join(lines) + "\n").encode()
    dataset = create_dataset(tenant=tenant, name="tickets.csv", content=content, actor="t")
    assert (dataset.format, dataset.rows) == ("csv", 11)
    assert dataset.labels == {"driver_late": 5, "refund": 6}
    stored = isolated_artifact_store / "datasets" / tenant.slug / f"{dataset.sha256}.csv"
    assert stored.read_bytes() == content


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (b"body,label\nhi,a\n", "a.csv", "missing column(s) text"),
        (b"text,label\n,refund\n", "a.csv", "row 2, field text: empty"),
        (b"text,label\nhello,\n", "a.csv", "row 2, field label: empty"),
        (b'{"text": "hi"}\n', "a.jsonl", "row 1, field label: missing"),
        (b"{nope\n", "a.jsonl", "row 1: not valid JSON"),
        (b"text,label\n\xff\xfe,refund\n", "a.csv", "not UTF-8"),
        (b"text,label\n", "a.csv", "no rows"),
    ],
)
def test_invalid_dataset_names_row_and_field_and_stores_nothing(
    tenant, isolated_artifact_store, content, name, expected
):
    with pytest.raises(InvalidDataset) as error:
        create_dataset(tenant=tenant, name=name, content=content, actor="t")
    assert expected in error.value.message
    assert not Dataset.objects.exists()
    assert not isolated_artifact_store.exists() or not any(isolated_artifact_store.rglob("*.*"))


def test_cancelling_a_queued_job_is_immediate_and_a_finished_one_is_refused():
    queued = TrainingJobFactory()
    cancelled = request_training_cancel(job=queued, actor="t")
    assert cancelled.status == TrainingJob.Status.CANCELLED and cancelled.cancel_requested
    running = TrainingJobFactory(status=TrainingJob.Status.RUNNING)
    flagged = request_training_cancel(job=running, actor="t")
    assert flagged.status == TrainingJob.Status.RUNNING and flagged.cancel_requested
    done = TrainingJobFactory(status=TrainingJob.Status.SUCCEEDED)
    with pytest.raises(JobNotCancellable):
        request_training_cancel(job=done, actor="t")
