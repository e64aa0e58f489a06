"""Writes for packaging: building a version's Triton package, storing it and marking the version
ready to serve (or failed, with the reason).

Where a package is rendered for a device: ``package_version`` builds the CPU package every
version has (the one the local backend loads on CPU instances). A package for a GPU is rendered
from the same artifact when a GPU machine first needs it, for the instance type it runs on:
``device_model_dir`` writes it unpacked for a local Triton on a GPU machine, and
``image_package(device="gpu")`` builds it for a serving image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from config.errors import DomainError
from config.events import record_event
from models_registry import artifacts
from models_registry.exceptions import (
    InvalidVersion,
)
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion
from models_registry.runtime_layers import build_runtime_layer
from models_registry.triton_packages import (
    CONFIG_TYPE_TO_DATATYPE,
    CPU,
    GPU,
    build_triton_package,
    model_entries,
    render_config,
    runtime_source,
    shared_runtime_source,
    write_model_directory,
)


def tensor_signature(*, kind: str, artifact_dir: Path) -> dict:
    """The served tensors as Open Inference Protocol metadata (batch dimension first, -1)."""
    signature = get_kind(kind).triton_signature(artifact_dir)
    return {
        side: [
            {
                "name": tensor.name,
                "datatype": CONFIG_TYPE_TO_DATATYPE.get(tensor.data_type, tensor.data_type),
                "shape": [-1, *tensor.dims],
            }
            for tensor in tensors
        ]
        for side, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs))
    }


def gpu_encoder_for(*, kind: str, artifact_dir: Path) -> Path | None:
    """The encoder a GPU package of this artifact adds, if the kind has one to add."""
    hook = get_kind(kind).gpu_encoder
    return hook(artifact_dir) if hook is not None else None


def _build_and_store(
    *, version: ModelVersion, file_name: str, runtime_layer=None, device: str = CPU
):
    """Build the version's Triton package for ``device`` (with ``runtime_layer``, if any) and
    store it as ``packages/<tenant>/<model>/v<N>/<file_name>``; the stored artifact and the
    signature."""
    with tempfile.TemporaryDirectory(prefix="tenantml-package-") as scratch:
        artifact_dir = Path(artifacts.local_copy(version.artifact_uri, Path(scratch)))
        info = build_triton_package(
            kind=version.model.kind,
            artifact_dir=artifact_dir,
            triton_model_name=version.triton_model_name,
            out_path=Path(scratch) / "model.tar.gz",
            runtime_layer=runtime_layer,
            device=device,
            gpu_encoder=(
                gpu_encoder_for(kind=version.model.kind, artifact_dir=artifact_dir)
                if device == GPU
                else None
            ),
        )
        signature = tensor_signature(kind=version.model.kind, artifact_dir=artifact_dir)
        stored = artifacts.put_file(
            f"packages/{version.model.tenant.slug}/{version.model.name}/"
            f"v{version.number}/{file_name}",
            info.path,
        )
    return stored, signature


def package_version(*, version: ModelVersion, actor: str) -> ModelVersion:
    """Build the version's Triton package (``model.tar.gz``), store it with its sha256 and size,
    and mark the version ready to serve; a failure marks it failed with the reason."""

    with transaction.atomic():
        version = (
            ModelVersion.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=version.pk)
        )
        if version.status == ModelVersion.Status.READY and version.package_uri:
            return version  # a re-delivered task: already done
        if not version.artifact_uri:
            raise InvalidVersion(f"{version} has no trained artifact to package.", field="version")
        version.status = ModelVersion.Status.PACKAGING
        version.save(update_fields=["status", "updated_at"])
    try:
        stored, signature = _build_and_store(version=version, file_name="model.tar.gz")
    except (DomainError, OSError, ValueError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.FAILED, status_reason=f"Packaging failed: {reason}"
        )
        record_event(
            kind="version.packaging_failed",
            severity="error",
            message=f"{version} could not be packaged for Triton: {reason}",
            actor=actor,
            version=version,
        )
        raise
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.READY,
            package_uri=stored.uri,
            signature=signature,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            status_reason="",
        )
        record_event(
            kind="version.packaged",
            message=(
                f"{version} packaged for Triton: {stored.size_bytes / 1e6:,.1f} MB, "
                f"sha256 {stored.sha256[:12]}…"
            ),
            actor=actor,
            version=version,
            data={"sha256": stored.sha256, "size_bytes": stored.size_bytes},
        )
    version.refresh_from_db()
    return version


def _package_device(uri: str) -> str:
    """The device a stored image package was built for, from its file name."""
    return GPU if uri.endswith(f"-{GPU}.tar.gz") else CPU


def image_package(
    *,
    version: ModelVersion,
    image_uri: str,
    python_version: str,
    actor: str,
    device: str = CPU,
) -> str:
    """The URI of the version's package for a serving image whose Python is ``python_version``
    on ``device`` (built once, with the kind's runtime layer vendored, and recorded on the
    version, which records the last one built; the file name says the device, so a CPU and a
    GPU package never stand in for each other)."""
    version = ModelVersion.objects.select_related("model__tenant").get(pk=version.pk)
    suffix = "" if device == CPU else f"-{device}"
    file_name = f"model-py{python_version}{suffix}.tar.gz"
    if (
        version.image_package_uri
        and version.image_uri == image_uri
        and version.image_python == python_version
        and _package_device(version.image_package_uri) == device
    ):
        return version.image_package_uri
    if not version.artifact_uri:
        raise InvalidVersion(f"{version} has no trained artifact to package.", field="version")
    kind = get_kind(version.model.kind)
    layer = build_runtime_layer(
        requirements=kind.runtime_requirements,
        python_version=python_version,
        platform_version=importlib.metadata.version("tenantml"),
        cache_dir=Path(settings.VAR_DIR) / "runtime-layers",
    )
    stored, _ = _build_and_store(
        version=version, file_name=file_name, runtime_layer=layer, device=device
    )
    ModelVersion.objects.filter(pk=version.pk).update(
        image_package_uri=stored.uri,
        image_package_sha256=stored.sha256,
        image_package_size_bytes=stored.size_bytes,
        image_uri=image_uri,
        image_python=python_version,
    )
    record_event(
        kind="version.image_packaged",
        message=(
            f"{version} packaged for {image_uri} (Python {python_version}, {device}): "
            f"{stored.size_bytes / 1e6:,.1f} MB"
            + (f" with runtime layer {layer.key}" if layer else "")
            + "."
        ),
        actor=actor,
        version=version,
        data={
            "image_uri": image_uri,
            "python": python_version,
            "device": device,
            "sha256": stored.sha256,
            "size_bytes": stored.size_bytes,
            "runtime_layer": layer.key if layer else None,
        },
    )
    return stored.uri


def device_model_dir(*, version: ModelVersion, device: str, models_root: Path) -> Path:
    """The version rendered for ``device`` and unpacked under ``models_root`` (the MME ``url``
    a local Triton loads), written once from the version's artifact and then reused.

    The directory is named by the version's package digest, the device and the runtime code, so
    a new platform release renders again; it is written aside and renamed into place, so a
    directory under that name is always complete.
    """
    runtime = hashlib.sha256(
        runtime_source(version.model.kind) + shared_runtime_source()
    ).hexdigest()
    key = hashlib.sha256(f"{version.sha256}:{device}:{runtime}".encode()).hexdigest()[:32]
    models_root = Path(models_root)
    target = models_root / "devices" / f"{key}-{device}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=target.parent))
    try:
        artifact_dir = Path(artifacts.local_copy(version.artifact_uri, scratch))
        kind = get_kind(version.model.kind)
        entries = model_entries(
            kind=kind.name,
            artifact_dir=artifact_dir,
            device=device,
            gpu_encoder=(
                gpu_encoder_for(kind=kind.name, artifact_dir=artifact_dir)
                if device == GPU
                else None
            ),
        )
        config = render_config(
            signature=kind.triton_signature(artifact_dir),
            max_batch_size=kind.max_batch_size,
            device=device,
        )
        rendered = scratch / "rendered"
        write_model_directory(
            entries=entries, config=config, out_dir=rendered / version.triton_model_name
        )
        try:
            os.rename(rendered, target)
        except OSError:
            if not target.is_dir():  # not another process finishing first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# --- Training, quality gate, promotion ---
