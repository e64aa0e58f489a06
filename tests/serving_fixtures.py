"""Session-scoped model fixtures for packaging and serving tests (registered in tests/conftest.py).

The base encoder is exported once per test session into a temporary ``var/cache/base_models``
(about 10 s on two cores); the artifacts built from it are small and shared read-only, so a test
that needs to change one copies it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

# Ten tickets for each of three intents: enough for the head to learn, small enough to embed in
# well under a second.
INTENT_TRAINING_ROWS: list[tuple[str, str]] = [
    ("Where is my refund? I returned the jacket two weeks ago.", "refund"),
    ("I want my money back for the cancelled order.", "refund"),
    ("You charged me but I never got the refund you promised.", "refund"),
    ("How long does a refund take to reach my card?", "refund"),
    ("Please refund the duplicate payment on my account.", "refund"),
    ("The refund still has not shown up on my statement.", "refund"),
    ("Can I get reimbursed for the broken item?", "refund"),
    ("I returned the shoes, when will I be refunded?", "refund"),
    ("Give me back the money for the order that never arrived.", "refund"),
    ("My refund request was approved but no money yet.", "refund"),
    ("I can't log in to my account.", "account_access"),
    ("I forgot my password and the reset email never comes.", "account_access"),
    ("My account is locked after too many login attempts.", "account_access"),
    ("How do I reset my password?", "account_access"),
    ("The two-factor code is not arriving on my phone.", "account_access"),
    ("I'm unable to sign in with my email address.", "account_access"),
    ("It says my password is wrong but I just changed it.", "account_access"),
    ("Please unlock my account, I need to sign in.", "account_access"),
    ("The login page keeps sending me back to the start.", "account_access"),
    ("I lost access to the email on my account, how do I log in?", "account_access"),
    ("Where is my package? Tracking hasn't updated in days.", "shipping"),
    ("My order still hasn't been delivered.", "shipping"),
    ("Can I change the delivery address for my order?", "shipping"),
    ("The courier left my parcel at the wrong house.", "shipping"),
    ("How long does shipping to Canada take?", "shipping"),
    ("My tracking number does not work.", "shipping"),
    ("Do you offer express delivery?", "shipping"),
    ("The box arrived damaged during shipping.", "shipping"),
    ("When will my order be shipped?", "shipping"),
    ("The delivery is late, it was due on Monday.", "shipping"),
]


@pytest.fixture(scope="session")
def base_encoder_cache_dir(tmp_path_factory) -> Path:
    """A session-wide ``<var>/cache/base_models`` directory (``<var>`` is a temporary VAR_DIR)."""
    return tmp_path_factory.mktemp("var") / "cache" / "base_models"


@pytest.fixture(scope="session")
def base_encoder_files(base_encoder_cache_dir):
    """The int8 base encoder, exported once per test session."""
    from models_registry.base_model import base_encoder

    return base_encoder(quantized=True, cache_dir=base_encoder_cache_dir)


@pytest.fixture(scope="session")
def intent_artifact(tmp_path_factory, base_encoder_files) -> Path:
    """A trained intent-classifier artifact directory (30 tickets, 3 labels)."""
    from models_registry.kinds import get_kind

    out_dir = tmp_path_factory.mktemp("intent-artifact")
    get_kind("intent-classifier").build_artifact(
        texts=[text for text, _ in INTENT_TRAINING_ROWS],
        labels=[label for _, label in INTENT_TRAINING_ROWS],
        out_dir=out_dir,
        base=base_encoder_files,
    )
    return out_dir


@pytest.fixture(scope="session")
def embedding_artifact(tmp_path_factory, base_encoder_files) -> Path:
    """An embedding artifact directory (the untuned int8 base encoder)."""
    from models_registry.kinds import get_kind

    out_dir = tmp_path_factory.mktemp("embedding-artifact")
    get_kind("embedding").build_artifact(out_dir=out_dir, base=base_encoder_files)
    return out_dir


# Packages this session built, by what they are built from: packaging is byte-for-byte
# deterministic, so the same artifact under the same Triton name gives the same tarball, and
# the serving tests (which do not test packaging) take a copy instead of building it again.
_BUILT_PACKAGES: dict[tuple, tuple[Path, object]] = {}


KEPT_PACKAGES = 24
_PACKAGE_CACHE: list[Path] = []


def _package_cache() -> Path:
    """This session's directory of kept packages, removed when the session ends."""
    if not _PACKAGE_CACHE:
        import atexit
        import shutil
        import tempfile

        _PACKAGE_CACHE.append(Path(tempfile.mkdtemp(prefix="tenantml-test-packages-")))
        atexit.register(shutil.rmtree, _PACKAGE_CACHE[0], ignore_errors=True)
    return _PACKAGE_CACHE[0]


def _package_key(kind: str, artifact_dir: Path, triton_model_name: str, device: str) -> tuple:
    from models_registry.kinds import get_kind

    files = tuple(
        (str(path.relative_to(artifact_dir)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(artifact_dir.rglob("*"))
        if path.is_file()
    )
    return (repr(get_kind(kind)), str(artifact_dir.resolve()), files, triton_model_name, device)


def _reusing_packages(source_dir: Path):
    """``build_triton_package`` for artifacts of ``source_dir``, reusing this session's builds."""
    import dataclasses
    import shutil
    import tempfile

    from models_registry.services import packaging

    build = packaging.build_triton_package

    def build_or_copy(*, kind, artifact_dir, triton_model_name, out_path, **options):
        device = options.get("device", "cpu")
        reusable = Path(source_dir).is_dir() and not (
            options.get("runtime_layer") is not None or options.get("gpu_encoder") is not None
        )
        if not reusable:
            return build(
                kind=kind,
                artifact_dir=artifact_dir,
                triton_model_name=triton_model_name,
                out_path=out_path,
                **options,
            )
        key = _package_key(kind, Path(source_dir), triton_model_name, device)
        if key in _BUILT_PACKAGES:
            kept, info = _BUILT_PACKAGES.pop(key)
            _BUILT_PACKAGES[key] = (kept, info)  # most recently used last
            shutil.copyfile(kept, out_path)
            return dataclasses.replace(info, path=Path(out_path))
        info = build(
            kind=kind,
            artifact_dir=artifact_dir,
            triton_model_name=triton_model_name,
            out_path=out_path,
            **options,
        )
        kept = Path(tempfile.mkdtemp(prefix="tenantml-test-package-", dir=_package_cache()))
        kept = kept / "model.tar.gz"
        shutil.copyfile(info.path, kept)
        _BUILT_PACKAGES[key] = (kept, info)
        while len(_BUILT_PACKAGES) > KEPT_PACKAGES:  # a few dozen MB each
            oldest = next(iter(_BUILT_PACKAGES))
            shutil.rmtree(_BUILT_PACKAGES.pop(oldest)[0].parent, ignore_errors=True)
        return info

    return build_or_copy


def packaged_version(model, artifact_dir: Path, number: int, *, promote: bool = False):
    """A version of ``model`` built from ``artifact_dir``, packaged for Triton (and promoted);
    a package this session already built from the same artifact and name is copied."""
    from unittest import mock

    from models_registry.models import ModelVersion
    from models_registry.services.packaging import package_version
    from models_registry.services.promotion import promote_version
    from tests.factories import ModelVersionFactory

    version = ModelVersionFactory(
        model=model,
        number=number,
        status=ModelVersion.Status.REGISTERED,
        artifact_uri=str(artifact_dir),
        host_memory_mb=None,
        metrics={"macro_f1": 0.9},
    )
    with mock.patch(
        "models_registry.services.packaging.build_triton_package",
        _reusing_packages(Path(artifact_dir)),
    ):
        version = package_version(version=version, actor="test")
    if promote:
        version = promote_version(version=version, actor="test")
        model.refresh_from_db()
    return version


@pytest.fixture
def local_rollouts(settings, tmp_path):
    """Rollouts run inline, as the worker runs them; Triton instances get this test's working
    directories, and every one started is stopped after the test."""
    from config.celery import app
    from deployments.backends.local import runtime
    from deployments.models import Instance

    settings.VAR_DIR = tmp_path / "var"
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
    for instance in Instance.objects.exclude(status=Instance.Status.STOPPED).exclude(pid=None):
        # The test is over: its Triton group is killed rather than given seconds to unload its
        # models (the graceful stop has tests of its own); the stop below still sweeps the
        # group's leftovers and shared memory and records the instance stopped.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(instance.pid, signal.SIGKILL)
        runtime.stop_local_instance(instance=instance, actor="test", reason="test finished")


@pytest.fixture(scope="module")
def proxy_url():
    """The platform's ASGI application served by uvicorn in this process (it shares the test
    database), as ``uvicorn config.asgi:application`` serves it in production."""
    import socket
    import threading
    import time

    import uvicorn

    from config.asgi import application

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
