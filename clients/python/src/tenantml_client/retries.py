"""When a request is sent again: the retry policy and the reading of Retry-After.

A 429 or 503 means the platform did not process the request, so any request may be sent again
once the wait it asks for has passed. A broken connection is different: the request may have
been processed, so only a request that is safe to repeat (GET, PUT, DELETE, or one carrying an
Idempotency-Key) is sent again — except a connection that never opened, which sent nothing.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from datetime import UTC, datetime

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long the client retries.

    ``max_attempts`` counts the first try; ``max_total_wait_s`` caps the time spent waiting
    between tries for one call (a Retry-After longer than what is left is not waited for: the
    error is raised at once with its ``retry_after_s``). A 429/503 without Retry-After, and a
    broken connection, wait ``backoff_s`` doubling up to ``max_backoff_s``. With
    ``only_when_asked`` the client retries only a 429 or 503 that says when (Retry-After).
    """

    max_attempts: int = 5
    max_total_wait_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    only_when_asked: bool = False

    @classmethod
    def retry_after_only(cls, **overrides) -> RetryPolicy:
        """Retry nothing but the 429s and 503s that carry a Retry-After, as they ask."""
        return cls(only_when_asked=True, **overrides)

    @classmethod
    def never(cls) -> RetryPolicy:
        """Send every request once."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int) -> float:
        """The wait before try ``attempt + 1`` when the platform did not say how long."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP date; None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return float(max(0, math.ceil(seconds)))
