"""Waiting on a condition instead of sleeping a fixed time and hoping it held."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    message: str | Callable[[], str],
    *,
    interval_s: float = 0.05,
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; after ``timeout_s``
    fail with ``message`` (a callable is called then, for details read at failure time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = message() if callable(message) else message
            raise AssertionError(f"{detail} (waited {timeout_s} s)")
        time.sleep(interval_s)
