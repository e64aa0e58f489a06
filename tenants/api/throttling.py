"""The management API's request rate per caller, a DRF throttle beside the inference proxy's own
limiter (which answers the invoke route; its view is not throttled again here).

Each token (or signed-in user) may send ``TENANTML_API_THROTTLE_TENANT_RATE`` requests a window,
platform tokens and staff ``TENANTML_API_THROTTLE_PLATFORM_RATE``; the next request in the window
answers 429 with Retry-After, the seconds until the window ends. Counts live in Django's cache
(each web process its own unless the cache is shared), in fixed windows: one counter per caller,
however high the rate.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from tenants.models import ApiToken


def _caller(request) -> tuple[str, bool] | None:
    """(a key naming the caller, whether it is a platform caller), or None for anonymous ones."""
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        # The prefix too: a key must never be shared by two tokens, even where ids are reused.
        return f"token:{token.pk}:{token.prefix}", token.is_platform
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}", bool(user.is_staff)
    return None


class ManagementApiThrottle(BaseThrottle):
    """At most the caller's rate of requests per window; beyond it a 429 until the window ends."""

    def allow_request(self, request, view) -> bool:
        caller = _caller(request)
        if caller is None:
            return True
        key, is_platform = caller
        rate = (
            settings.TENANTML_API_THROTTLE_PLATFORM_RATE
            if is_platform
            else settings.TENANTML_API_THROTTLE_TENANT_RATE
        )
        if rate is None:
            return True
        limit, window_s = rate
        now = time.time()
        window = int(now // window_s)
        counter = f"tenantml:api-rate:{key}:{window_s}:{window}"
        cache.add(counter, 0, timeout=window_s + 1)
        try:
            count = cache.incr(counter)
        except ValueError:  # the counter expired between add and incr: this request starts it
            cache.set(counter, 1, timeout=window_s + 1)
            count = 1
        if count <= limit:
            return True
        self._window_ends_in_s = (window + 1) * window_s - now
        return False

    def wait(self) -> int:
        """Whole seconds until the caller's window ends (at least 1), for Retry-After."""
        return max(1, math.ceil(self._window_ends_in_s))
