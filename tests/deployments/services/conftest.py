"""Fixtures for the background passes' tests: Triton stand-ins for fleets too large to start."""

from __future__ import annotations

import pytest

from tests.deployments.services.triton_standin import TritonStandIn


@pytest.fixture
def standins(settings, tmp_path):
    """Start Triton stand-ins (``standins(ports=n)``); every one is stopped after the test."""
    settings.VAR_DIR = tmp_path / "var"  # the clients' invocation gates live under it
    started: list[TritonStandIn] = []

    def start(*, ports: int, refusing: int = 0) -> TritonStandIn:
        standin = TritonStandIn(ports=ports, refusing=refusing)
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.stop()
