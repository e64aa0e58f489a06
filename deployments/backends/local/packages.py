"""Verified model packages unpacked into the directory layout a multi-model load expects, and
which device's package an instance loads.

A ``model.tar.gz`` is checked against its sha256, extracted within bounded size and member
counts (no links, absolute paths or traversal) and kept by digest, shared by every instance.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from deployments.exceptions import (
    InvalidPackage,
)
from models_registry import artifacts
from models_registry.exceptions import PackageChecksumMismatch

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
CPU, GPU = "cpu", "gpu"

# --- Model packages --------------------------------------------------------------------------


def load_device(*, instance_gpu_count: int, gpus_seen: bool) -> str:
    """The device an instance's packages are rendered for: the GPU where its type has GPUs and
    its Triton sees one (its metrics list GPUs); else the CPU. Triton refuses a ``KIND_GPU``
    model on a machine without GPUs, so there a GPU type falls back to the CPU package."""
    return GPU if instance_gpu_count > 0 and gpus_seen else CPU


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_model_dir(*, package_path: Path, expected_sha256: str, models_root: Path) -> Path:
    """Verify and unpack a ``model.tar.gz`` once; return the MME ``url`` directory.

    The tarball's sha256 is checked before anything is extracted (PackageChecksumMismatch names
    both digests); members with absolute paths, ``..``, links leading outside or device files
    are refused (InvalidPackage), and so is a package over ``PACKAGE_MAX_MEMBERS`` members or
    ``PACKAGE_MAX_UNPACKED_BYTES`` unpacked (a decompression bomb). The package is unpacked
    into a temporary directory and renamed to ``models_root/<sha256>/``, so a directory under
    that name is always complete and a second call returns it without reading the tarball
    again. The returned directory is the one holding ``<triton_model>/config.pbtxt``.
    """
    expected = expected_sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise InvalidPackage(
            f"{expected_sha256!r} is not a sha256 hex digest; the version's recorded checksum "
            "is missing or damaged."
        )
    models_root = Path(models_root).resolve()
    target = models_root / expected
    if target.is_dir():
        return _repository_dir(target)
    package_path = Path(package_path)
    try:
        actual = sha256_file(package_path)
    except FileNotFoundError as exc:
        raise InvalidPackage(f"The model package {package_path} does not exist.") from exc
    if actual != expected:
        raise PackageChecksumMismatch(
            f"Triton package {package_path} has sha256 {actual}, but {expected} was recorded "
            "when it was built; it is corrupt or was replaced, so it was not unpacked. Rebuild "
            "the package for this version."
        )
    models_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{expected[:16]}-", dir=models_root))
    try:
        unpacked = scratch / "package"
        unpacked.mkdir()
        _extract_safely(package_path, unpacked)
        repository = _repository_dir(unpacked)
        relative = repository.relative_to(unpacked)
        try:
            os.rename(unpacked, target)
        except OSError as exc:
            # A concurrent call unpacked the same digest first; the contents are identical.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        return target / relative
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _extract_safely(package_path: Path, destination: Path) -> None:
    # Our own member checks first (their messages name the escape precisely), then the bounded
    # extraction: member count and unpacked size within PACKAGE_MAX_MEMBERS and
    # PACKAGE_MAX_UNPACKED_BYTES, with the data filter as a second line of defence.
    artifacts.extract_tarball(
        package_path,
        destination,
        error=InvalidPackage,
        label="Model package",
        check_member=lambda member: _check_member(member, package_path),
    )


def _check_member(member: tarfile.TarInfo, package_path: Path) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or ".." in parts:
        raise InvalidPackage(
            f"Model package {package_path} is unsafe: member {name!r} would be written outside "
            "the package directory; it was refused before anything was unpacked."
        )
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise InvalidPackage(
            f"Model package {package_path} is unsafe: member {name!r} is a device, FIFO or "
            "other special file."
        )
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / link).parts if not link.is_absolute() else ["/"]:
            if part == "/":
                depth = -1
                break
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                break
        if depth < 0:
            raise InvalidPackage(
                f"Model package {package_path} is unsafe: link {name!r} -> "
                f"{member.linkname!r} points outside the package."
            )


def _repository_dir(root: Path) -> Path:
    """The directory under ``root`` whose subdirectories hold ``config.pbtxt``."""
    candidates = [root]
    children = [c for c in root.iterdir() if c.is_dir()] if root.is_dir() else []
    if len(children) == 1:
        # Also accept a package wrapped in one extra top-level directory.
        candidates.append(children[0])
    for candidate in candidates:
        if any(
            (model / "config.pbtxt").is_file() for model in candidate.iterdir() if model.is_dir()
        ):
            return candidate
    raise InvalidPackage(
        f"The model package unpacked in {root} holds no <model>/config.pbtxt; a Triton package "
        "must contain <triton_model_name>/config.pbtxt and <triton_model_name>/1/model.py."
    )
