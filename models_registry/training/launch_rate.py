"""The CreateTrainingJob rate limit, shared by every worker process of the platform.

SageMaker allows about one CreateTrainingJob a second per account and region. A limiter inside
one process keeps that process in line, but every Celery worker process (and every worker
machine) launches on its own, so the slots are handed out from one place all of them see:

- **Redis**, when the Celery broker is Redis (the compose and production profile, where workers
  may run on several machines): a Lua script reads Redis's own clock (``TIME``), takes the later
  of now and the next free slot stored under one key, stores that slot plus the interval and
  answers how long to wait. The script runs atomically, so two processes never get the same slot,
  and only Redis's clock is compared, so the workers' clocks need not agree.
- **A file lock** under ``VAR_DIR`` otherwise (the embedded profile: its SQLite file and
  file-system broker already keep every worker on this one machine): the same read-and-advance
  of the next free slot, under ``fcntl.flock`` on a small file that holds it.

Why not a database row: the platform has no table that could hold the slot without a new
migration (the apps that own the models sit above this layer or hold tenant data), and Django's
database cache is not configured; a row lock on SQLite would also take the whole database's write
lock. Redis is where the multi-machine profile already coordinates (routing invalidation uses it
too), and where it is absent all workers share a disk.

Each caller reserves its own slot and sleeps outside any lock, so waiting launches queue in order
instead of polling. If Redis cannot be reached, a launch falls back to the file lock (this
machine's workers stay spaced) and SageMaker's throttling, retried with backoff by the training
client, covers the rest.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

__all__ = [
    "FileLaunchLimiter",
    "IntervalRateLimiter",
    "LaunchLimiter",
    "RedisLaunchLimiter",
    "fleet_launch_limiter",
]

logger = logging.getLogger(__name__)

# A stored next slot further ahead than this is stale (the wall clock was set back, or a file
# left by an old run), not a queue of waiting launches: no fleet has that many launches waiting.
MAX_RESERVED_AHEAD_S = 600.0
REDIS_SOCKET_TIMEOUT_S = 2.0

# KEYS[1]: the next free slot, in microseconds of Redis's clock; ARGV[1]: the interval in
# microseconds. Returns the microseconds the caller waits before its call. The key expires a
# minute after the last reserved slot, so an idle fleet leaves nothing behind.
_RESERVE_SLOT = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
if next_free - now > tonumber(ARGV[2]) then next_free = now end
local slot = math.max(now, next_free)
local after = slot + interval
local expire_ms = math.floor((after - now) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', expire_ms)
return slot - now
"""


class LaunchLimiter(Protocol):
    """Hands out launch slots at least ``min_interval_s`` apart."""

    min_interval_s: float

    def acquire(self) -> float:
        """Wait for this caller's slot; returns the seconds waited."""
        ...


class IntervalRateLimiter:
    """Spaces calls at least ``min_interval_s`` apart across the threads of one process."""

    def __init__(
        self,
        min_interval_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = min_interval_s
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._next_slot: float | None = None

    def acquire(self) -> float:
        """Wait for the next free slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = now if self._next_slot is None else max(now, self._next_slot)
            # Reserve the slot under the lock but sleep outside it, so concurrent callers each
            # get their own later slot instead of queueing on the lock.
            self._next_slot = slot + self.min_interval_s
        wait_s = slot - now
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


class FileLaunchLimiter:
    """Slots shared by the processes of one machine: the next free slot in a locked file."""

    def __init__(
        self,
        path: Path,
        min_interval_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self._sleep = sleep
        # Wall-clock time: the one clock every process on the machine reads alike, and one that
        # means the same after a restart (a monotonic clock starts again at boot).
        self._clock = clock

    def reserve(self) -> float:
        """Take the next free slot; the seconds until it starts."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="ascii") as slot_file:
            fcntl.flock(slot_file, fcntl.LOCK_EX)  # released when the file closes
            slot_file.seek(0)
            try:
                next_free = float(slot_file.read().strip() or 0.0)
            except ValueError:
                next_free = 0.0  # a torn or foreign file: start afresh
            now = self._clock()
            if next_free - now > MAX_RESERVED_AHEAD_S:
                next_free = now
            slot = max(now, next_free)
            slot_file.seek(0)
            slot_file.truncate()
            slot_file.write(repr(slot + self.min_interval_s))
            slot_file.flush()
        return slot - now

    def acquire(self) -> float:
        wait_s = self.reserve()
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


class RedisLaunchLimiter:
    """Slots shared by every process that reaches one Redis: the next free slot under one key,
    advanced by an atomic script on Redis's own clock."""

    def __init__(
        self,
        url: str,
        key: str,
        min_interval_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        fallback: LaunchLimiter | None = None,
    ) -> None:
        import redis  # the broker's client, installed with celery[redis]

        self.key = key
        self.min_interval_s = min_interval_s
        self._sleep = sleep
        self._fallback = fallback
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        self._script: Any = self._redis.register_script(_RESERVE_SLOT)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)

    def reserve(self) -> float:
        """Take the next free slot; the seconds until it starts."""
        wait_us = self._script(
            keys=[self.key],
            args=[round(self.min_interval_s * 1_000_000), round(MAX_RESERVED_AHEAD_S * 1_000_000)],
        )
        return int(wait_us) / 1_000_000

    def acquire(self) -> float:
        try:
            wait_s = self.reserve()
        except self._errors as error:
            if self._fallback is None:
                raise
            logger.warning(
                "Redis unreachable for the training launch rate (%s); spacing launches on this "
                "machine only.",
                error,
            )
            return self._fallback.acquire()
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


def _redis_url() -> str | None:
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    return url if url.startswith(("redis://", "rediss://")) else None


def fleet_launch_limiter(
    *,
    region: str | None,
    min_interval_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> LaunchLimiter:
    """The limiter every worker process shares for CreateTrainingJob in ``region``: Redis when the
    broker is Redis, else a file lock under ``VAR_DIR``."""
    name = f"sagemaker-create-training-job-{region or 'default'}"
    local = FileLaunchLimiter(
        Path(settings.VAR_DIR) / "launch-rate" / f"{name}.slot", min_interval_s, sleep=sleep
    )
    url = _redis_url()
    if url is None:
        return local
    return RedisLaunchLimiter(
        url, f"tenantml:launch-rate:{name}", min_interval_s, sleep=sleep, fallback=local
    )
