"""A reply model's training job from end to end (``manage.py train``, the local training process,
packaging, the quality gate): an undertrained version is packaged but held, because it does not
beat its n-gram baseline."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from config.celery import app
from models_registry.demo.replies import generate_replies
from models_registry.demo.tickets import to_csv
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.datasets import create_dataset
from tests.factories import TenantModelFactory

pytestmark = pytest.mark.django_db


def test_an_undertrained_reply_model_is_packaged_and_held_below_its_baseline(
    tenant, django_capture_on_commit_callbacks
):
    create_dataset(
        tenant=tenant,
        name="replies.csv",
        content=to_csv(generate_replies("northbank", rows=80, seed=4)),
        actor="t",
    )
    model = TenantModelFactory(tenant=tenant, name="replies", kind="reply-autocomplete")
    out = io.StringIO()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True  # the worker's part runs inline
    try:
        with django_capture_on_commit_callbacks(execute=True):
            call_command(
                "train",
                "--tenant", tenant.slug,
                "--model", "replies",
                "--dataset", "replies.csv",
                "--hyperparameter", "epochs=1",
                "--hyperparameter", "d_model=32",
                "--hyperparameter", "threads=1",
                "--no-wait",
                stdout=out,
            )  # fmt: skip
        job = TrainingJob.objects.get()
        call_command("train", "--follow", str(job.pk), "--poll", "0.01", stdout=out)
    finally:
        app.conf.task_always_eager = previous

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, out.getvalue()
    version = ModelVersion.objects.get(model=model)
    assert version.status == ModelVersion.Status.READY and version.sha256
    metrics = version.metrics
    assert metrics["next_token_accuracy"] < metrics["ngram_next_token_accuracy"]
    assert "does not beat the baseline's ngram_next_token_accuracy" in version.status_reason
    model.refresh_from_db()
    assert model.active_version is None
