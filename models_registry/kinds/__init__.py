"""The model-kind registry: each kind is a plugin module that registers itself here.

A kind knows its input/output schema (the proxy validates requests against it), its warm-up
request, and (as the serving and training work lands) how to train and package itself for Triton.
Placement, routing and the dashboard only ever talk to kinds through this registry, so adding a
kind is one new module and one line in ``BUILTIN_KINDS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from config.errors import DomainError


class UnknownKind(DomainError):
    code = "unknown_kind"


@dataclass(frozen=True)
class ModelKind:
    name: str
    description: str
    # JSON-schema-like description of one request's "inputs" and one answer's "outputs".
    input_schema: dict
    output_schema: dict
    warmup_inputs: list = field(default_factory=list)


_REGISTRY: dict[str, ModelKind] = {}

BUILTIN_KINDS = [
    "models_registry.kinds.intent_classifier",
    "models_registry.kinds.embedding",
]


def register(kind: ModelKind) -> ModelKind:
    """Add a kind to the registry (called at import time by each kind module)."""
    _REGISTRY[kind.name] = kind
    return kind


def _load_builtins() -> None:
    for module in BUILTIN_KINDS:
        importlib.import_module(module)


def get_kind(name: str) -> ModelKind:
    """The registered kind called ``name``, or UnknownKind naming the choices."""
    if not _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        choices = ", ".join(sorted(_REGISTRY))
        raise UnknownKind(
            f"Unknown model kind {name!r}; choose one of: {choices}.", field="kind"
        ) from None


def kind_names() -> list[str]:
    if not _REGISTRY:
        _load_builtins()
    return sorted(_REGISTRY)
