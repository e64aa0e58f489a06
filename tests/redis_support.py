"""The configured Redis broker, for tests that restart it or listen on its pub/sub channels."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

import psutil
from django.conf import settings

from deployments.proxy.invalidation import CHANNEL
from deployments.proxy.routing import MISSING, ROUTES, Route
from tests.waiting import wait_until


def redis_address() -> tuple[str, int]:
    """Host and port of the Redis that ``CELERY_BROKER_URL`` names."""
    parts = urlsplit(settings.CELERY_BROKER_URL)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def redis_client():
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5)


def _subscribed_from_this_process() -> bool:
    """Whether Redis lists a pub/sub subscriber connected from one of this process's sockets."""
    _, port = redis_address()
    mine = {
        f"{c.laddr.ip}:{c.laddr.port}"
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port
    }
    with redis_client() as client:
        listed = client.client_list()
    return any(c["addr"] in mine and int(c.get("sub", 0)) > 0 for c in listed)


def publish_from_another_process(model_id: int) -> None:
    """Publish a routing change as another serving process would: its own process and client."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import redis, sys; redis.Redis.from_url(sys.argv[1]).publish(*sys.argv[2:])",
            settings.CELERY_BROKER_URL,
            CHANNEL,
            str(model_id),
        ],
        check=True,
        timeout=30,
    )


def cached_route(slug: str, model_id: int) -> Route:
    route = Route(
        tenant_id=1,
        tenant_slug=slug,
        tenant_active=True,
        model_id=model_id,
        model_name="m",
        kind="k",
    )
    ROUTES.put((slug, "m"), route, ttl_s=600)
    return route


def wait_for_routing_listener(timeout_s: float = 15) -> None:
    """Return once this process's listener (``SUBSCRIBER``, started by the caller: this never
    starts one, so a listener that died is not replaced here) is subscribed and past the cache
    clear it does on (re)connecting: what a test caches from then on is dropped only by
    messages."""
    wait_until(
        _subscribed_from_this_process,
        timeout_s,
        f"this process's routing listener is not subscribed to {CHANNEL} on {redis_address()}",
    )
    # Subscribed: at most the clear right after subscribing is still to come. A probe route put
    # now is gone once that clear or the probe's own message has been applied; either way the
    # clear is behind us.
    cached_route("listener-probe", model_id=900_001)
    publish_from_another_process(900_001)
    wait_until(
        lambda: ROUTES.get(("listener-probe", "m")) is MISSING,
        timeout_s,
        "the subscribed routing listener applied neither its reconnect clear nor a message",
    )


def assert_a_published_change_drops_only_its_route(*, model_id: int, other_model_id: int) -> None:
    """With the listener ready (``wait_for_routing_listener``), a change published for
    ``model_id`` drops that model's cached route and leaves another model's route cached: the
    message itself was received, not a clear of the whole cache."""
    cached_route("changed", model_id=model_id)
    other = cached_route("unchanged", model_id=other_model_id)

    publish_from_another_process(model_id)

    wait_until(
        lambda: ROUTES.get(("changed", "m")) is MISSING,
        10,
        f"the routing change published for model {model_id} never reached this process's cache",
    )
    assert ROUTES.get(("unchanged", "m")) is other, (
        f"model {other_model_id}'s route was dropped too: the cache was cleared, not invalidated "
        "by the message"
    )
