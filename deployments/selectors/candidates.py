"""Reads of a canary or shadow rollout: the live and the new version side by side since the new
one started getting traffic, from their minute rows (``VersionUsageMinute``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.utils import timezone

from deployments.models import Deployment, VersionUsageMinute
from deployments.usage import LATENCY_BUCKETS_MS, percentile_from_histogram


@dataclass(frozen=True)
class VersionFigures:
    """One version's requests since the rollout started: how many, failed, how fast, and (the
    new version) how often its answers agreed with the live version's."""

    version: int
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    mirrored: int = 0
    mirror_dropped: int = 0
    compared: int = 0
    agreement: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Comparison:
    """A canary or shadow rollout's figures: its strategy, share, minutes so far, and each
    version's figures."""

    strategy: str
    share: float
    minutes: float
    live: VersionFigures
    candidate: VersionFigures

    def as_dict(self) -> dict:
        """The figures as JSON (what events, the API and the dashboard show)."""
        return {
            "strategy": self.strategy,
            "share": self.share,
            "minutes": round(self.minutes, 2),
            "live": {**asdict(self.live), "error_rate": round(self.live.error_rate, 4)},
            "candidate": {
                **asdict(self.candidate),
                "error_rate": round(self.candidate.error_rate, 4),
            },
        }


def version_figures(*, version, since) -> VersionFigures:
    """A version's figures from its minute rows since ``since`` (on every endpoint)."""
    requests = errors = mirrored = dropped = compared = 0
    latency_ms_sum = agreement_sum = 0.0
    histogram: dict[str, int] = {}
    rows = VersionUsageMinute.objects.filter(version=version, minute__gte=since).values_list(
        "invocations",
        "errors",
        "latency_ms_sum",
        "mirrored",
        "mirror_dropped",
        "compared",
        "agreement_sum",
        "latency_histogram",
    )
    for row in rows:
        requests += row[0]
        errors += row[1]
        latency_ms_sum += row[2]
        mirrored += row[3]
        dropped += row[4]
        compared += row[5]
        agreement_sum += row[6]
        for bucket, count in (row[7] or {}).items():
            histogram[bucket] = histogram.get(bucket, 0) + int(count)

    def bounded(pct: float) -> float | None:
        value = percentile_from_histogram(histogram, pct)
        return float(LATENCY_BUCKETS_MS[-1]) if value == float("inf") else value

    return VersionFigures(
        version=version.number,
        requests=requests,
        errors=errors,
        p50_ms=bounded(50),
        p99_ms=bounded(99),
        mean_ms=round(latency_ms_sum / requests, 2) if requests else None,
        mirrored=mirrored,
        mirror_dropped=dropped,
        compared=compared,
        agreement=round(agreement_sum / compared, 4) if compared else None,
    )


def comparison_for(deployment: Deployment) -> Comparison:
    """The live and the candidate version's figures since the candidate started."""
    started = deployment.candidate_started_at or timezone.now()
    since = started.replace(second=0, microsecond=0)
    return Comparison(
        strategy=deployment.candidate_strategy,
        share=deployment.candidate_share,
        minutes=max(0.0, (timezone.now() - started).total_seconds() / 60),
        live=version_figures(version=deployment.live_version, since=since),
        candidate=version_figures(version=deployment.candidate_version, since=since),
    )


def candidate_rollout(deployment: Deployment | None) -> dict | None:
    """A deployment's canary or shadow rollout as shown: loading, or its comparison."""
    if deployment is None or not deployment.candidate_strategy:
        return None
    if deployment.candidate_version is None:
        target = deployment.target_version
        return {
            "strategy": deployment.candidate_strategy,
            "share": deployment.candidate_share,
            "state": "loading",
            "version": target.number if target else None,
            "live_version": deployment.live_version.number if deployment.live_version else None,
        }
    return {"state": "comparing", **comparison_for(deployment).as_dict()}


def tenant_candidate_rollouts(*, tenant) -> list[dict]:
    """The tenant's canary and shadow rollouts under way, by model name, as shown."""
    deployments = (
        Deployment.objects.filter(model__tenant=tenant)
        .exclude(candidate_strategy="")
        .select_related("model", "live_version", "candidate_version", "target_version")
        .order_by("model__name")
    )
    return [
        {"model": deployment.model.name, **candidate_rollout(deployment)}
        for deployment in deployments
    ]
