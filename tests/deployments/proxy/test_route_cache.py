"""The route cache past its TTL: used only while the database is down, and only so long."""

from __future__ import annotations

import time

from deployments.proxy.routing import MISSING, RouteCache


def test_an_expired_route_is_missing_to_readers_but_kept_for_a_database_outage():
    cache = RouteCache()
    cache.put(("acme", "intents"), None, ttl_s=0.0)
    time.sleep(0.01)
    assert cache.get(("acme", "intents")) is MISSING
    assert cache.get_stale(("acme", "intents"), max_stale_s=60) is None  # the cached "no route"


def test_a_route_expired_longer_than_the_stale_window_is_not_used():
    cache = RouteCache()
    cache.put(("acme", "intents"), None, ttl_s=0.0)
    time.sleep(0.05)
    assert cache.get_stale(("acme", "intents"), max_stale_s=0.01) is MISSING
    assert cache.get_stale(("acme", "other"), max_stale_s=60) is MISSING
