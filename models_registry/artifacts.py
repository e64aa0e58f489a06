"""The artifact store: datasets, trained artifacts and Triton packages, addressed by relative key.

Locally it is a directory (``var/artifacts`` by default) that plays the part S3 plays on AWS; the
same relative keys become ``s3://bucket/prefix/<key>`` there. Writes are atomic (temp file and
rename), so a crash never leaves a half-written artifact under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from config.errors import DomainError
from models_registry.exceptions import InvalidArtifact

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    uri: str
    sha256: str
    size_bytes: int


def _checked_key(key: str) -> str:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise DomainError(f"Artifact key {key!r} must be a relative path without '..'.")
    return str(path)


def local_root() -> Path:
    store = settings.ARTIFACT_STORE
    if store.kind != "local":
        raise DomainError("This operation needs a local artifact store (ARTIFACT_STORE).")
    return Path(store.root)


def uri_for(key: str) -> str:
    """The store URI of a relative key (a path locally, ``s3://...`` on AWS)."""
    key = _checked_key(key)
    store = settings.ARTIFACT_STORE
    if store.kind == "local":
        return str(Path(store.root) / key)
    return f"s3://{store.root}/{key}"


def put_bytes(key: str, content: bytes) -> StoredArtifact:
    """Store ``content`` under ``key`` atomically and return its digest and size."""
    key = _checked_key(key)
    digest = hashlib.sha256(content).hexdigest()
    store = settings.ARTIFACT_STORE
    if store.kind == "s3":
        from config.aws import client as aws_client

        bucket, _, prefix = store.root.partition("/")
        object_key = f"{prefix}/{key}" if prefix else key
        aws_client("s3").put_object(Bucket=bucket, Key=object_key, Body=content)
    else:
        target = Path(store.root) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return StoredArtifact(key=key, uri=uri_for(key), sha256=digest, size_bytes=len(content))


def list_keys(prefix: str) -> list[str]:
    """The relative keys stored under ``prefix`` (a folder), sorted; none when it is absent."""
    prefix = _checked_key(prefix).rstrip("/") + "/"
    store = settings.ARTIFACT_STORE
    if store.kind == "s3":
        from config.aws import client as aws_client

        bucket, _, root = store.root.partition("/")
        base = f"{root}/" if root else ""
        paginator = aws_client("s3").get_paginator("list_objects_v2")
        return sorted(
            item["Key"][len(base) :]
            for page in paginator.paginate(Bucket=bucket, Prefix=base + prefix)
            for item in page.get("Contents", [])
        )
    folder = Path(store.root) / prefix
    if not folder.is_dir():
        return []
    return sorted(
        path.relative_to(store.root).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not path.name.startswith(".tmp-")
    )


def delete_keys(keys: list[str]) -> int:
    """Delete stored artifacts by relative key (missing ones are skipped); returns how many
    keys were asked for. Local folders left empty are removed."""
    keys = [_checked_key(key) for key in keys]
    store = settings.ARTIFACT_STORE
    if store.kind == "s3":
        from config.aws import client as aws_client

        bucket, _, root = store.root.partition("/")
        client = aws_client("s3")
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            objects = [
                {"Key": f"{root}/{key}" if root else key} for key in keys[start : start + 1000]
            ]
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        return len(keys)
    folders = set()
    for key in keys:
        path = Path(store.root) / key
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: another writer's file is there
            folder.rmdir()
    return len(keys)


def read_bytes(uri: str) -> bytes:
    """Read a stored artifact by its URI."""
    if uri.startswith("s3://"):
        from config.aws import client as aws_client

        bucket, _, object_key = uri.removeprefix("s3://").partition("/")
        return aws_client("s3").get_object(Bucket=bucket, Key=object_key)["Body"].read()
    return Path(uri).read_bytes()


def sha256_of(uri: str) -> str:
    """SHA-256 of a stored artifact, streamed for local files."""
    if uri.startswith("s3://"):
        return hashlib.sha256(read_bytes(uri)).hexdigest()
    digest = hashlib.sha256()
    with open(uri, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def put_file(key: str, source: Path) -> StoredArtifact:
    """Store a file under ``key`` atomically, streaming it (packages are tens of MB)."""
    key = _checked_key(key)
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    store = settings.ARTIFACT_STORE
    if store.kind == "s3":
        from config.aws import client as aws_client

        bucket, _, prefix = store.root.partition("/")
        object_key = f"{prefix}/{key}" if prefix else key
        aws_client("s3").upload_file(str(source), bucket, object_key)
    else:
        target = Path(store.root) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return StoredArtifact(key=key, uri=uri_for(key), sha256=digest.hexdigest(), size_bytes=size)


def put_directory(key: str, source: Path) -> str:
    """Store every file of a directory under ``key/``; returns the directory's URI.

    Locally the directory is built beside its final place and renamed into it, so readers see
    the whole artifact or none of it.
    """
    key = _checked_key(key)
    store = settings.ARTIFACT_STORE
    files = sorted(path for path in Path(source).rglob("*") if path.is_file())
    if store.kind == "s3":
        for path in files:
            put_file(f"{key}/{path.relative_to(source).as_posix()}", path)
        return uri_for(key)
    target = Path(store.root) / key
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        for path in files:
            destination = staging / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return uri_for(key)


def local_copy(uri: str, scratch: Path) -> Path:
    """A local directory holding the artifact at ``uri``: a directory, or a ``model.tar.gz`` as
    SageMaker training writes it (downloaded for S3, unpacked safely)."""
    if uri.endswith(".tar.gz"):
        archive = scratch / "artifact.tar.gz"
        if uri.startswith("s3://"):
            archive.write_bytes(read_bytes(uri))
        else:
            archive = Path(uri)
        target = scratch / "artifact"
        target.mkdir(parents=True, exist_ok=True)
        try:
            extract_tarball(archive, target, error=InvalidArtifact, label="Training artifact")
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target
    if not uri.startswith("s3://"):
        return Path(uri)
    from config.aws import client as aws_client

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = aws_client("s3")
    target = scratch / "artifact"
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix.rstrip("/")) + 1 :]
            destination = target / _checked_key(relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(destination))
    return target


def extract_tarball(
    archive: Path,
    destination: Path,
    *,
    error: type[DomainError],
    label: str,
    check_member: Callable[[tarfile.TarInfo], None] | None = None,
    max_bytes: int | None = None,
    max_members: int | None = None,
) -> None:
    """Unpack a (compressed) tarball into ``destination``, refusing anything unsafe or too big.

    Every header is read and checked first (``check_member``, then member kinds, the member
    count and the declared sizes against ``PACKAGE_MAX_MEMBERS`` / ``PACKAGE_MAX_UNPACKED_BYTES``)
    so a decompression bomb is refused before a byte is written; while writing, the bytes really
    written are counted against the same limit. Failures raise ``error`` naming ``label``; the
    caller removes ``destination``, which may hold part of the archive then.
    """
    if max_bytes is None:
        max_bytes = settings.TENANTML_PACKAGE_MAX_UNPACKED_BYTES
    if max_members is None:
        max_members = settings.TENANTML_PACKAGE_MAX_MEMBERS
    name = f"{label} {Path(archive).name}"
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = _checked_headers(
                tar,
                name=name,
                error=error,
                check_member=check_member,
                max_bytes=max_bytes,
                max_members=max_members,
            )
            written = 0
            for member in members:
                # The data filter refuses paths and links that leave ``destination``, judged
                # against what is already on disk (an earlier member's symlink included).
                safe = tarfile.data_filter(member, str(destination))
                if member.isfile():
                    written = _write_file(
                        tar,
                        member,
                        destination / safe.name,
                        mode=safe.mode,
                        written=written,
                        max_bytes=max_bytes,
                        name=name,
                        error=error,
                    )
                else:
                    tar.extract(member, destination, filter="data")
    except tarfile.FilterError as exc:
        raise error(f"{name} is unsafe: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise error(f"{name} is not a readable tarball: {exc}") from exc


def _checked_headers(
    tar: tarfile.TarFile,
    *,
    name: str,
    error: type[DomainError],
    check_member: Callable[[tarfile.TarInfo], None] | None,
    max_bytes: int,
    max_members: int,
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    sizes: dict[str, int] = {}
    declared = 0
    # Iterating reads one header at a time, so a million-member archive stops at the limit
    # instead of being listed in memory first.
    for member in tar:
        if len(members) >= max_members:
            raise error(
                f"{name} has more than {max_members:,} members (PACKAGE_MAX_MEMBERS); it was "
                "refused before anything was unpacked."
            )
        if check_member is not None:
            check_member(member)
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise error(
                f"{name} is unsafe: member {member.name!r} is a device, FIFO or other special file."
            )
        # A hard link may be copied where the file system has none: count it at its target's size.
        size = member.size if member.isfile() else 0
        if member.islnk():
            size = sizes.get(member.linkname, 0)
        sizes[member.name] = size
        declared += size
        if declared > max_bytes:
            raise error(
                f"{name} would unpack to more than {max_bytes:,} bytes "
                f"(PACKAGE_MAX_UNPACKED_BYTES; member {member.name!r} declares {member.size:,}); "
                "it was refused before anything was unpacked."
            )
        members.append(member)
    return members


def _write_file(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: Path,
    *,
    mode: int | None,
    written: int,
    max_bytes: int,
    name: str,
    error: type[DomainError],
) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()  # never write through a link an earlier member made
    source = tar.extractfile(member)
    member_written = 0
    with open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            member_written += len(chunk)
            written += len(chunk)
            if written > max_bytes:
                raise error(
                    f"{name} unpacked to more than {max_bytes:,} bytes "
                    f"(PACKAGE_MAX_UNPACKED_BYTES) while writing {member.name!r}; it was refused."
                )
            out.write(chunk)
    if member_written != member.size:
        raise error(
            f"{name} is truncated: member {member.name!r} holds {member_written:,} of its "
            f"{member.size:,} bytes."
        )
    if mode is not None:
        os.chmod(target, mode)
    return written
