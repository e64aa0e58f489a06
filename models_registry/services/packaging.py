"""Writes for packaging: building a version's Triton package, storing it and marking the version
ready to serve (or failed, with the reason)."""

from __future__ import annotations

import importlib.metadata
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
from models_registry.triton_packages import CONFIG_TYPE_TO_DATATYPE, build_triton_package


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


def _build_and_store(*, version: ModelVersion, file_name: str, runtime_layer=None):
    """Build the version's Triton package (with ``runtime_layer``, if any) and store it as
    ``packages/<tenant>/<model>/v<N>/<file_name>``; the stored artifact and the signature."""
    with tempfile.TemporaryDirectory(prefix="tenantml-package-") as scratch:
        artifact_dir = Path(artifacts.local_copy(version.artifact_uri, Path(scratch)))
        info = build_triton_package(
            kind=version.model.kind,
            artifact_dir=artifact_dir,
            triton_model_name=version.triton_model_name,
            out_path=Path(scratch) / "model.tar.gz",
            runtime_layer=runtime_layer,
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


def image_package(*, version: ModelVersion, image_uri: str, python_version: str, actor: str) -> str:
    """The URI of the version's package for a serving image whose Python is ``python_version``
    (built once, with the kind's runtime layer vendored, and recorded on the version)."""
    version = ModelVersion.objects.select_related("model__tenant").get(pk=version.pk)
    if (
        version.image_package_uri
        and version.image_uri == image_uri
        and version.image_python == python_version
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
        version=version, file_name=f"model-py{python_version}.tar.gz", runtime_layer=layer
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
            f"{version} packaged for {image_uri} (Python {python_version}): "
            f"{stored.size_bytes / 1e6:,.1f} MB"
            + (f" with runtime layer {layer.key}" if layer else "")
            + "."
        ),
        actor=actor,
        version=version,
        data={
            "image_uri": image_uri,
            "python": python_version,
            "sha256": stored.sha256,
            "size_bytes": stored.size_bytes,
            "runtime_layer": layer.key if layer else None,
        },
    )
    return stored.uri


# --- Training, quality gate, promotion ---
