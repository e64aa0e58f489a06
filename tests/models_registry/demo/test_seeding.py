"""``manage.py seed_demo``: three demo tenants, valid datasets, idempotent."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from models_registry.models import Dataset, TenantModel
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_three_verticals_with_labelled_tickets(isolated_artifact_store):
    out = io.StringIO()
    call_command("seed_demo", rows=320, stdout=out)
    tenants = {t.slug: t for t in Tenant.objects.all()}
    assert set(tenants) == {"zoomride", "threadline", "northbank"}
    assert tenants["northbank"].tier == "premium"
    for dataset in Dataset.objects.filter(name="tickets.csv"):
        assert dataset.rows == 320
        assert len(dataset.labels) >= 6
        assert (isolated_artifact_store / "datasets" / dataset.tenant.slug).is_dir()
    label_sets = [set(d.labels) for d in Dataset.objects.filter(name="tickets.csv")]
    assert not (label_sets[0] & label_sets[1] & label_sets[2])
    assert TenantModel.objects.filter(name="intents", kind="intent-classifier").count() == 3
    assert TenantModel.objects.get(tenant__slug="northbank", name="embeddings").kind == "embedding"
    assert "zoomride (ZoomRide, standard): created" in out.getvalue()


def test_seed_demo_twice_changes_nothing(isolated_artifact_store):
    call_command("seed_demo", rows=300, stdout=io.StringIO())
    counts = (Tenant.objects.count(), Dataset.objects.count(), TenantModel.objects.count())
    out = io.StringIO()
    call_command("seed_demo", rows=300, stdout=out)
    assert (Tenant.objects.count(), Dataset.objects.count(), TenantModel.objects.count()) == counts
    assert out.getvalue().count("already present") == 3
