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
from typing import TypeVar

from config.errors import DomainError

# Triton rejects a request with more rows than this; the proxy's schema check says so first.
TRITON_MAX_BATCH_SIZE = 32
TEXT_INPUT_NAME = "TEXT"


class UnknownKind(DomainError):
    code = "unknown_kind"


class InvalidHyperparameter(DomainError):
    code = "invalid_hyperparameter"


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
    # A decoupled model (``model_transaction_policy { decoupled: true }``) sends any number of
    # responses per request, then a final flag: what a generating kind streams through.
    decoupled: bool = False


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


# A shared-base model answers at most this many bytes of head weights per head; larger is refused.
SHARED_BASE_MAX_HEAD_BYTES = 4 * 1024 * 1024
# The head cache of one shared-base model instance when the platform names no other capacity.
SHARED_BASE_HEAD_CACHE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class SharedBaseSpec:
    """How a kind serves every tenant from one loaded base: a python-backend model holding the
    base (``base_files``, taken from the platform's base encoder) and an in-process cache of the
    tenants' heads (``head_files`` of each version's artifact, sent to it as bytes).

    Placement, routing and the dashboard ask ``kind.shared_base is not None``; the package is
    built by ``models_registry.shared_base`` and spoken to through
    ``deployments.backends.shared_heads``.
    """

    # Dotted path of the self-contained python-backend module packaged as the shared model's
    # ``1/model.py``.
    runtime_module: str
    # Files of the platform's base encoder (``base_model.base_encoder``) the shared model loads.
    base_files: tuple[str, ...]
    # The artifact files that make one tenant's head: the weights file, then the label names.
    head_files: tuple[str, str]
    # Whether the base is the int8 export (what the kind's artifacts embed with).
    base_quantized: bool = True
    # Limits: the largest head accepted, and the cache capacity when none is configured.
    max_head_bytes: int = SHARED_BASE_MAX_HEAD_BYTES
    head_cache_bytes: int = SHARED_BASE_HEAD_CACHE_BYTES


# Triton's generate extension (``POST /v2/models/<name>/generate_stream``) maps a JSON body's keys
# to the model's inputs and its ``parameters`` to the request's parameters.
GENERATE_TEXT_INPUT = "text_input"
GENERATE_TEXT_OUTPUT = "text_output"
GENERATE_FINISH_OUTPUT = "finish_reason"
# Sampling settings a caller may send in ``parameters`` (each checked by the kind's bounds).
GENERATION_PARAMETERS = ("max_new_tokens", "temperature", "top_p", "stop", "seed")


@dataclass(frozen=True)
class GenerationSpec:
    """A kind whose model generates text token by token and streams it: a decoupled Triton
    python-backend model (``model_transaction_policy { decoupled: true }``) spoken to through
    Triton's generate extension.

    One request: ``{"text_input": "<prompt>", "parameters": {"max_new_tokens": 48,
    "temperature": 0.0, "top_p": 1.0, "stop": "[\"\\n\\n\"]", "seed": 0}}`` (``stop`` is a JSON
    list of strings, or one string; every parameter is optional). The model sends one response
    per generated piece of text: ``text_output`` the new text (a delta, never the whole text so
    far) and ``finish_reason`` "" until the last response, then ``"stop"`` (a stop sequence or
    the end of the reply) or ``"length"`` (``max_new_tokens`` reached), then the final flag. It
    stops generating as soon as Triton reports the request cancelled.

    The proxy, the API and the dashboard ask ``kind.generation is not None``; nothing in them
    names a generating kind.
    """

    max_new_tokens_default: int = 48
    max_new_tokens_limit: int = 256
    temperature_default: float = 0.0
    top_p_default: float = 1.0
    # Stop sequences a request may carry, and the longest one.
    max_stop_sequences: int = 4
    max_stop_chars: int = 64


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
    # Distributions the runtime module imports beyond numpy and the standard library (what a
    # serving image's Python has); packages built for such an image vendor them.
    runtime_requirements: tuple[str, ...] = ()
    # Files ``build_artifact`` writes; packaging refuses an artifact directory missing one.
    artifact_files: tuple[str, ...] = ()
    # ``triton_signature(artifact_dir)``: the config's tensors (may depend on the artifact, e.g.
    # the number of labels) and extra parameters.
    triton_signature: Callable[[Path], TritonSignature] | None = None
    # ``build_artifact(*, out_dir, base=None, **hyperparameters) -> metrics``; pure, no ORM.
    build_artifact: Callable[..., dict] | None = None
    # ``train(*, train_rows, validation_rows, out_dir, hyperparameters, cache_dir, progress)
    # -> metrics``: what the training entry point runs (locally or in a SageMaker container).
    # Rows are dicts of the kind's ``dataset_columns`` (``text`` and ``label``, with ``group`` for
    # paraphrase groups, or ``text`` and ``reply``), hyperparameters may arrive as strings
    # (SageMaker passes them so) and ``progress(percent, message)`` reports how far it got.
    # It must import without Django: the SageMaker container has only the sourcedir.
    train: Callable[..., dict] | None = None
    # ``check_hyperparameters(hyperparameters)``: raises InvalidHyperparameter (400, naming the
    # field) for names or values ``train`` would refuse, so a job is refused when it is asked
    # for rather than failing later.
    check_hyperparameters: Callable[[dict], None] | None = None
    # The validation metric that ranks versions of this kind (a key of ``train``'s metrics).
    primary_metric: str = ""
    higher_is_better: bool = True
    # Further validation metrics (higher is better) a new version must not lose beyond the
    # quality gate's tolerance, where the active version reports them.
    guarded_metrics: tuple[str, ...] = ()
    # A metric ``train`` reports for a simple baseline on the same validation data (e.g. an
    # n-gram model's accuracy): a version whose primary metric does not beat it is held back,
    # even the first. Empty: no baseline.
    baseline_metric: str = ""
    # The dataset columns ``train`` reads (``text`` and the target: ``label`` or ``reply``, and
    # ``group`` for paraphrase groups); a training job refuses a dataset without one of them.
    dataset_columns: tuple[str, ...] = ("text", "label")
    # Request body for a list of inputs, and the answer decoded into the REST API's "outputs".
    encode_request: Callable[[list], dict] = encode_text_request
    decode_response: Callable[[dict], list] | None = None
    max_batch_size: int = TRITON_MAX_BATCH_SIZE
    # Resident memory one loaded copy needs before it has been measured (placement's first guess).
    expected_memory_mb: float | None = None
    # ``gpu_encoder(artifact_dir, *, cache_dir) -> Path | None``: the file a package rendered for
    # a GPU adds as ``encoder-gpu.onnx`` when the artifact has none of its own (``kinds.gpu``).
    gpu_encoder: Callable[..., Path | None] | None = None
    # The precision of that encoder, decided for the kind by a measured check (docs/serving.md).
    gpu_precision: str = ""
    # One loaded base serving every tenant's head (``SharedBaseSpec``), or None: one model each.
    shared_base: SharedBaseSpec | None = None
    # Text generated and streamed token by token (``GenerationSpec``), or None: one answer per
    # input.
    generation: GenerationSpec | None = None


_REGISTRY: dict[str, ModelKind] = {}

BUILTIN_KINDS = [
    "models_registry.kinds.intent_classifier",
    "models_registry.kinds.embedding",
    "models_registry.kinds.reply_autocomplete",
]


def register(kind: ModelKind) -> ModelKind:
    """Add a kind to the registry (called at import time by each kind module)."""
    _REGISTRY[kind.name] = kind
    return kind


_builtins_loaded = False


def _load_builtins() -> None:
    """Import every built-in kind once: importing one kind's module directly (a test, the
    training entry point) registers only that kind, so an empty registry is not the signal."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    for module in BUILTIN_KINDS:
        importlib.import_module(module)
    _builtins_loaded = True


def get_kind(name: str) -> ModelKind:
    """The registered kind called ``name``, or UnknownKind naming the choices."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        choices = ", ".join(sorted(_REGISTRY))
        raise UnknownKind(
            f"Unknown model kind {name!r}; choose one of: {choices}.", field="kind"
        ) from None


def kind_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


_Value = TypeVar("_Value", int, float, bool, str)


def hyperparameter(
    hyperparameters: dict,
    name: str,
    default: _Value,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> _Value:
    """``hyperparameters[name]`` parsed as ``type(default)`` (SageMaker sends strings), checked.

    Raises InvalidHyperparameter naming the hyperparameter and the accepted values.
    """
    raw = hyperparameters.get(name, default)
    wanted = type(default)
    try:
        value = _parse(raw, wanted)
    except (TypeError, ValueError):
        raise InvalidHyperparameter(
            f"Hyperparameter {name!r} must be {_describe(wanted)}, not {raw!r}.", field=name
        ) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = " and ".join(
            text
            for text in (
                f"≥ {minimum:g}" if minimum is not None else "",
                f"≤ {maximum:g}" if maximum is not None else "",
            )
            if text
        )
        raise InvalidHyperparameter(
            f"Hyperparameter {name!r} must be {bounds}, not {raw!r}.", field=name
        )
    return value


def check_hyperparameter_names(hyperparameters: dict, *, kind: str, known: set[str]) -> None:
    """Refuse names the kind does not use, so a typo fails loudly instead of being ignored."""
    unknown = sorted(set(hyperparameters) - known)
    if unknown:
        raise InvalidHyperparameter(
            f"Unknown hyperparameter(s) for kind {kind!r}: {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(known))}.",
            field=unknown[0],
        )


def _parse(raw: object, wanted: type) -> object:
    if wanted is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"true", "1", "yes"}:
            return True
        if text in {"false", "0", "no"}:
            return False
        raise ValueError(raw)
    if isinstance(raw, bool):  # True is an int to Python, never a count or a rate here
        raise TypeError(raw)
    if wanted is int:
        number = float(str(raw).strip())
        if not number.is_integer():
            raise ValueError(raw)
        return int(number)
    if wanted is float:
        number = float(str(raw).strip())
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return number
    return str(raw)


def _describe(wanted: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false"}.get(wanted, "a string")
