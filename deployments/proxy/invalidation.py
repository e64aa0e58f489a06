"""Telling every serving process that a model's routing changed.

A deploy, rollback, promotion, drain or instance restart sends ``routing_changed``; this module
drops the route in this process at once and tells the others:

- with a Redis broker, over pub/sub (channel ``tenantml:routing``), which a daemon thread in each
  serving process listens to;
- on the embedded default (no Redis), by rewriting a generation file under ``VAR_DIR``, whose
  change time each serving process checks at most every ``FILE_CHECK_INTERVAL_S`` on its request
  path (one ``stat``, no database).

Either way a route is also dropped after ``PROXY_ROUTE_TTL_S`` as a safety net.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.dispatch import receiver

from deployments.proxy.routing import ROUTES
from deployments.signals import routing_changed

logger = logging.getLogger(__name__)

CHANNEL = "tenantml:routing"
FILE_CHECK_INTERVAL_S = 0.25
ALL = "*"


def _redis_url() -> str | None:
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    return url if url.startswith(("redis://", "rediss://")) else None


def generation_file() -> Path:
    return Path(settings.VAR_DIR) / "routing.generation"


def publish(model_id: int | None) -> None:
    """Drop the route here and in every other serving process."""
    ROUTES.invalidate(model_id)
    url = _redis_url()
    if url:
        try:
            import redis

            redis.Redis.from_url(url, socket_timeout=1).publish(
                CHANNEL, ALL if model_id is None else str(model_id)
            )
            return
        except Exception as exc:  # the TTL still bounds staleness; say why it is longer
            logger.warning("Could not publish a routing change on Redis: %s", exc)
    path = generation_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(uuid.uuid4().hex)
    tmp.replace(path)


@receiver(routing_changed, dispatch_uid="tenantml_proxy_routing_changed")
def _on_routing_changed(sender, model_id: int | None = None, **kwargs) -> None:
    publish(model_id)


class Subscriber:
    """Applies other processes' routing changes to this process's cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._file_mtime: int | None = None
        self._file_checked = 0.0

    def start(self) -> None:
        """Start the Redis listener once (no-op without Redis)."""
        url = _redis_url()
        if not url or (self._thread is not None and self._thread.is_alive()):
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, args=(url,), name="routing-invalidation", daemon=True
                )
                self._thread.start()

    def _listen(self, url: str) -> None:
        import redis

        while True:
            try:
                pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                # Anything published while (re)connecting is unknown: start from a clean cache.
                ROUTES.invalidate(None)
                for message in pubsub.listen():
                    data = message.get("data")
                    data = data.decode() if isinstance(data, bytes) else str(data)
                    ROUTES.invalidate(None if data == ALL else int(data))
            except Exception as exc:
                logger.warning("Routing invalidation listener lost Redis (%s); retrying.", exc)
                ROUTES.invalidate(None)
                time.sleep(1)

    def poll_file(self) -> None:
        """On the embedded default: drop every route when the generation file changed."""
        if _redis_url():
            return
        now = time.monotonic()
        if now - self._file_checked < FILE_CHECK_INTERVAL_S:
            return
        self._file_checked = now
        try:
            mtime = generation_file().stat().st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        if self._file_mtime is not None and mtime != self._file_mtime:
            ROUTES.invalidate(None)
        self._file_mtime = mtime


SUBSCRIBER = Subscriber()
