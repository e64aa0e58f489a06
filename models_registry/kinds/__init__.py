"""The model-kind registry: each kind is a plugin module that registers itself here.

A kind knows its input/output schema (the proxy validates requests against it), its warm-up
request, how to build its artifact (``build_artifact``), how to serve on Triton (the python-backend
module copied as ``1/model.py``, the config's tensors, the files its package needs) and how to
speak to that model (``encode_request`` / ``decode_response``, KServe v2 JSON). Placement,
routing and the dashboard only ever talk to kinds through this registry, so adding a kind is one
new module and one line in ``BUILTIN_KINDS``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import DomainError

# Triton rejects a request with more rows than this; the proxy's schema check says so first.
TRITON_MAX_BATCH_SIZE = 32
TEXT_INPUT_NAME = "TEXT"


class UnknownKind(DomainError):
    code = "unknown_kind"


@dataclass(frozen=True)
class TritonTensor:
    """One input or output of a Triton model config (dims exclude the batch dimension)."""

    name: str
    data_type: str  # a Triton config type name: "TYPE_STRING", "TYPE_FP32", ...
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TritonSignature:
    """A kind's tensors and extra config parameters for one artifact."""

    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    parameters: dict[str, str] = field(default_factory=dict)


TEXT_INPUT = TritonTensor(name=TEXT_INPUT_NAME, data_type="TYPE_STRING", dims=(1,))


def encode_text_request(inputs: list) -> dict:
    """The KServe v2 JSON body asking a text model about ``inputs`` (one row per text)."""
    texts = [str(text) for text in inputs]
    return {
        "inputs": [
            {"name": TEXT_INPUT_NAME, "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}
        ]
    }


def response_output(answer: dict | str | bytes, name: str) -> tuple[list[int], list]:
    """The shape and flat (row-major) data of output ``name`` in a KServe v2 JSON answer."""
    if isinstance(answer, str | bytes):
        answer = json.loads(answer)
    for output in answer.get("outputs", []):
        if output.get("name") == name:
            return [int(size) for size in output["shape"]], _flatten(output["data"])
    raise KeyError(f"The model's answer has no output {name!r}.")


def _flatten(data: list) -> list:
    flat: list = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


@dataclass(frozen=True)
class ModelKind:
    name: str
    description: str
    # JSON-schema-like description of one request's "inputs" and one answer's "outputs".
    input_schema: dict
    output_schema: dict
    warmup_inputs: list = field(default_factory=list)
    # Dotted path of the self-contained python-backend module packaged as ``1/model.py``.
    runtime_module: str = ""
    # Files ``build_artifact`` writes; packaging refuses an artifact directory missing one.
    artifact_files: tuple[str, ...] = ()
    # ``triton_signature(artifact_dir)``: the config's tensors (may depend on the artifact, e.g.
    # the number of labels) and extra parameters.
    triton_signature: Callable[[Path], TritonSignature] | None = None
    # ``build_artifact(*, out_dir, base=None, **hyperparameters) -> metrics``; pure, no ORM.
    build_artifact: Callable[..., dict] | None = None
    # Request body for a list of inputs, and the answer decoded into the REST API's "outputs".
    encode_request: Callable[[list], dict] = encode_text_request
    decode_response: Callable[[dict], list] | None = None
    max_batch_size: int = TRITON_MAX_BATCH_SIZE
    # Resident memory one loaded copy needs before it has been measured (placement's first guess).
    expected_memory_mb: float | None = None


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
