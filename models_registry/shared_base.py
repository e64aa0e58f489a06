"""The shared-base model of a kind: one Triton model holding the platform's base encoder and an
in-process cache of tenants' heads (``ModelKind.shared_base``), as a package and as a directory.

The model directory::

    <name>/config.pbtxt              backend "python", optional inputs, head cache limits
    <name>/1/model.py                the kind's shared runtime (``SharedBaseSpec.runtime_module``)
    <name>/1/tenantml_encoder.py     the encoder code every built-in runtime imports
    <name>/1/tenantml_head.py        the head format
    <name>/1/encoder.onnx, ...       the base files (``SharedBaseSpec.base_files``)
    <name>/1/encoder-gpu.onnx        only rendered for a GPU: the base in the kind's GPU precision
    <name>/python-packages/...       only in a package built for a serving image

Its name, ``shared.<kind>.<16 hex>``, is derived from the kind and the sha256 of the base files:
the same everywhere the same base is served, and a new name when the base changes. No tenant's
data is in it: heads are sent to the loaded model (``deployments.backends.shared_heads``).
Packages are deterministic like ``triton_packages.build_triton_package``'s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from config.errors import DomainError
from models_registry.base_model import base_encoder
from models_registry.exceptions import InvalidArtifact
from models_registry.kinds import ModelKind, SharedBaseSpec, get_kind
from models_registry.runtime_layers import LAYER_DIR, RuntimeLayer
from models_registry.triton_packages import (
    CPU,
    DEVICES,
    GPU,
    GPU_ENCODER_FILE,
    INSTANCE_KINDS,
    MAX_QUEUE_DELAY_MICROSECONDS,
    MODEL_VERSION_DIR,
    RUNTIME_FILE,
    SHARED_RUNTIME_FILE,
    SHARED_RUNTIME_MODULE,
    PackageEntry,
    PackageInfo,
    runtime_source_of,
    write_model_directory,
    write_package,
)

HEAD_RUNTIME_FILE = "tenantml_head.py"
HEAD_RUNTIME_MODULE = "models_registry.triton_runtime.tenantml_head"
SHARED_MODEL_PREFIX = "shared"
# The head cache's config parameters (read by the shared runtime's ``initialize``).
CAPACITY_PARAMETER = "head_cache_bytes"
MAX_HEAD_PARAMETER = "max_head_bytes"
BASE_SHA256_PARAMETER = "base_sha256"
# Every tensor is optional: a request carries either TEXT and HEAD, or OP and its fields.
INPUTS = ("TEXT", "HEAD", "OP", "HEAD_ID", "HEAD_NPZ", "LABELS_JSON", "SHA256")
OUTPUTS = (("LABEL", "TYPE_STRING", 1), ("SCORES", "TYPE_FP32", -1))
OUTPUTS += (("LABELS", "TYPE_STRING", -1), ("STATUS", "TYPE_STRING", 1))
OUTPUTS += (("ROW_HEAD", "TYPE_STRING", 1), ("RESULT", "TYPE_STRING", 1))
_digests: dict[tuple[str, int, int], str] = {}


def shared_base_spec(kind: str) -> SharedBaseSpec:
    """The kind's shared-base spec, or InvalidArtifact if it serves one model per version."""
    spec = get_kind(kind).shared_base
    if spec is None:
        raise InvalidArtifact(
            f"The {kind!r} kind has no shared-base layout; each version is its own model.",
            field="kind",
        )
    return spec


def base_files(*, kind: str, cache_dir: Path | None = None) -> dict[str, Path]:
    """The base files the kind's shared model loads, by name, from the platform's base encoder."""
    spec = shared_base_spec(kind)
    base = base_encoder(quantized=spec.base_quantized, cache_dir=cache_dir)
    directory = Path(base.onnx_path).parent
    files = {name: directory / name for name in spec.base_files}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise InvalidArtifact(f"The base encoder in {directory} lacks {', '.join(missing)}.")
    return files


def base_sha256(*, kind: str, cache_dir: Path | None = None) -> str:
    """The sha256 naming the kind's base: over each base file's name and content digest."""
    digest = hashlib.sha256()
    for name, path in base_files(kind=kind, cache_dir=cache_dir).items():
        digest.update(f"{name}:{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def shared_base_model_name(*, kind: str, cache_dir: Path | None = None) -> str:
    """The Triton model name of the kind's shared model: ``shared.<kind>.<base digest[:16]>``."""
    return f"{SHARED_MODEL_PREFIX}.{kind}.{base_sha256(kind=kind, cache_dir=cache_dir)[:16]}"


def render_shared_config(
    *,
    kind: ModelKind,
    device: str = CPU,
    head_cache_bytes: int | None = None,
    base_digest: str = "",
    instance_count: int = 1,
) -> str:
    """The shared model's ``config.pbtxt``: python backend, dynamic batching, optional inputs,
    the head cache's limits (capacity ``head_cache_bytes``, or the kind's default)."""
    spec = kind.shared_base
    if spec is None:
        raise InvalidArtifact(f"The {kind.name!r} kind has no shared-base layout.", field="kind")
    if device not in DEVICES:
        raise DomainError(
            f"A package is rendered for one of {', '.join(DEVICES)}, not {device!r}.",
            field="device",
        )
    capacity = spec.head_cache_bytes if head_cache_bytes is None else int(head_cache_bytes)
    if capacity < 1 or instance_count < 1:
        raise DomainError(
            "head_cache_bytes and instance_count must be at least 1 "
            f"(got {capacity} and {instance_count}).",
            field="head_cache_bytes" if capacity < 1 else "instance_count",
        )
    lines = [
        'backend: "python"',
        f"max_batch_size: {kind.max_batch_size}",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_MICROSECONDS}",
        "}",
        "input [",
    ]
    for index, name in enumerate(INPUTS):
        comma = "," if index < len(INPUTS) - 1 else ""
        lines.append(
            f'  {{ name: "{name}" data_type: TYPE_STRING dims: [ 1 ] optional: true }}{comma}'
        )
    lines += ["]", "output ["]
    for index, (name, data_type, width) in enumerate(OUTPUTS):
        comma = "," if index < len(OUTPUTS) - 1 else ""
        lines.append(f'  {{ name: "{name}" data_type: {data_type} dims: [ {width} ] }}{comma}')
    lines += [
        "]",
        f"instance_group [ {{ count: {instance_count} kind: {INSTANCE_KINDS[device]} }} ]",
    ]
    parameters = {
        CAPACITY_PARAMETER: str(capacity),
        MAX_HEAD_PARAMETER: str(spec.max_head_bytes),
        BASE_SHA256_PARAMETER: base_digest,
    }
    for key, value in sorted(parameters.items()):
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def shared_base_entries(
    *, kind: str, cache_dir: Path | None = None, device: str = CPU
) -> list[PackageEntry]:
    """The shared model's version directory: its runtime, the encoder and head code, the base
    (and, on a GPU, the base's float encoder in the kind's GPU precision)."""
    spec = shared_base_spec(kind)
    entries = [
        PackageEntry(
            name=f"{MODEL_VERSION_DIR}/{RUNTIME_FILE}",
            content=runtime_source_of(spec.runtime_module, kind=kind),
        ),
        PackageEntry(
            name=f"{MODEL_VERSION_DIR}/{SHARED_RUNTIME_FILE}",
            content=runtime_source_of(SHARED_RUNTIME_MODULE),
        ),
        PackageEntry(
            name=f"{MODEL_VERSION_DIR}/{HEAD_RUNTIME_FILE}",
            content=runtime_source_of(HEAD_RUNTIME_MODULE),
        ),
    ]
    entries += [
        PackageEntry(name=f"{MODEL_VERSION_DIR}/{name}", source=path)
        for name, path in base_files(kind=kind, cache_dir=cache_dir).items()
    ]
    precision = get_kind(kind).gpu_precision
    if device == GPU and precision and GPU_ENCODER_FILE not in spec.base_files:
        from models_registry.kinds.gpu import base_gpu_encoder

        entries.append(
            PackageEntry(
                name=f"{MODEL_VERSION_DIR}/{GPU_ENCODER_FILE}",
                source=base_gpu_encoder(precision=precision, cache_dir=cache_dir),
            )
        )
    return entries


def build_shared_base_package(
    *,
    kind: str,
    out_path: Path,
    runtime_layer: RuntimeLayer | None = None,
    device: str = CPU,
    cache_dir: Path | None = None,
    head_cache_bytes: int | None = None,
    instance_count: int = 1,
) -> PackageInfo:
    """Write the kind's shared model as a deterministic ``model.tar.gz`` to ``out_path``; with
    ``runtime_layer``, its files travel under ``python-packages/`` (for a serving image)."""
    model_kind = get_kind(kind)
    digest = base_sha256(kind=kind, cache_dir=cache_dir)
    name = f"{SHARED_MODEL_PREFIX}.{kind}.{digest[:16]}"
    entries = shared_base_entries(kind=kind, cache_dir=cache_dir, device=device)
    if runtime_layer is not None:
        entries += [
            PackageEntry(name=f"{LAYER_DIR}/{file}", source=runtime_layer.directory / file)
            for file in runtime_layer.files
        ]
    config = render_shared_config(
        kind=model_kind,
        device=device,
        head_cache_bytes=head_cache_bytes,
        base_digest=digest,
        instance_count=instance_count,
    )
    entries.append(PackageEntry(name="config.pbtxt", content=config.encode()))
    return write_package(
        entries=entries,
        triton_model_name=name,
        out_path=out_path,
        compresslevel=9 if runtime_layer is None else 6,
    )


def shared_base_model_dir(
    *,
    kind: str,
    models_root: Path,
    device: str = CPU,
    cache_dir: Path | None = None,
    head_cache_bytes: int | None = None,
) -> Path:
    """The kind's shared model unpacked under ``models_root`` (the MME ``url`` a local Triton
    loads, holding ``<shared_base_model_name>/config.pbtxt``), written once and then reused.

    The directory is named by the base, the device, the capacity and the runtime code, so a new
    platform release renders again; it is written aside and renamed into place, so a directory
    under that name is always complete.
    """
    model_kind = get_kind(kind)
    digest = base_sha256(kind=kind, cache_dir=cache_dir)
    name = f"{SHARED_MODEL_PREFIX}.{kind}.{digest[:16]}"
    entries = shared_base_entries(kind=kind, cache_dir=cache_dir, device=device)
    config = render_shared_config(
        kind=model_kind, device=device, head_cache_bytes=head_cache_bytes, base_digest=digest
    )
    code = hashlib.sha256()
    for entry in entries:
        code.update(entry.content if entry.content is not None else entry.name.encode())
    code.update(config.encode())
    key = hashlib.sha256(f"{digest}:{device}:{code.hexdigest()}".encode()).hexdigest()[:32]
    models_root = Path(models_root)
    target = models_root / "shared" / f"{key}-{device}"
    if (target / name / "config.pbtxt").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=target.parent))
    try:
        write_model_directory(entries=entries, config=config, out_dir=scratch / "rendered" / name)
        try:
            os.rename(scratch / "rendered", target)
        except OSError:
            if not target.is_dir():  # not another process finishing first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _file_sha256(path: Path) -> str:
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]
