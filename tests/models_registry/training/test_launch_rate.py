"""One CreateTrainingJob a second across every worker process: the shared slots (Redis, or a file
lock where there is no Redis) and two real worker processes launching against a moto server that
records when each CreateTrainingJob reached it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from models_registry.training.launch_rate import (
    FileLaunchLimiter,
    RedisLaunchLimiter,
    fleet_launch_limiter,
)

ROOT = Path(__file__).resolve().parents[3]
LAUNCHES_PER_WORKER = 2
# Two calls the server received are at least the interval apart, less clock jitter.
MIN_GAP_S = 0.98


class Clock:
    """One wall clock both limiters read (two processes on one machine see the same time)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_two_limiters_on_one_file_hand_out_slots_an_interval_apart(tmp_path):
    clock = Clock()
    path = tmp_path / "slot"
    first = FileLaunchLimiter(path, 1.0, clock=clock, sleep=lambda seconds: None)
    second = FileLaunchLimiter(path, 1.0, clock=clock, sleep=lambda seconds: None)

    waits = [first.acquire(), second.acquire(), first.acquire()]
    clock.now += 5.0  # idle for a while: the next launch goes at once
    waits.append(second.acquire())

    assert waits == [0.0, 1.0, 2.0, 0.0]


def test_a_slot_far_ahead_of_the_clock_is_stale_not_a_queue(tmp_path):
    clock = Clock()
    path = tmp_path / "slot"
    path.write_text(repr(clock.now + 86_400))  # the clock was set back a day
    assert FileLaunchLimiter(path, 1.0, clock=clock, sleep=lambda seconds: None).acquire() == 0.0


def test_without_redis_a_launch_falls_back_to_this_machines_slots(tmp_path):
    local = FileLaunchLimiter(tmp_path / "slot", 1.0, sleep=lambda seconds: None)
    # Nothing listens on port 1: the connection is refused at once.
    limiter = RedisLaunchLimiter(
        "redis://127.0.0.1:1/0", "tenantml:test", 1.0, sleep=lambda s: None, fallback=local
    )
    assert limiter.acquire() == 0.0
    assert float((tmp_path / "slot").read_text()) > time.time()  # the slot was taken locally


def test_the_fleet_limiter_is_redis_with_a_redis_broker_and_a_file_lock_without(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/11"
    shared = fleet_launch_limiter(region="eu-west-1", min_interval_s=1.0)
    assert isinstance(shared, RedisLaunchLimiter)
    assert shared.key.endswith("eu-west-1")
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    local = fleet_launch_limiter(region="eu-west-1", min_interval_s=1.0)
    assert isinstance(local, FileLaunchLimiter)
    assert local.path.is_relative_to(Path(settings.VAR_DIR))


@pytest.mark.redis
def test_two_limiters_on_one_redis_key_hand_out_slots_an_interval_apart():
    key = f"tenantml:test:launch-rate:{os.getpid()}"
    first = RedisLaunchLimiter(settings.CELERY_BROKER_URL, key, 1.0, sleep=lambda s: None)
    second = RedisLaunchLimiter(settings.CELERY_BROKER_URL, key, 1.0, sleep=lambda s: None)

    waits = [first.acquire(), second.acquire(), first.acquire()]

    # Redis's clock moves between the calls (a few ms at most), so the waits shrink by as much.
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(1.0, abs=0.05)
    assert waits[2] == pytest.approx(2.0, abs=0.05)


# --- Two worker processes against one SageMaker (moto in server mode) --------------------------

# A worker process as Celery runs one: Django set up, the platform's training client, launches.
WORKER = """
import sys

import django

django.setup()

from models_registry.training.sagemaker_client import SageMakerTrainingClient, TrainingLaunch

worker, count = sys.argv[1], int(sys.argv[2])
client = SageMakerTrainingClient(region="us-east-1")
client.client  # built before the start, so both workers begin launching together
print("ready", flush=True)
sys.stdin.readline()
for number in range(count):
    client.launch(
        TrainingLaunch.for_tenant_job(
            tenant_slug=worker,
            model_name="intents",
            job_id=number,
            role_arn="arn:aws:iam::123456789012:role/tenantml-training",
            image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu",
            train_s3_uri="s3://tenantml-test/train/",
            validation_s3_uri="s3://tenantml-test/validation/",
            output_s3_uri="s3://tenantml-test/output/",
            sourcedir_s3_uri="s3://tenantml-test/code/sourcedir.tar.gz",
        )
    )
print("done", flush=True)
"""


@pytest.fixture
def recording_sagemaker():
    """moto in server mode, recording when each CreateTrainingJob request reached it."""
    received: list[float] = []
    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET") == "SageMaker.CreateTrainingJob":
            received.append(time.monotonic())
        return moto_app(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    thread.join(timeout=10)


def launch_from_two_workers(
    endpoint: str, *, broker_url: str, var_dirs: tuple[Path, Path], label: str
) -> None:
    """Start two worker processes, let both launch at once, and wait for them to finish."""
    workers = []
    for index, var_dir in enumerate(var_dirs):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "TENANTML_VAR_DIR": str(var_dir),
            "CELERY_BROKER_URL": broker_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env.pop("AWS_PROFILE", None)
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, f"{label}-worker-{index}", str(LAUNCHES_PER_WORKER)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        workers.append(worker)
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            _out, errors = worker.communicate(timeout=60)
            assert worker.returncode == 0, errors
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def assert_spaced(received: list[float]) -> None:
    assert len(received) == 2 * LAUNCHES_PER_WORKER
    gaps = [later - earlier for earlier, later in zip(received, received[1:], strict=False)]
    assert min(gaps) >= MIN_GAP_S, f"CreateTrainingJob calls {gaps} s apart"


def test_two_workers_on_one_machine_launch_at_most_once_a_second(recording_sagemaker, tmp_path):
    endpoint, received = recording_sagemaker
    # No Redis: the two workers share this machine's slot file under their VAR_DIR.
    shared = tmp_path / "var"
    launch_from_two_workers(endpoint, broker_url="", var_dirs=(shared, shared), label="file")
    assert_spaced(received)


@pytest.mark.redis
def test_two_workers_sharing_redis_launch_at_most_once_a_second(recording_sagemaker, tmp_path):
    endpoint, received = recording_sagemaker
    # Each worker has its own VAR_DIR, as on two machines: only Redis can space their launches.
    launch_from_two_workers(
        endpoint,
        broker_url=settings.CELERY_BROKER_URL,
        var_dirs=(tmp_path / "machine-a", tmp_path / "machine-b"),
        label="redis",
    )
    assert_spaced(received)
