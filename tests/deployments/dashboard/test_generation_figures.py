"""Time to first token and tokens a second on the endpoint and model pages, for models of a kind
that generates text (a test kind registered here), and nowhere else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.models import Placement
from deployments.usage import GenerationFigures, UsageCounters, flush_usage
from models_registry.kinds import GenerationSpec, ModelKind
from tests.factories import ModelVersionFactory, PlacementFactory, TenantModelFactory
from tests.kind_support import register_for_test

GENERATING_KIND = "test-dashboard-generator"

GENERATOR = ModelKind(
    name=GENERATING_KIND,
    description="Test only: a kind that generates text.",
    input_schema={"type": "array", "items": {"type": "string"}},
    output_schema={"type": "array"},
    generation=GenerationSpec(),
)


@pytest.fixture(autouse=True)
def generating_kind(monkeypatch):
    return register_for_test(monkeypatch, GENERATOR)


@pytest.fixture
def generating_placement(fleet) -> Placement:
    """A generating model beside the fleet's classifiers, with three answers in the last hour
    (time to first token 100, 120 and 140 ms; 60 tokens over 1.5 s) and one before it."""
    model = TenantModelFactory(tenant=fleet.acme, name="replies", kind=GENERATING_KIND)
    version = ModelVersionFactory(model=model, number=1, package_uri="/tmp/replies.tar.gz")
    placement = PlacementFactory(version=version, instance=fleet.instance, host_memory_mb=90.0)
    counters = UsageCounters()
    now = timezone.now()
    answers = [
        (now - timedelta(minutes=2), GenerationFigures(100.0, 20, 500.0)),
        (now - timedelta(minutes=2), GenerationFigures(120.0, 20, 500.0)),
        (now - timedelta(minutes=3), GenerationFigures(140.0, 20, 500.0)),
        (now - timedelta(minutes=90), GenerationFigures(9000.0, 1, 9000.0)),
    ]
    for when, figures in answers:
        counters.record(
            version_id=version.pk,
            endpoint_id=placement.endpoint_id,
            tenant_id=fleet.acme.pk,
            latency_ms=700.0,
            cold_start=False,
            placement_id=placement.pk,
            now=when,
            generated=figures,
        )
    flush_usage(counters=counters)
    return placement


def test_the_endpoint_page_shows_generation_figures_for_generating_models_only(
    staff_client, fleet, generating_placement
):
    response = staff_client.get(reverse("dashboard:endpoint", args=[fleet.endpoint.name]))

    body = response.content.decode()
    pk = generating_placement.pk
    assert f'data-testid="placement-ttft-{pk}">120 ms<' in body
    assert f'data-testid="placement-tokens-per-s-{pk}">40.0 tokens/s<' in body
    assert f'data-testid="placement-ttft-{fleet.acme_placement.pk}"' not in body
    assert "time to first token (1 h)" in body


def test_an_endpoint_without_generating_models_has_no_generation_columns(staff_client, fleet):
    response = staff_client.get(reverse("dashboard:endpoint", args=[fleet.endpoint.name]))

    assert "time to first token" not in response.content.decode()


def test_the_model_page_shows_each_generating_versions_figures(
    staff_client, fleet, generating_placement
):
    response = staff_client.get(reverse("dashboard:tenant", args=["acme"]))

    body = response.content.decode()
    assert 'data-testid="ttft-replies-v1">120 ms<' in body
    assert 'data-testid="tokens-per-s-replies-v1">40.0 tokens/s<' in body
    assert 'data-testid="ttft-intents-v1"' not in body
