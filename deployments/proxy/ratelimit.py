"""Per-tenant rate limits: a token bucket per tenant in each serving process.

A tenant may send ``PROXY_RATE_LIMIT_RPS`` requests a second on average, in bursts of up to
``PROXY_RATE_LIMIT_BURST``; beyond that the proxy answers 429 with Retry-After (the seconds
until a token is back). Buckets live in memory: no database or Redis round trip per request.
With several web processes the fleet-wide limit is the per-process limit times their number.
"""

from __future__ import annotations

import math
import threading
import time


class TokenBuckets:
    """One bucket per key (a tenant id)."""

    def __init__(self, *, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._lock = threading.Lock()
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key: int, *, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else the seconds to wait for one."""
        if self.rate_per_s <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate_per_s)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
