"""Copies of live requests sent to a new version during a shadow (or, sampled, a canary)
rollout, and how its answers compare with the live version's.

A copy is sent after the live answer is in hand, as a task on the event loop that the caller's
request does not wait for: the caller gets the live answer and its latency, nothing else. At most
``SHADOW_MAX_IN_FLIGHT`` copies are in flight in a process; beyond that a copy is dropped and
counted (``mirror_dropped``), so a slow new version can never hold the proxy's memory or
connections. Each copy is counted as the new version's request (latency, errors, ``mirrored``)
and its outputs are compared with the live ones: 1 for the same label, the cosine similarity
for embeddings, equality otherwise (``compared``, ``agreement_sum``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from django.conf import settings

from deployments import usage

logger = logging.getLogger(__name__)

_TASKS: set[asyncio.Task] = set()


def in_flight() -> int:
    """Copies of live requests this process is waiting on."""
    return len(_TASKS)


def output_agreement(live: object, candidate: object) -> float:
    """How far one output of the new version agrees with the live version's (0 to 1): the same
    label, the cosine similarity of two embeddings, or equality."""
    if isinstance(live, dict) and "label" in live:
        return float(isinstance(candidate, dict) and candidate.get("label") == live["label"])
    if (
        isinstance(live, list)
        and isinstance(candidate, list)
        and live
        and len(live) == len(candidate)
        and all(isinstance(value, int | float) for value in (*live, *candidate))
    ):
        dot = sum(a * b for a, b in zip(live, candidate, strict=True))
        norms = math.sqrt(sum(a * a for a in live)) * math.sqrt(sum(b * b for b in candidate))
        return max(0.0, min(1.0, dot / norms)) if norms else float(live == candidate)
    return float(live == candidate)


def answers_agreement(kind_name: str, live: Sequence, candidate: Sequence) -> tuple[int, float]:
    """Outputs compared and the sum of their agreement, for two lists of Triton answers to the
    same parts (binary answers, which the kind cannot decode, are not compared)."""
    from models_registry.kinds import get_kind

    decode = get_kind(kind_name).decode_response
    compared, total = 0, 0.0
    for live_answer, candidate_answer in zip(live, candidate, strict=True):
        if "binary" in live_answer.content_type or "binary" in candidate_answer.content_type:
            continue
        try:
            live_outputs = decode(json.loads(live_answer.body))
            candidate_outputs = decode(json.loads(candidate_answer.body))
        except (ValueError, KeyError, TypeError):
            continue
        for one, other in zip(live_outputs, candidate_outputs, strict=False):
            compared += 1
            total += output_agreement(one, other)
    return compared, total


def mirror(
    route,
    parts: Sequence[tuple[bytes, str]],
    answers: Sequence,
    *,
    forward: Callable[..., Awaitable[Sequence]],
    refused: type[Exception],
) -> None:
    """Send a copy of a live request that was answered (``answers``) to the route's candidate,
    without waiting for it: every request in a shadow rollout, ``CANARY_MIRROR_SHARE`` of the
    live version's requests in a canary. ``forward(route, parts)`` sends it (the routing core's
    own forwarding, passed in so this module needs nothing of the core); ``refused`` is the
    error the core raises for a request it cannot serve."""
    candidate = route.candidate
    if candidate is None or not candidate.copies:
        return
    if route.strategy == "canary" and random.random() >= settings.TENANTML_CANARY_MIRROR_SHARE:
        return
    if len(_TASKS) >= settings.TENANTML_SHADOW_MAX_IN_FLIGHT:
        usage.COUNTERS.record_mirror_dropped(
            version_id=candidate.version_id,
            endpoint_id=candidate.copies[0].endpoint_id,
            tenant_id=candidate.tenant_id,
        )
        return
    task = asyncio.get_running_loop().create_task(
        _send_copy(candidate, list(parts), answers, forward=forward, refused=refused)
    )
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _send_copy(
    candidate,
    parts: list[tuple[bytes, str]],
    live_answers: Sequence,
    *,
    forward: Callable[..., Awaitable[Sequence]],
    refused: type[Exception],
) -> None:
    started = time.perf_counter()
    answers = None
    try:
        answers = await forward(candidate, parts)
        error = any(answer.status != 200 for answer in answers)
    except refused:
        error = True
    except Exception:  # a copy's failure must never reach the live request's caller
        logger.exception("A copy of a live request to %s failed.", candidate.public_name)
        error = True
    copy = answers[0].copy if answers else candidate.copies[0]
    usage.COUNTERS.record(
        version_id=candidate.version_id,
        endpoint_id=copy.endpoint_id,
        tenant_id=candidate.tenant_id,
        latency_ms=(time.perf_counter() - started) * 1000,
        cold_start=bool(answers and any(answer.cold_start for answer in answers)),
        error=error,
        placement_id=copy.placement_id if answers else None,
        mirrored=True,
    )
    if error or not answers:
        return
    compared, agreement_sum = answers_agreement(candidate.kind, live_answers, answers)
    if compared:
        usage.COUNTERS.record_comparison(
            version_id=candidate.version_id,
            endpoint_id=copy.endpoint_id,
            tenant_id=candidate.tenant_id,
            compared=compared,
            agreement_sum=agreement_sum,
        )
    usage.ensure_background_flush()
