"""Runtime layers: the Python packages a kind's Triton model imports beyond what a serving
image's Python has, built once per platform version and image Python, and vendored into the
packages built for that image.

SageMaker's Triton image runs the python backend on its own Python, which has numpy and the
standard library; the built-in kinds' ``model.py`` also imports onnxruntime and tokenizers. Three
ways to bring them were weighed (docs/deployments.md):

- an execution environment (``EXECUTION_ENV_PATH``, a conda-pack tarball): the python backend
  unpacks it again for every model it loads, on top of SageMaker unpacking the model archive, and
  it carries a whole interpreter — about 40 MB more per package and a second extraction on each
  cold start;
- an ensemble of backends the image ships (tokenizer in Python, encoder on the onnxruntime
  backend): no dependencies, but three Triton models per tenant model and a tokenizer rewritten
  in pure Python;
- **vendored packages** (this module): the packages' files under ``python-packages/`` beside the
  model's version directory, put on ``sys.path`` by the runtime. One extraction (SageMaker's),
  no interpreter, and the same ``model.py`` as locally.

A layer is a directory of files, cached under ``cache_dir/<key>/`` and rebuilt only when its key
(platform version, image Python, requirements and their versions) changes. For the running
Python it is copied from the installed distributions (no network); for another Python it is
installed with ``pip install --target`` for that Python and platform (needs the package index).
This module is pure: no Django, no ORM.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from models_registry.exceptions import InvalidArtifact

# Where a layer's files sit inside a package, relative to the Triton model directory.
LAYER_DIR = "python-packages"
# Parts of a distribution the served model never imports (onnxruntime's converters, quantizer
# and transformer optimizers): 9 MB less in every package.
EXCLUDED_PARTS = {
    "onnxruntime": ("onnxruntime/tools/", "onnxruntime/quantization/", "onnxruntime/transformers/"),
}
# Manylinux tag pip resolves wheels for when the layer is built for another Python.
PIP_PLATFORM = "manylinux2014_x86_64"


@dataclass(frozen=True)
class RuntimeLayer:
    """A built layer: its key, its directory and the files in it (relative, sorted)."""

    key: str
    directory: Path
    files: tuple[str, ...]

    @property
    def size_bytes(self) -> int:
        return sum((self.directory / name).stat().st_size for name in self.files)


def running_python() -> str:
    """This interpreter's ``major.minor``."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pinned_requirements(requirements: tuple[str, ...]) -> tuple[str, ...]:
    """``name==version`` for each requirement, at the version installed here."""
    pinned = []
    for name in sorted(set(requirements)):
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise InvalidArtifact(
                f"The serving runtime needs {name}, which is not installed here.",
                field="kind",
            ) from exc
    return tuple(pinned)


def layer_key(*, requirements: tuple[str, ...], python_version: str, platform_version: str) -> str:
    """The cache key of a layer: what it was built from, readable and short."""
    pinned = pinned_requirements(requirements)
    digest = hashlib.sha256("\n".join(pinned).encode()).hexdigest()[:12]
    return f"tenantml-{platform_version}-py{python_version}-{digest}"


def build_runtime_layer(
    *,
    requirements: tuple[str, ...],
    python_version: str,
    platform_version: str,
    cache_dir: Path,
) -> RuntimeLayer | None:
    """The layer holding ``requirements`` for ``python_version`` (built once, then reused);
    None when there is nothing to vendor."""
    if not requirements:
        return None
    key = layer_key(
        requirements=requirements,
        python_version=python_version,
        platform_version=platform_version,
    )
    target = Path(cache_dir) / key
    if not (target / ".complete").is_file():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
        try:
            if python_version == running_python():
                _copy_installed(requirements, scratch)
            else:
                _pip_install(pinned_requirements(requirements), python_version, scratch)
            (scratch / ".complete").write_text(key + "\n")
            try:
                os.rename(scratch, target)
            except OSError:
                # Another worker finished first (or a stale incomplete copy is in the way).
                if not (target / ".complete").is_file():
                    shutil.rmtree(target, ignore_errors=True)
                    os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    files = tuple(
        sorted(
            path.relative_to(target).as_posix()
            for path in target.rglob("*")
            if path.is_file() and path.name != ".complete"
        )
    )
    return RuntimeLayer(key=key, directory=target, files=files)


def _copy_installed(requirements: tuple[str, ...], out_dir: Path) -> None:
    for name in sorted(set(requirements)):
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise InvalidArtifact(
                f"The serving runtime needs {name}, which is not installed here.", field="kind"
            ) from exc
        excluded = EXCLUDED_PARTS.get(name, ())
        for file in distribution.files or []:
            relative = PurePosixPath(str(file))
            text = relative.as_posix()
            # Files outside site-packages (scripts in bin/) and compiled caches stay behind.
            if text.startswith("..") or "__pycache__" in relative.parts:
                continue
            if text.endswith(".pyc") or any(text.startswith(part) for part in excluded):
                continue
            source = Path(distribution.locate_file(file))
            if not source.is_file():
                continue
            destination = out_dir / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _pip_install(pinned: tuple[str, ...], python_version: str, out_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        "--no-deps",
        "--only-binary=:all:",
        f"--python-version={python_version}",
        f"--platform={PIP_PLATFORM}",
        "--implementation=cp",
        f"--target={out_dir}",
        *pinned,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise InvalidArtifact(
            f"Could not fetch {', '.join(pinned)} for Python {python_version}: " + " ".join(tail),
            field="image_python",
        )
    for name, parts in EXCLUDED_PARTS.items():
        if any(p.startswith(f"{name}==") for p in pinned):
            for part in parts:
                shutil.rmtree(out_dir / part, ignore_errors=True)
    shutil.rmtree(out_dir / "bin", ignore_errors=True)
