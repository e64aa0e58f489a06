"""A fresh platform for the client's tests: ``manage.py up`` on the embedded default in its own
state directory — web, a Celery worker and the local Triton servers, as a new user starts it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.up_support import REPO, Platform, free_port

CLIENT_SOURCE = REPO / "clients" / "python" / "src"


@dataclass(frozen=True)
class LivePlatform:
    url: str
    platform_token: str
    var_dir: Path


def start_live_platform(var_dir: Path) -> tuple[Platform, LivePlatform]:
    """Start the platform and wait until it serves, its worker consumes tasks and the intent
    classifiers' Triton server runs."""
    port = free_port()
    process = Platform(
        var_dir, command=["up", "--port", str(port), "--worker-concurrency", "1", "--no-beat"]
    )
    try:
        token = process.wait_for(r"platform API token .*: (tml_\S+)", 120).group(1)
        process.wait_for(r"started triton local-intent-classifier/0", 120)
        process.wait_for(r"TenantML is up at", 120)
        process.wait_for(r"\[worker\].*ready", 120)
    except BaseException:
        process.stop()
        raise
    return process, LivePlatform(
        url=f"http://127.0.0.1:{port}", platform_token=token, var_dir=var_dir
    )
