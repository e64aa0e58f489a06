"""Hostile Triton packages: every unsafe or oversized model.tar.gz is refused as an invalid
package (422) with the reason, and nothing is left unpacked, inside or outside the models root."""

from __future__ import annotations

import io
import tarfile
import time
import zlib
from pathlib import Path

import pytest

from deployments.backends.local.packages import prepare_model_dir
from deployments.exceptions import InvalidPackage
from models_registry import artifacts
from models_registry.exceptions import InvalidArtifact
from tests.triton_support import build_raw_package

CONFIG = ("m/config.pbtxt", b'backend: "python"')
GIB = 1024**3


def _prepare(package, tmp_path: Path) -> Path:
    return prepare_model_dir(
        package_path=package.path, expected_sha256=package.sha256, models_root=tmp_path / "models"
    )


def _nothing_left(tmp_path: Path, package) -> None:
    models = tmp_path / "models"
    assert not (models / package.sha256).exists()
    assert not models.exists() or not list(models.iterdir()), "a half-unpacked package was left"


def _info(name: str, kind: bytes, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (("../escaped.txt", b"x"), "outside"),
        (("m/1/../../../escaped.txt", b"x"), "outside"),
        (("/tmp/absolute-escape.txt", b"x"), "outside"),
        (_info("m/1/etc", tarfile.SYMTYPE, linkname="/etc"), "points outside"),
        (_info("m/1/up", tarfile.SYMTYPE, linkname="../../../.."), "points outside"),
        (_info("m/1/passwd", tarfile.LNKTYPE, linkname="/etc/passwd"), "points outside"),
        (_info("m/1/up", tarfile.LNKTYPE, linkname="../../escaped.txt"), "points outside"),
        (_info("m/1/tty", tarfile.CHRTYPE, devmajor=5, devminor=0), "device"),
        (_info("m/1/disk", tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
        (_info("m/1/pipe", tarfile.FIFOTYPE), "FIFO"),
    ],
    ids=[
        "parent",
        "nested-parent",
        "absolute",
        "symlink-absolute",
        "symlink-parent",
        "hardlink-absolute",
        "hardlink-parent",
        "char-device",
        "block-device",
        "fifo",
    ],
)
def test_unsafe_members_are_refused_before_anything_is_unpacked(tmp_path, member, reason):
    package = build_raw_package(tmp_path / "evil.tar.gz", [CONFIG, member])

    with pytest.raises(InvalidPackage, match=reason) as caught:
        _prepare(package, tmp_path)

    assert caught.value.status_code == 422
    assert not (tmp_path / "escaped.txt").exists()
    _nothing_left(tmp_path, package)


def test_a_symlink_then_a_file_written_through_it_cannot_escape(tmp_path):
    # The link itself stays inside; the file behind it would land outside if followed.
    link = _info("m/1/dir", tarfile.SYMTYPE, linkname=".")
    package = build_raw_package(
        tmp_path / "chain.tar.gz", [CONFIG, link, ("m/1/dir/../../../escaped.txt", b"x")]
    )

    with pytest.raises(InvalidPackage):
        _prepare(package, tmp_path)

    assert not (tmp_path / "escaped.txt").exists()
    _nothing_left(tmp_path, package)


def _gzip_tar_of_zeros(path: Path, *, member_bytes: int) -> Path:
    """A .tar.gz holding one member of ``member_bytes`` zeros, streamed (never in memory)."""
    header = tarfile.TarInfo("m/1/weights.bin")
    header.size = member_bytes
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    zeros = bytes(8 << 20)
    with open(path, "wb") as out:
        out.write(compressor.compress(CONFIG_TAR))
        out.write(compressor.compress(header.tobuf(format=tarfile.GNU_FORMAT)))
        remaining = member_bytes
        while remaining:
            chunk = zeros[: min(len(zeros), remaining)]
            out.write(compressor.compress(chunk))
            remaining -= len(chunk)
        padding = (512 - member_bytes % 512) % 512
        out.write(compressor.compress(bytes(padding + 1024)))  # padding and end-of-archive
        out.write(compressor.flush())
    return path


def _config_tar() -> bytes:
    buffer = io.BytesIO()
    info = tarfile.TarInfo(CONFIG[0])
    info.size = len(CONFIG[1])
    buffer.write(info.tobuf(format=tarfile.GNU_FORMAT))
    buffer.write(CONFIG[1] + bytes(512 - len(CONFIG[1])))
    return buffer.getvalue()


CONFIG_TAR = _config_tar()


def _package(path: Path):
    import hashlib

    from tests.triton_support import Package

    return Package(
        path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), triton_model_name="m"
    )


def test_a_small_archive_expanding_to_gigabytes_is_refused_from_its_headers(tmp_path):
    # 4 GiB and a bit of zeros: a few MB compressed, over the default 4 GiB limit.
    package = _package(_gzip_tar_of_zeros(tmp_path / "bomb.tar.gz", member_bytes=4 * GIB + 512))
    assert package.path.stat().st_size < 8 * 1024 * 1024

    started = time.monotonic()
    with pytest.raises(InvalidPackage, match="PACKAGE_MAX_UNPACKED_BYTES") as caught:
        _prepare(package, tmp_path)

    assert caught.value.status_code == 422
    assert "before anything was unpacked" in caught.value.message
    assert time.monotonic() - started < 10, "the bomb was decompressed instead of refused"
    _nothing_left(tmp_path, package)


def test_the_unpacked_size_limit_is_configurable_and_counts_every_member(tmp_path, settings):
    settings.TENANTML_PACKAGE_MAX_UNPACKED_BYTES = 1024 * 1024
    members = [CONFIG] + [(f"m/1/part-{n}.bin", bytes(300 * 1024)) for n in range(4)]
    package = build_raw_package(tmp_path / "parts.tar.gz", members)

    with pytest.raises(InvalidPackage, match="more than 1,048,576 bytes"):
        _prepare(package, tmp_path)

    _nothing_left(tmp_path, package)


def test_hard_links_count_at_their_targets_size(tmp_path, settings):
    # A hard link is copied where the file system has none: 20 links to 100 KB are 2 MB.
    settings.TENANTML_PACKAGE_MAX_UNPACKED_BYTES = 1024 * 1024
    links = [_info(f"m/1/copy-{n}", tarfile.LNKTYPE, linkname="m/1/data") for n in range(20)]
    package = build_raw_package(
        tmp_path / "links.tar.gz", [CONFIG, ("m/1/data", bytes(100 * 1024)), *links]
    )

    with pytest.raises(InvalidPackage, match="PACKAGE_MAX_UNPACKED_BYTES"):
        _prepare(package, tmp_path)

    _nothing_left(tmp_path, package)


def test_an_archive_with_a_huge_member_count_is_refused_at_the_limit(tmp_path):
    # 10,001 empty files compress to a few kilobytes; the default limit is 10,000 members.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(CONFIG[0])
        info.size = len(CONFIG[1])
        tar.addfile(info, io.BytesIO(CONFIG[1]))
        for n in range(10_000):
            tar.addfile(tarfile.TarInfo(f"m/1/empty-{n}"))
    path = tmp_path / "many.tar.gz"
    path.write_bytes(buffer.getvalue())
    package = _package(path)

    with pytest.raises(InvalidPackage, match="more than 10,000 members") as caught:
        _prepare(package, tmp_path)

    assert "PACKAGE_MAX_MEMBERS" in caught.value.message
    _nothing_left(tmp_path, package)


def test_a_package_within_the_limits_still_unpacks(tmp_path, settings):
    settings.TENANTML_PACKAGE_MAX_MEMBERS = 4
    package = build_raw_package(
        tmp_path / "ok.tar.gz", [CONFIG, ("m/1/model.py", b"print('hi')\n")]
    )

    repository = _prepare(package, tmp_path)

    assert (repository / "m" / "1" / "model.py").read_bytes() == b"print('hi')\n"


def test_a_truncated_or_garbage_package_is_invalid_not_a_crash(tmp_path):
    model_py = bytes(range(256)) * 64  # barely compressible, so the cut lands in the data
    good = build_raw_package(tmp_path / "ok.tar.gz", [CONFIG, ("m/1/model.py", model_py)])
    truncated = tmp_path / "truncated.tar.gz"
    content = good.path.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    png = tmp_path / "image.tar.gz"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))

    for path in (truncated, png):
        package = _package(path)
        with pytest.raises(InvalidPackage):
            _prepare(package, tmp_path)
        _nothing_left(tmp_path, package)


def test_a_training_artifact_bomb_is_refused_and_removed(tmp_path, settings):
    settings.TENANTML_PACKAGE_MAX_UNPACKED_BYTES = 64 * 1024
    package = build_raw_package(tmp_path / "model.tar.gz", [("weights.bin", bytes(1024 * 1024))])
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    with pytest.raises(InvalidArtifact, match="PACKAGE_MAX_UNPACKED_BYTES"):
        artifacts.local_copy(str(package.path), scratch)

    assert not (scratch / "artifact").exists()


def test_a_training_artifact_with_a_link_outside_is_refused(tmp_path):
    link = _info("weights", tarfile.SYMTYPE, linkname="/etc/passwd")
    package = build_raw_package(tmp_path / "model.tar.gz", [link])
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    with pytest.raises(InvalidArtifact, match="unsafe"):
        artifacts.local_copy(str(package.path), scratch)

    assert not (scratch / "artifact").exists()
