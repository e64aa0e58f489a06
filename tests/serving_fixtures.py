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


def packaged_version(model, artifact_dir: Path, number: int, *, promote: bool = False):
    """A version of ``model`` built from ``artifact_dir``, packaged for Triton (and promoted)."""
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
