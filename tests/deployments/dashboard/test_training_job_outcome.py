"""The training job's partial says what a trained job is doing (packaging and gating its
version, still polled) and, once it succeeded, what the quality gate decided and why."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.deployments.dashboard.conftest import htmx
from tests.factories import ModelVersionFactory, TrainingJobFactory

pytestmark = pytest.mark.django_db


def test_a_packaging_job_keeps_polling_and_names_the_version_it_is_packaging(staff_client, fleet):
    job = TrainingJobFactory(model=fleet.acme_model, status="packaging", progress_pct=100)
    ModelVersionFactory(model=fleet.acme_model, number=7, training_job=job, status="packaging")
    url = reverse("dashboard:training-job", args=["acme", job.pk])
    partial = staff_client.get(url, **htmx(f"training-job-{job.pk}")).content.decode()
    assert "hx-trigger" in partial and ">Packaging</span>" in partial
    assert "Produced v7; packaging it and putting it to the quality gate." in partial


def test_a_succeeded_job_shows_the_quality_gates_outcome_and_reason(staff_client, fleet):
    job = TrainingJobFactory(
        model=fleet.acme_model,
        status="succeeded",
        progress_pct=100,
        gate_outcome="held",
        gate_reason="macro_f1 0.7000 is worse than the active version's 0.9000 by 0.2000.",
    )
    ModelVersionFactory(model=fleet.acme_model, number=8, training_job=job)
    page = staff_client.get(reverse("dashboard:training-job", args=["acme", job.pk]))
    body = page.content.decode()
    assert page.status_code == 200 and "hx-trigger" not in body.split("<h1>", 1)[1]
    assert "Produced v8: held back by the quality gate. macro_f1 0.7000 is worse" in body
