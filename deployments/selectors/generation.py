"""Reads of what generating models produced (time to first token, tokens a second) from the
usage minutes, per version, for the model and endpoint pages. Which models generate is their
kind's business (``ModelKind.generation``); nothing here names a kind."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Sum

from deployments.models import Endpoint, VersionUsageMinute
from deployments.usage import generation_rates
from models_registry.kinds import get_kind


def kind_generates(kind_name: str) -> bool:
    """Whether models of this kind generate text (and have generation figures to show)."""
    return get_kind(kind_name).generation is not None


def generation_by_version(
    *, version_ids: Iterable[int], since: datetime, endpoint: Endpoint | None = None
) -> dict[int, dict]:
    """Per version (on ``endpoint``, or everywhere), since ``since``: the mean time to first
    token in ms, tokens a second and the answers they come from; versions that generated
    nothing are absent."""
    rows = VersionUsageMinute.objects.filter(
        version_id__in=list(version_ids), minute__gte=since, generations__gt=0
    )
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    figures = {}
    for row in rows.values("version_id").annotate(
        answers=Sum("generations"),
        ttft_ms=Sum("time_to_first_token_ms_sum"),
        tokens=Sum("generated_tokens"),
        generating_ms=Sum("generation_ms_sum"),
    ):
        rates = generation_rates(
            generations=row["answers"],
            time_to_first_token_ms_sum=row["ttft_ms"],
            tokens=row["tokens"],
            generation_ms_sum=row["generating_ms"],
        )
        if rates is not None:
            figures[row["version_id"]] = rates
    return figures
