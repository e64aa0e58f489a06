"""Fixtures of the client's tests: one fresh platform for the session, and training data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.live_platform import LivePlatform, start_live_platform


@pytest.fixture(scope="session")
def live_platform(tmp_path_factory) -> LivePlatform:
    """A platform started by ``manage.py up`` on a fresh state directory, shared by the tests
    that talk to a running platform (each uses tenants of its own)."""
    process, platform = start_live_platform(tmp_path_factory.mktemp("live-platform-var"))
    try:
        yield platform
    finally:
        process.stop()


@pytest.fixture
def tickets_csv(tmp_path) -> Path:
    """A labelled ticket dataset as a product team would upload it: 120 rows, six intents."""
    from models_registry.demo.tickets import generate_tickets, to_csv

    path = tmp_path / "tickets.csv"
    path.write_bytes(to_csv(generate_tickets("threadline", rows=120, seed=17)))
    return path
