"""Shared-base requests, transport-free: which head a version is, its files, and the single
model's request and answer turned into the shared model's and back.

Both serving backends use these: the local one sends the bodies to a Triton instance, the
SageMaker one through ``InvokeEndpoint`` with the shared model as ``TargetModel``. A proxied
single-model request (REST invoke, Open Inference Protocol, SageMaker runtime; JSON or binary
tensors) gains a ``HEAD`` input naming the version's head on every row and asks for the per-row
``STATUS`` as JSON; the shared model's answer loses its own outputs and is what the single model
would have answered, plus whether any row's head was not resident.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from config.errors import Conflict, DomainError
from deployments.backends.shared_heads import STATUS_NOT_LOADED
from deployments.exceptions import ModelLoadFailed
from models_registry import artifacts
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion

# The wire names the shared model adds to a single-model request and answer (see
# ``models_registry.triton_runtime.shared_intent``).
HEAD_INPUT = "HEAD"
STATUS_OUTPUT = "STATUS"
# Outputs of the shared model that the single model does not have: never shown to callers.
SHARED_ONLY_OUTPUTS = (STATUS_OUTPUT, "ROW_HEAD", "RESULT")
BINARY_JSON = "application/vnd.sagemaker-triton.binary+json;json-header-size="


def head_id(version: ModelVersion) -> str:
    """The id a version's head has inside the shared model (its serving name: unique, stable)."""
    return version.triton_model_name


def head_files(version: ModelVersion) -> tuple[bytes, bytes]:
    """The head weights and label names of a version, as its artifact holds them."""
    spec = get_kind(version.model.kind).shared_base
    if spec is None:
        raise DomainError(f"{version.model.kind} models have no shared base.", field="mode")
    if not version.artifact_uri:
        raise Conflict(f"{version} has no trained artifact to take its head from.", field="version")
    uri = version.artifact_uri
    try:
        if uri.endswith(".tar.gz"):
            with tempfile.TemporaryDirectory(prefix="tenantml-head-") as scratch:
                directory = artifacts.local_copy(uri, Path(scratch))
                return tuple((directory / name).read_bytes() for name in spec.head_files)
        if uri.startswith("s3://"):
            return tuple(artifacts.read_bytes(f"{uri.rstrip('/')}/{n}") for n in spec.head_files)
        return tuple((Path(uri) / name).read_bytes() for name in spec.head_files)
    except (OSError, DomainError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        raise ModelLoadFailed(f"{version}'s head could not be read: {reason}") from exc


def header_length(content_type: str) -> int | None:
    """The JSON header's length in a body of Triton's binary content type (else None)."""
    if content_type.startswith(BINARY_JSON.split(";")[0]) and "json-header-size=" in content_type:
        return int(content_type.rsplit("=", 1)[1])
    return None


def with_head(header: dict, head: str) -> dict:
    """A single-model request header turned into one for the shared encoder: every row names
    ``head``, and the row status is asked for (as JSON, whatever the other outputs' format)."""
    inputs = list(header.get("inputs") or [])
    rows = int(inputs[0]["shape"][0]) if inputs and inputs[0].get("shape") else 0
    shared = {
        **header,
        "inputs": [
            *(tensor for tensor in inputs if tensor.get("name") != HEAD_INPUT),
            {"name": HEAD_INPUT, "shape": [rows, 1], "datatype": "BYTES", "data": [head] * rows},
        ],
    }
    if header.get("outputs"):
        shared["outputs"] = [
            *(tensor for tensor in header["outputs"] if tensor.get("name") != STATUS_OUTPUT),
            {"name": STATUS_OUTPUT, "parameters": {"binary_data": False}},
        ]
    return shared


def split_body(data: bytes, content_type: str) -> tuple[dict, bytes, bool]:
    """A request or answer body as its JSON header, the binary tensors after it, and whether
    it was binary; ValueError when the header is not JSON."""
    length = header_length(content_type)
    if length is None:
        return json.loads(data), b"", False
    return json.loads(data[:length]), data[length:], True


def join_body(header: dict, binary: bytes, is_binary: bool) -> tuple[bytes, str]:
    """A header and its binary tensors as one body, and that body's content type."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not is_binary:
        return encoded, "application/json"
    return encoded + binary, f"{BINARY_JSON}{len(encoded)}"


def single_model_answer(header: dict) -> tuple[dict, bool]:
    """The answer as the single model gives it (no STATUS), and whether a row's head was not
    resident."""
    missing = False
    outputs = []
    for tensor in header.get("outputs", []):
        if tensor.get("name") == STATUS_OUTPUT:
            missing = STATUS_NOT_LOADED in [str(value) for value in tensor.get("data", [])]
        if tensor.get("name") in SHARED_ONLY_OUTPUTS:
            continue
        outputs.append(tensor)
    return {**header, "outputs": outputs}, missing
