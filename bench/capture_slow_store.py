"""The platform's ASGI application with an artifact store that takes ``BENCH_STORE_DELAY_MS``
(default 250) before every write.

``bench/proxy.py --capture`` serves this module (``uvicorn --app-dir bench
capture_slow_store:application``) to measure what request capture costs a request when the store
is slow: the capture writer's part files wait that long each, as they would behind a slow or
distant S3; everything else is the platform's own code.
"""

from __future__ import annotations

import os
import time

from config.asgi import application
from models_registry import artifacts

__all__ = ["application"]

DELAY_S = float(os.environ.get("BENCH_STORE_DELAY_MS", "250")) / 1000
_put_bytes = artifacts.put_bytes


def slow_put_bytes(key: str, content: bytes):
    """``put_bytes`` after the store's delay."""
    time.sleep(DELAY_S)
    return _put_bytes(key, content)


artifacts.put_bytes = slow_put_bytes
