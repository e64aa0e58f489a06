"""``manage.py train``: starts a job, shows its progress to the end, fails loudly on bad input."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from config.celery import app
from models_registry.demo.tickets import generate_tickets, to_csv
from models_registry.models import TrainingJob
from models_registry.services.datasets import create_dataset
from tests.factories import TenantModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(tenant):
    create_dataset(
        tenant=tenant,
        name="tickets.csv",
        content=to_csv(generate_tickets("northbank", rows=120, seed=2)),
        actor="t",
    )
    return TenantModelFactory(tenant=tenant, name="intents")


def test_train_runs_a_job_and_prints_progress_and_the_version(
    model, django_capture_on_commit_callbacks
):
    out = io.StringIO()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True  # the worker's part runs inline
    try:
        with django_capture_on_commit_callbacks(execute=True):
            call_command(
                "train",
                "--tenant", model.tenant.slug,
                "--model", "intents",
                "--dataset", "tickets.csv",
                "--hyperparameter", "epochs=150",
                "--no-wait",
                stdout=out,
            )  # fmt: skip
        job = TrainingJob.objects.get()
        call_command("train", "--follow", str(job.pk), "--poll", "0.01", stdout=out)
    finally:
        app.conf.task_always_eager = previous

    text = out.getvalue()
    assert f"Training job {job.pk} started" in text
    assert "100 %  succeeded" in text
    assert "v1: ready" in text and "macro_f1" in text
    assert "Quality gate: promoted. No active version" in text
    assert job.hyperparameters["epochs"] == 150


def test_train_names_the_missing_argument_and_the_unknown_model(model):
    with pytest.raises(CommandError, match="--dataset is required"):
        call_command("train", "--tenant", model.tenant.slug, "--model", "intents")
    with pytest.raises(CommandError, match="nope"):
        call_command(
            "train", "--tenant", model.tenant.slug, "--model", "nope", "--dataset", "tickets.csv"
        )
