"""The live gate on stored figures: it waits for enough requests or minutes, aborts on errors,
latency or disagreement against the thresholds (the settings, or a rollout's own), promotes
otherwise, and decides from the database alone, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import Deployment, Event
from deployments.selectors.candidates import Comparison, VersionFigures, comparison_for
from deployments.services import candidates
from deployments.usage import UsageCounters, flush_usage
from tests.factories import EndpointFactory, ModelVersionFactory, TenantModelFactory

THRESHOLDS = {
    "min_requests": 100.0,
    "min_minutes": 30.0,
    "max_error_rate": 0.01,
    "max_p99_ratio": 2.0,
    "max_p99_ms": 50.0,
    "min_agreement": 0.9,
}


def figures(version, requests, *, errors=0, p99_ms=10.0, agreement=None) -> VersionFigures:
    return VersionFigures(
        version=version,
        requests=requests,
        errors=errors,
        p50_ms=p99_ms,
        p99_ms=p99_ms,
        mean_ms=p99_ms,
        compared=requests if agreement is not None else 0,
        agreement=agreement,
    )


def comparison(candidate: VersionFigures, *, minutes=1.0, live_p99_ms=10.0) -> Comparison:
    return Comparison(
        strategy="shadow",
        share=0.1,
        minutes=minutes,
        live=figures(1, 1000, p99_ms=live_p99_ms),
        candidate=candidate,
    )


@pytest.mark.parametrize(
    ("candidate", "minutes", "ready", "promote", "reason"),
    [
        (figures(2, 99), 1.0, False, False, None),
        (figures(2, 0), 45.0, False, False, None),
        (figures(2, 5), 45.0, True, True, None),
        (figures(2, 100, errors=2), 1.0, True, False, "error rate 2.0% is over 1.0%"),
        (figures(2, 100, p99_ms=100.0), 1.0, True, False, "p99 latency 100 ms is over 50 ms"),
        (figures(2, 100, agreement=0.8), 1.0, True, False, "agreement with v1 80.0%"),
        (figures(2, 100, errors=1, p99_ms=50.0, agreement=0.95), 1.0, True, True, None),
    ],
    ids=[
        "too-few-requests",
        "minutes-but-no-request",
        "minutes-with-requests",
        "errors",
        "slow",
        "disagrees",
        "within-every-threshold",
    ],
)
def test_the_gate_waits_aborts_or_promotes(candidate, minutes, ready, promote, reason):
    decision = candidates.decide(comparison(candidate, minutes=minutes), THRESHOLDS)

    assert (decision.ready, decision.promote) == (ready, promote)
    if reason:
        assert any(reason in text for text in decision.reasons), decision.reasons


def test_a_slow_live_version_allows_the_candidate_twice_its_p99():
    slow = comparison(figures(2, 100, p99_ms=250.0), live_p99_ms=250.0)
    slower = comparison(figures(2, 100, p99_ms=1000.0), live_p99_ms=250.0)

    assert candidates.decide(slow, THRESHOLDS).promote
    assert not candidates.decide(slower, THRESHOLDS).promote


def shadow_with_traffic(*, candidate_errors: int, gate: dict | None = None) -> Deployment:
    """A deployment serving v1 with v2 as a shadow for 5 minutes: 50 requests each (v2's with
    ``candidate_errors`` failed), stored in the minute rows."""
    model = TenantModelFactory(name="intents")
    v1 = ModelVersionFactory(model=model, number=1, package_uri="/tmp/v1.tar.gz")
    v2 = ModelVersionFactory(model=model, number=2, package_uri="/tmp/v2.tar.gz")
    model.active_version = v1
    model.save()
    endpoint = EndpointFactory()
    now = timezone.now()
    deployment = Deployment.objects.create(
        model=model,
        endpoint=endpoint,
        status=Deployment.Status.LIVE,
        live_version=v1,
        candidate_version=v2,
        candidate_strategy=Deployment.Strategy.SHADOW,
        candidate_started_at=now - timedelta(minutes=5),
        gate_overrides=gate or {},
    )
    counters = UsageCounters()
    for version, errors in ((v1, 0), (v2, candidate_errors)):
        for index in range(50):
            counters.record(
                version_id=version.pk,
                endpoint_id=endpoint.pk,
                tenant_id=model.tenant_id,
                latency_ms=8.0,
                cold_start=False,
                error=index < errors,
                mirrored=version == v2,
                now=now,
            )
    flush_usage(counters=counters)
    return deployment


def test_a_rollouts_own_thresholds_override_the_settings(db, settings):
    settings.TENANTML_CANARY_MIN_REQUESTS = 1000
    deployment = shadow_with_traffic(candidate_errors=0, gate={"min_requests": 40})

    thresholds = candidates.gate_thresholds(deployment)

    assert thresholds["min_requests"] == 40
    assert thresholds["max_error_rate"] == settings.TENANTML_CANARY_MAX_ERROR_RATE
    assert comparison_for(deployment).candidate.mirrored == 50


def test_the_gate_decides_from_stored_figures_once(db, settings):
    settings.TENANTML_CANARY_MIN_REQUESTS = 40
    deployment = shadow_with_traffic(candidate_errors=5)

    # A pass run by any worker, after the serving process that counted is gone: the figures
    # are the minute rows.
    first = candidates.evaluate_candidates()
    second = candidates.evaluate_candidates()

    assert [d["promoted"] for d in first] == [False] and second == []
    deployment.refresh_from_db()
    assert deployment.candidate_version is None and deployment.live_version.number == 1
    event = Event.objects.get(kind="canary.aborted")
    assert event.data["candidate"]["error_rate"] == 0.1
    assert event.data["live"]["requests"] == 50


def test_a_good_shadow_is_promoted_and_becomes_the_active_version(db, settings):
    settings.TENANTML_CANARY_MIN_REQUESTS = 40
    deployment = shadow_with_traffic(candidate_errors=0)

    candidates.evaluate_candidates()

    deployment.refresh_from_db()
    assert (deployment.live_version.number, deployment.previous_version.number) == (2, 1)
    assert deployment.model.active_version.number == 2
    assert Event.objects.filter(kind="canary.promoted").count() == 1
    assert not Event.objects.filter(kind="deployment.requested").exists()


@pytest.mark.parametrize(
    ("live", "candidate", "agreement"),
    [
        ({"label": "refund", "scores": {}}, {"label": "refund", "scores": {}}, 1.0),
        ({"label": "refund", "scores": {}}, {"label": "login", "scores": {}}, 0.0),
        ([1.0, 0.0], [1.0, 0.0], 1.0),
        ([1.0, 0.0], [0.6, 0.8], 0.6),
        ([1.0, 0.0], [-1.0, 0.0], 0.0),
        ("a reply", "a reply", 1.0),
    ],
    ids=["same-label", "other-label", "same-vector", "cosine", "opposite", "equal-text"],
)
def test_agreement_is_the_same_label_or_the_cosine_of_embeddings(live, candidate, agreement):
    from deployments.proxy.mirroring import output_agreement

    assert output_agreement(live, candidate) == pytest.approx(agreement)
