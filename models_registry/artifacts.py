"""The artifact store: datasets, trained artifacts and Triton packages, addressed by relative key.

Locally it is a directory (``var/artifacts`` by default) that plays the part S3 plays on AWS; the
same relative keys become ``s3://bucket/prefix/<key>`` there. Writes are atomic (temp file and
rename), so a crash never leaves a half-written artifact under its final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from config.errors import DomainError


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
        import boto3

        bucket, _, prefix = store.root.partition("/")
        object_key = f"{prefix}/{key}" if prefix else key
        boto3.client("s3").put_object(Bucket=bucket, Key=object_key, Body=content)
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


def read_bytes(uri: str) -> bytes:
    """Read a stored artifact by its URI."""
    if uri.startswith("s3://"):
        import boto3

        bucket, _, object_key = uri.removeprefix("s3://").partition("/")
        return boto3.client("s3").get_object(Bucket=bucket, Key=object_key)["Body"].read()
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
