"""Triton packages: a kind's artifact directory → ``model.tar.gz`` as SageMaker MME with Triton
loads it, plus the checksum check run before a package is trusted.

The tarball holds one Triton model directory::

    <triton_model_name>/config.pbtxt          backend "python", batching, tensors, instances
    <triton_model_name>/1/model.py            the kind's triton_runtime module, verbatim
    <triton_model_name>/1/tenantml_*.py       the shared runtime modules it imports (encoder,
                                              head), verbatim
    <triton_model_name>/1/<artifact files>    encoder.onnx, tokenizer.json, ...
    <triton_model_name>/<env>.tar.gz          only with an execution environment
    <triton_model_name>/python-packages/...   only in a package built for a serving image:
                                              the kind's runtime layer (``runtime_layers``)

A package is rendered for a device. For ``cpu`` (what ``package_version`` builds) the instance
group is ``KIND_CPU`` and a GPU encoder in the artifact stays out, so it is the same package as
before GPU packages existed. For ``gpu`` the group is ``KIND_GPU`` (Triton puts ``count``
instances on every GPU it sees) and ``1/encoder-gpu.onnx`` travels too: the artifact's own, or
the kind's (``ModelKind.gpu_encoder``). Triton refuses ``KIND_GPU`` on a machine without GPUs
("has kind KIND_GPU but no GPUs are available"), so only GPU machines are sent GPU packages.

It is byte-for-byte deterministic (sorted entries, fixed mtimes, owners and modes, no gzip
timestamp), so the same artifact always gives the same sha256 and a rebuild can be recognised.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from config.errors import DomainError
from models_registry import artifacts
from models_registry.exceptions import InvalidArtifact, PackageChecksumMismatch
from models_registry.kinds import ModelKind, TritonSignature, get_kind
from models_registry.runtime_layers import LAYER_DIR, RuntimeLayer

MAX_QUEUE_DELAY_MICROSECONDS = 1000
CPU, GPU = "cpu", "gpu"
DEVICES = (CPU, GPU)
INSTANCE_KINDS = {CPU: "KIND_CPU", GPU: "KIND_GPU"}
# The float encoder of a GPU package (``tenantml_encoder.GPU_ENCODER_FILE``, ``kinds.gpu``).
GPU_ENCODER_FILE = "encoder-gpu.onnx"
MODEL_VERSION_DIR = "1"
RUNTIME_FILE = "model.py"
# The encoder code every built-in runtime imports, shipped beside model.py.
SHARED_RUNTIME_FILE = "tenantml_encoder.py"
SHARED_RUNTIME_MODULE = "models_registry.triton_runtime.tenantml_encoder"
# A tenant head's code (weights, calibration, out-of-scope threshold), shipped beside it too.
HEAD_RUNTIME_FILE = "tenantml_head.py"
HEAD_RUNTIME_MODULE = "models_registry.triton_runtime.tenantml_head"
# Every runtime module a package carries beside model.py: (its file name there, the module).
SHARED_RUNTIME_FILES: tuple[tuple[str, str], ...] = (
    (SHARED_RUNTIME_FILE, SHARED_RUNTIME_MODULE),
    (HEAD_RUNTIME_FILE, HEAD_RUNTIME_MODULE),
)
CONFIG_FILE = "config.pbtxt"
# 1980-01-01: a fixed, non-zero mtime (some extractors warn about the epoch) for every member.
_FIXED_MTIME = 315532800
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackageInfo:
    path: Path
    sha256: str
    size_bytes: int
    triton_model_name: str


@dataclass(frozen=True)
class PackageEntry:
    """One file of a package: its path inside the tarball and its content (a file or bytes)."""

    name: str
    source: Path | None = None
    content: bytes | None = None


def build_triton_package(
    *,
    kind: str,
    artifact_dir: Path,
    triton_model_name: str,
    out_path: Path,
    execution_env_uri: str | None = None,
    instance_count: int = 1,
    runtime_layer: RuntimeLayer | None = None,
    device: str = CPU,
    gpu_encoder: Path | None = None,
) -> PackageInfo:
    """Write the Triton ``model.tar.gz`` for an artifact of ``kind`` to ``out_path`` atomically,
    rendered for ``device``; with ``runtime_layer``, its files travel under
    ``python-packages/``, and a GPU package without an encoder-gpu.onnx of the artifact's own
    carries ``gpu_encoder`` under that name."""
    model_kind = get_kind(kind)
    artifact_dir = Path(artifact_dir)
    _check_model_name(triton_model_name)
    if instance_count < 1:
        raise DomainError(f"instance_count must be at least 1 (got {instance_count}).")
    with tempfile.TemporaryDirectory(prefix="tenantml-env-") as scratch:
        entries = model_entries(
            kind=kind, artifact_dir=artifact_dir, device=device, gpu_encoder=gpu_encoder
        )
        env_name = None
        if runtime_layer is not None:
            entries += [
                PackageEntry(name=f"{LAYER_DIR}/{name}", source=runtime_layer.directory / name)
                for name in runtime_layer.files
            ]
        if execution_env_uri:
            env_path = _local_env(execution_env_uri, Path(scratch))
            env_name = env_path.name
            entries.append(PackageEntry(name=env_name, source=env_path))
        config = render_config(
            signature=model_kind.triton_signature(artifact_dir),
            max_batch_size=model_kind.max_batch_size,
            instance_count=instance_count,
            execution_env_file=env_name,
            device=device,
        )
        entries.append(PackageEntry(name=CONFIG_FILE, content=config.encode()))
        return write_package(
            entries=entries,
            triton_model_name=triton_model_name,
            out_path=out_path,
            # A runtime layer is 80 MB of libraries: level 6 packs it as small as 9 does
            # (measured: 29 MB either way) in half the time.
            compresslevel=9 if runtime_layer is None else 6,
        )


def model_entries(
    *, kind: str, artifact_dir: Path, device: str = CPU, gpu_encoder: Path | None = None
) -> list[PackageEntry]:
    """The version directory's files for ``device``: the runtime, the shared runtime code
    (``SHARED_RUNTIME_FILES``) and the artifact (its GPU encoder only on a GPU, where
    ``gpu_encoder`` stands in for a missing one); ``config.pbtxt`` is rendered apart."""
    model_kind = get_kind(kind)
    if device not in DEVICES:
        raise DomainError(
            f"A package is rendered for one of {', '.join(DEVICES)}, not {device!r}.",
            field="device",
        )
    if not model_kind.runtime_module or model_kind.triton_signature is None:
        raise InvalidArtifact(f"The {kind!r} kind cannot be served on Triton.", field="kind")
    artifact_dir = Path(artifact_dir)
    files = _artifact_files(model_kind, artifact_dir)
    if device == CPU:
        # The CPU package stays what it was: 45 MB of fp16 weights would only slow its loads.
        files = [name for name in files if name != GPU_ENCODER_FILE]
    entries = [
        PackageEntry(name=f"{MODEL_VERSION_DIR}/{RUNTIME_FILE}", content=runtime_source(kind)),
        *(
            PackageEntry(name=f"{MODEL_VERSION_DIR}/{name}", content=runtime_source_of(module))
            for name, module in SHARED_RUNTIME_FILES
        ),
    ]
    entries += [
        PackageEntry(name=f"{MODEL_VERSION_DIR}/{relative}", source=artifact_dir / relative)
        for relative in files
    ]
    if device == GPU and GPU_ENCODER_FILE not in files and gpu_encoder is not None:
        entries.append(
            PackageEntry(name=f"{MODEL_VERSION_DIR}/{GPU_ENCODER_FILE}", source=Path(gpu_encoder))
        )
    return entries


def write_model_directory(*, entries: Iterable[PackageEntry], config: str, out_dir: Path) -> Path:
    """Write a model directory (``config.pbtxt`` plus ``entries``) into the new ``out_dir``,
    hard-linking files where it can; the unpacked form of a package."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / CONFIG_FILE).write_text(config)
    for entry in entries:
        target = out_dir / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.content is not None:
            target.write_bytes(entry.content)
            continue
        try:
            # Artifacts are immutable once stored; a link saves copying tens of MB.
            os.link(entry.source, target)
        except OSError:
            shutil.copyfile(entry.source, target)
    return out_dir


def verify_package(*, path: Path, expected_sha256: str) -> None:
    """Raise PackageChecksumMismatch unless the file at ``path`` has ``expected_sha256``."""
    actual = _sha256_file(Path(path))
    if actual != expected_sha256.lower():
        raise PackageChecksumMismatch(
            f"Triton package {path} has sha256 {actual}, but {expected_sha256} was recorded "
            "when it was built; it is corrupt or was replaced, so it will not be loaded. "
            "Rebuild the package for this version."
        )


def runtime_source(kind: str) -> bytes:
    """The source of the kind's python-backend module, as packaged into ``1/model.py``."""
    return runtime_source_of(get_kind(kind).runtime_module, kind=kind)


def shared_runtime_source() -> bytes:
    """The shared runtime modules' sources, concatenated in package order (what a rendering
    keyed by the runtime code must hash besides the kind's own module)."""
    return b"".join(runtime_source_of(module) for _, module in SHARED_RUNTIME_FILES)


def runtime_source_of(module: str, *, kind: str = "") -> bytes:
    """The source file of a runtime module, read without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        owner = f" of kind {kind!r}" if kind else ""
        raise InvalidArtifact(f"The runtime module {module!r}{owner} is not installed.")
    return Path(spec.origin).read_bytes()


def render_config(
    *,
    signature: TritonSignature,
    max_batch_size: int,
    instance_count: int = 1,
    execution_env_file: str | None = None,
    device: str = CPU,
) -> str:
    """The ``config.pbtxt`` text of a python-backend model with dynamic batching on ``device``
    (``KIND_CPU``, or ``KIND_GPU``: ``instance_count`` instances on each GPU), decoupled when
    the kind's signature says so.

    It has no ``name``: SageMaker loads the model under its own name for the directory, and
    Triton fills the field in.
    """
    parameters = dict(signature.parameters)
    if execution_env_file:
        # $$ is Triton's escape for the model directory of wherever SageMaker unpacked it.
        parameters["EXECUTION_ENV_PATH"] = f"$$TRITON_MODEL_DIRECTORY/{execution_env_file}"
    lines = [
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_MICROSECONDS}",
        "}",
        # A generating model answers each request with a stream of responses.
        *(["model_transaction_policy {", "  decoupled: true", "}"] if signature.decoupled else []),
        *_tensors("input", signature.inputs),
        *_tensors("output", signature.outputs),
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {INSTANCE_KINDS[device]}",
        "  }",
        "]",
    ]
    for key, value in sorted(parameters.items()):
        lines += [
            "parameters {",
            f"  key: {_quote(key)}",
            f"  value: {{ string_value: {_quote(value)} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def write_package(
    *,
    entries: Iterable[PackageEntry],
    triton_model_name: str,
    out_path: Path,
    compresslevel: int = 9,
) -> PackageInfo:
    """Write ``entries`` under ``<triton_model_name>/`` as a deterministic tar.gz, atomically."""
    _check_model_name(triton_model_name)
    entries = sorted(entries, key=lambda entry: entry.name)
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise InvalidArtifact(f"A package cannot hold two files with the same name: {names}.")
    directories = sorted(
        {str(parent) for name in names for parent in PurePosixPath(name).parents} - {"."}
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=".tmp-", suffix=".tar.gz")
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            # filename="" and mtime=0 keep the gzip header free of the temp name and the clock.
            with (
                gzip.GzipFile(
                    filename="",
                    mode="wb",
                    fileobj=hashing,
                    mtime=0,
                    compresslevel=compresslevel,
                ) as compressed,
                tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                tar.addfile(_member(triton_model_name, directory=True))
                for directory in directories:
                    tar.addfile(_member(f"{triton_model_name}/{directory}", directory=True))
                for entry in entries:
                    _add_file(tar, f"{triton_model_name}/{entry.name}", entry)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return PackageInfo(
        path=out_path,
        sha256=hashing.digest.hexdigest(),
        size_bytes=hashing.size,
        triton_model_name=triton_model_name,
    )


class _HashingWriter(io.RawIOBase):
    """Passes writes through to ``target`` while hashing them, so the file is read only once."""

    def __init__(self, target) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)


def _member(name: str, *, directory: bool = False, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = _FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, name: str, entry: PackageEntry) -> None:
    if entry.content is not None:
        tar.addfile(_member(name, size=len(entry.content)), io.BytesIO(entry.content))
        return
    with open(entry.source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        tar.addfile(_member(name, size=size), handle)


def _artifact_files(kind: ModelKind, artifact_dir: Path) -> list[str]:
    if not artifact_dir.is_dir():
        raise InvalidArtifact(f"The artifact directory {artifact_dir} does not exist.")
    missing = [name for name in kind.artifact_files if not (artifact_dir / name).is_file()]
    if missing:
        raise InvalidArtifact(
            f"The {kind.name!r} artifact in {artifact_dir} lacks {', '.join(missing)}; "
            "retrain the version to produce a complete artifact."
        )
    files = sorted(
        path.relative_to(artifact_dir).as_posix()
        for path in artifact_dir.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    )
    for reserved in (RUNTIME_FILE, *(name for name, _ in SHARED_RUNTIME_FILES)):
        if reserved in files:
            raise InvalidArtifact(f"An artifact may not contain {reserved}; the kind provides it.")
    return files


def _local_env(uri: str, scratch: Path) -> Path:
    """The execution environment tarball as a local file (fetched from the store if remote)."""
    name = PurePosixPath(uri.removeprefix("file://")).name
    if not name.endswith(".tar.gz"):
        raise InvalidArtifact(
            f"The execution environment {uri!r} must be a conda-pack .tar.gz file.",
            field="execution_env_uri",
        )
    if uri.startswith("s3://"):
        local = scratch / name
        local.write_bytes(artifacts.read_bytes(uri))
        return local
    local = Path(uri.removeprefix("file://"))
    if not local.is_file():
        raise InvalidArtifact(
            f"The execution environment {uri} does not exist.", field="execution_env_uri"
        )
    return local


def _tensors(section: str, tensors) -> list[str]:
    lines = [f"{section} ["]
    for index, tensor in enumerate(tensors):
        dims = ", ".join(str(size) for size in tensor.dims)
        lines += [
            "  {",
            f"    name: {_quote(tensor.name)}",
            f"    data_type: {tensor.data_type}",
            f"    dims: [ {dims} ]",
            "  }" + ("," if index < len(tensors) - 1 else ""),
        ]
    return [*lines, "]"]


def _quote(value: str) -> str:
    """A protobuf text-format string literal; UTF-8 stays as is (older parsers lack \\u)."""
    for character, escape in (
        ("\\", "\\\\"),
        ('"', '\\"'),
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("\t", "\\t"),
    ):
        value = value.replace(character, escape)
    return f'"{value}"'


def _check_model_name(name: str) -> None:
    if not name or "/" in name or name in {".", ".."} or name.startswith("."):
        raise DomainError(f"{name!r} is not a valid Triton model name.", field="triton_model_name")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Triton config type names → Open Inference Protocol datatypes (what clients see in metadata).
CONFIG_TYPE_TO_DATATYPE = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}
