"""Packages for a serving image: the kind's runtime layer is built once per platform version and
image Python, vendored under ``python-packages/``, and the image package is recorded on the
version and reused until the image or its Python changes."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deployments.models import Event
from models_registry.exceptions import InvalidArtifact
from models_registry.models import ModelVersion
from models_registry.runtime_layers import (
    LAYER_DIR,
    build_runtime_layer,
    layer_key,
    running_python,
)
from models_registry.services.packaging import image_package
from tests.factories import TenantModelFactory
from tests.serving_fixtures import packaged_version

REQUIREMENTS = ("onnxruntime", "tokenizers")


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    return build_runtime_layer(
        requirements=REQUIREMENTS,
        python_version=running_python(),
        platform_version="0.1.0",
        cache_dir=tmp_path_factory.mktemp("layers"),
    )


def test_the_layer_holds_what_the_model_imports_without_numpy_or_unused_parts(layer):
    tops = {name.split("/")[0] for name in layer.files}
    assert {"onnxruntime", "tokenizers"} <= tops
    assert not any(top.startswith("numpy") for top in tops)  # the image's own numpy serves
    assert not any(name.startswith("onnxruntime/quantization/") for name in layer.files)
    assert not any("__pycache__" in name for name in layer.files)
    assert layer.size_bytes > 10_000_000


def test_the_layer_imports_on_a_python_that_has_only_numpy(layer, tmp_path):
    import numpy

    only_numpy = tmp_path / "site"
    only_numpy.mkdir()
    (only_numpy / "numpy").symlink_to(Path(numpy.__file__).parent)
    libs = Path(numpy.__file__).parent.parent / "numpy.libs"
    if libs.is_dir():
        (only_numpy / "numpy.libs").symlink_to(libs)
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]; "
        f"sys.path.insert(0, {str(only_numpy)!r})\n"
        "try:\n    import onnxruntime\n"
        "except ModuleNotFoundError as exc:\n    print('without', exc)\n"
        f"sys.path.append({str(layer.directory)!r})\n"
        "import onnxruntime, tokenizers; print('with', onnxruntime.__version__)"
    )

    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )

    assert "without No module named 'onnxruntime'" in result.stdout
    assert "with " in result.stdout


def test_the_layer_is_built_once_and_its_key_names_the_python(tmp_path):
    first = build_runtime_layer(
        requirements=("tokenizers",),
        python_version=running_python(),
        platform_version="0.1.0",
        cache_dir=tmp_path,
    )
    marker = first.directory / first.files[0]
    stamp = marker.stat().st_mtime_ns

    again = build_runtime_layer(
        requirements=("tokenizers",),
        python_version=running_python(),
        platform_version="0.1.0",
        cache_dir=tmp_path,
    )

    assert again.directory == first.directory and marker.stat().st_mtime_ns == stamp
    assert f"-py{running_python()}-" in first.key
    other = layer_key(requirements=("tokenizers",), python_version="3.10", platform_version="0.1.0")
    assert other != first.key


def test_a_requirement_that_is_not_installed_is_refused_by_name(tmp_path):
    with pytest.raises(InvalidArtifact, match="no-such-runtime-package"):
        build_runtime_layer(
            requirements=("no-such-runtime-package",),
            python_version=running_python(),
            platform_version="0.1.0",
            cache_dir=tmp_path,
        )


@pytest.mark.django_db
def test_the_image_package_vendors_the_layer_and_is_recorded_and_reused(
    intent_artifact, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    version = packaged_version(TenantModelFactory(kind="intent-classifier"), intent_artifact, 1)

    uri = image_package(
        version=version, image_uri="triton:24.09", python_version=running_python(), actor="test"
    )

    version.refresh_from_db()
    assert version.image_package_uri == uri != version.package_uri
    assert version.image_uri == "triton:24.09" and version.image_python == running_python()
    assert version.image_package_size_bytes > version.size_bytes
    local = Path(uri.removeprefix("file://"))
    with tarfile.open(local) as tar:
        names = tar.getnames()
    model_dir = version.triton_model_name
    assert f"{model_dir}/{LAYER_DIR}/onnxruntime/__init__.py" in names
    assert f"{model_dir}/1/model.py" in names and f"{model_dir}/config.pbtxt" in names
    assert Event.objects.filter(kind="version.image_packaged", version=version).count() == 1

    same = image_package(
        version=version, image_uri="triton:24.09", python_version=running_python(), actor="test"
    )

    assert same == uri
    assert Event.objects.filter(kind="version.image_packaged", version=version).count() == 1
    ModelVersion.objects.filter(pk=version.pk).update(image_uri="triton:23.12")
    image_package(
        version=version, image_uri="triton:24.09", python_version=running_python(), actor="test"
    )
    assert Event.objects.filter(kind="version.image_packaged", version=version).count() == 2
