"""Test kinds: a kind a test registers is known for that test only, so the kinds every other
test sees (endpoints per kind, the API's kind choices) stay the platform's own."""

from __future__ import annotations

from models_registry import kinds
from models_registry.kinds import ModelKind, register


def register_for_test(monkeypatch, kind: ModelKind) -> ModelKind:
    """Register ``kind`` until the end of the test (``monkeypatch`` puts the registry back)."""
    kinds.kind_names()  # the built-in kinds are registered before the registry is copied
    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))
    return register(kind)
