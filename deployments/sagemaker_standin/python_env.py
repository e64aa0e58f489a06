"""The Python that Triton's python backend runs in the stand-in: the standard library and numpy.

SageMaker's Triton image runs ``model.py`` on its own Python, which has numpy and nothing else a
platform model might import (onnxruntime, tokenizers, torch). The stand-in reproduces that with a
venv built once under its work directory: no pip, no system site-packages, and numpy (with its
bundled libraries and dist-info) copied from the numpy installed for the running Python, so no
network is needed and the version is the one the python stub was tested with (NumPy < 2: the
stub's pybind11 cannot read NumPy 2 arrays).

Triton's stub takes its ``sys.prefix`` from the first ``python3`` on PATH, so putting this venv's
``bin`` first on PATH is what makes model code see only these packages.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

__all__ = ["numpy_only_python", "site_packages_of"]

_BUILD_LOCK = threading.Lock()


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def site_packages_of(venv: Path) -> Path:
    """The site-packages directory of a venv built for the running Python."""
    return venv / "lib" / f"python{_python_tag()}" / "site-packages"


def _numpy_sources() -> list[Path]:
    """numpy's package directory, its bundled shared libraries and its dist-info."""
    distribution = importlib.metadata.distribution("numpy")
    root = Path(str(distribution.locate_file("")))
    sources = [root / "numpy"]
    if (root / "numpy.libs").is_dir():
        sources.append(root / "numpy.libs")
    dist_info_names = {
        file.parts[0] for file in distribution.files or [] if file.parts[0].endswith(".dist-info")
    }
    sources += [root / name for name in sorted(dist_info_names)]
    missing = [str(path) for path in sources if not path.exists()]
    if missing:
        raise RuntimeError(f"numpy is not installed as expected: missing {', '.join(missing)}")
    return sources


def numpy_only_python(workdir: Path) -> Path:
    """Build (once) and return a venv with only numpy, for the running Python version.

    The venv appears atomically (built in a scratch directory, then renamed), named after the
    Python and numpy versions so an upgrade builds a new one beside the old.
    """
    numpy_version = importlib.metadata.version("numpy")
    root = Path(workdir).resolve() / "python"
    target = root / f"py{_python_tag()}-numpy{numpy_version}"
    marker = target / ".complete"
    if marker.is_file():
        return target
    with _BUILD_LOCK:
        if marker.is_file():
            return target
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".venv-", dir=root))
        try:
            building = scratch / "venv"
            base_python = getattr(sys, "_base_executable", sys.executable)
            # The base interpreter, not this venv's: a venv made from inside another venv
            # still points at the base, but saying so keeps the chain short and obvious.
            subprocess.run(
                [base_python, "-m", "venv", "--without-pip", str(building)],
                check=True,
                capture_output=True,
                env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
            )
            site_packages = site_packages_of(building)
            for source in _numpy_sources():
                shutil.copytree(
                    source,
                    site_packages / source.name,
                    ignore=shutil.ignore_patterns("__pycache__", "tests"),
                    symlinks=True,
                )
            (building / ".complete").write_text(
                f"python {sys.version.split()[0]} ({sysconfig.get_platform()}), "
                f"numpy {numpy_version}\n"
            )
            if target.exists():
                shutil.rmtree(target)
            os.rename(building, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target
