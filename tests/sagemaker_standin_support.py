"""The SageMaker stand-in for tests: one ``manage.py sagemaker_standin`` per session.

The root conftest registers this module as a plugin. ``sagemaker_standin`` starts the command
with a temporary work directory on first use and stops it at the end of the session, checking
that no Triton process or shared memory region it started is left. ``clean_sagemaker_standin``
gives a test an empty stand-in, points boto3 at it through the standard ``AWS_ENDPOINT_URL_*``
variables for that test only (moto's in-process tests share the session) and empties it again
afterwards. ``resources()`` lists everything on it, so a test can assert that
nothing is left except what the database says is live. ``set_clock`` shortens the period its
CloudWatch metrics and autoscaling run on (one CloudWatch minute, 60 s by default) for one test.
Training jobs run for real with short delays here (``TRAINING_FLAGS``); ``configure_training``
changes them for one test, ``training_jobs()`` shows the jobs, their hosts and logs, and no
training process may outlive a test or the session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest

from deployments.backends.local.process import shm_prefix_for, tritonserver_path

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 120.0
# Training jobs start at once and a stop kills soon: the session's jobs are seconds long.
TRAINING_FLAGS = ("--training-provisioning-s", "0.2", "--training-stop-grace-s", "2")
PROCESS_EXIT_TIMEOUT_S = 5.0
SKIP_REASON = (
    "the SageMaker stand-in runs real Triton, which ships in nvidia-pytriton; it is not installed "
    "for this Python (pip install 'nvidia-pytriton>=0.7,<0.8')."
)
_VARIABLES = (
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING",
    "AWS_ENDPOINT_URL_CLOUDWATCH",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "SAGEMAKER_IMAGE_PYTHON",
)


@dataclass
class SageMakerStandin:
    """A running stand-in: its base URL, process and the calls tests make on it."""

    base_url: str
    process: subprocess.Popen
    workdir: Path
    region: str = REGION
    _seen_tritons: dict[int, tuple[Path, int]] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """A plain boto3 client; it finds the stand-in through the environment alone."""
        return boto3.client(service, region_name=self.region)

    def _admin(self, path: str, *, method: str = "GET", body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(f"{self.base_url}{path}", method=method, data=data)
        with urllib.request.urlopen(request, timeout=STOP_TIMEOUT_S) as answer:
            return json.loads(answer.read() or b"null")

    def reset(self) -> None:
        """Delete everything: stop every Triton, forget every AWS resource, default clock."""
        self._admin("/_standin/reset", method="POST")

    def set_clock(
        self, *, period_s: float | None = None, scale_in_periods: int | None = None
    ) -> dict[str, Any]:
        """Shorten the scaling period (one CloudWatch minute, 60 s by default) and the periods
        below target before a scale in (15) until the next reset; the clock now."""
        body: dict[str, Any] = {}
        if period_s is not None:
            body["period_s"] = period_s
        if scale_in_periods is not None:
            body["scale_in_periods"] = scale_in_periods
        return self._admin("/_standin/clock", method="POST", body=body)

    def processes(self) -> list[dict[str, Any]]:
        """The Tritons the stand-in says it runs: endpoint, instance, component, pid."""
        return self._admin("/_standin/processes")

    def training_jobs(self) -> dict[str, Any]:
        """The stand-in's training jobs with their hosts (pid, running, log tail) and settings."""
        return self._admin("/_standin/training")

    def configure_training(self, **changes: Any) -> dict[str, Any]:
        """Change how training jobs run (``provisioning_s``, ``stop_grace_s``,
        ``launches_per_s``, ``environment``) until the next reset; the settings now."""
        return self._admin("/_standin/training/settings", method="POST", body=changes)

    def training_processes(self) -> list[psutil.Process]:
        """Live processes working in the stand-in's training directories: the hosts' scripts
        and anything they started, orphans included."""
        root = str((self.workdir / "state" / "training").resolve())
        found = []
        for process in psutil.process_iter(["cwd", "status"]):
            cwd = process.info.get("cwd") or ""
            if cwd.startswith(root) and process.info.get("status") != psutil.STATUS_ZOMBIE:
                found.append(process)
        return found

    def assert_no_training_processes(self) -> None:
        """Every training process is gone (given a moment for SIGKILL to land)."""
        deadline = time.monotonic() + PROCESS_EXIT_TIMEOUT_S
        while (left := self.training_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == [], f"training processes left running: {[p.pid for p in left]}"

    def tritons(self) -> list[psutil.Process]:
        """The ``tritonserver`` processes really running under the stand-in."""
        found = []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                if child.name() != "tritonserver" or child.status() == psutil.STATUS_ZOMBIE:
                    continue
                argv = child.cmdline()
                port = next(
                    int(arg.split("=", 1)[1]) for arg in argv if arg.startswith("--sagemaker-port=")
                )
                self._seen_tritons[child.pid] = (Path(child.cwd()), port)
            except (psutil.NoSuchProcess, psutil.AccessDenied, StopIteration):
                continue
            found.append(child)
        return found

    def resources(self) -> dict[str, list[str]]:
        """Every resource on the stand-in, by kind, as sorted names (S3 as ``bucket/key``)."""
        sagemaker = self.client("sagemaker")

        def pages(operation: str, key: str, name: str, **params: Any) -> list[str]:
            names, token = [], None
            while True:
                page = getattr(sagemaker, operation)(
                    **params, **({"NextToken": token} if token else {})
                )
                names += [entry[name] for entry in page.get(key) or []]
                token = page.get("NextToken")
                if not token:
                    return sorted(names)

        s3 = self.client("s3")
        objects = []
        for bucket in s3.list_buckets().get("Buckets") or []:
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket["Name"]):
                objects += [
                    f"{bucket['Name']}/{entry['Key']}" for entry in page.get("Contents") or []
                ]
        autoscaling = self.client("application-autoscaling")
        targets = [
            f"{target['ResourceId']}|{target['ScalableDimension']}"
            for target in autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker").get(
                "ScalableTargets"
            )
            or []
        ]
        alarms = [
            alarm["AlarmName"]
            for alarm in self.client("cloudwatch").describe_alarms().get("MetricAlarms") or []
        ]
        return {
            "models": pages("list_models", "Models", "ModelName"),
            "endpoint_configs": pages(
                "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName"
            ),
            "endpoints": pages("list_endpoints", "Endpoints", "EndpointName"),
            "inference_components": pages(
                "list_inference_components", "InferenceComponents", "InferenceComponentName"
            ),
            "s3_objects": sorted(objects),
            "scalable_targets": sorted(targets),
            "alarms": sorted(alarms),
        }

    def leftover_shared_memory(self) -> list[str]:
        """/dev/shm regions of Tritons this stand-in ran that are still there."""
        left = []
        for workdir, port in self._seen_tritons.values():
            prefix = shm_prefix_for(workdir, port)
            left += [path.name for path in Path("/dev/shm").glob(f"{prefix}*")]
        return left


def _start(workdir: Path) -> SageMakerStandin:
    ready_file = workdir / "ready"
    log = open(workdir / "standin.log", "ab")  # noqa: SIM115 - the child writes it for its life
    env = {key: value for key, value in os.environ.items() if key not in _VARIABLES}
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "sagemaker_standin",
            "--port",
            "0",
            "--workdir",
            str(workdir / "state"),
            "--ready-file",
            str(ready_file),
            "--region",
            REGION,
            *TRAINING_FLAGS,
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready_file.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (workdir / "standin.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"The SageMaker stand-in did not start:\n{tail}")
        time.sleep(0.05)
    return SageMakerStandin(
        base_url=ready_file.read_text().strip(), process=process, workdir=workdir
    )


def _stop(standin: SageMakerStandin) -> None:
    standin.tritons()  # remember every server, to check its shared memory afterwards
    running = {process.pid for process in standin.tritons()}
    standin.process.send_signal(signal.SIGTERM)
    try:
        standin.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        standin.process.kill()
        standin.process.wait(timeout=10)
        raise AssertionError("The SageMaker stand-in ignored SIGTERM") from None
    alive = [pid for pid in running if psutil.pid_exists(pid) and _is_live(pid)]
    assert alive == [], f"Triton processes left running after the stand-in stopped: {alive}"
    standin.assert_no_training_processes()
    assert standin.leftover_shared_memory() == []
    assert standin.process.returncode == 0, (standin.workdir / "standin.log").read_text()[-4000:]


def _is_live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def sagemaker_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SageMakerStandin]:
    """A stand-in process for the session (started on first use, stopped at the end).

    It does not point boto3 at itself: tests of moto's in-process mock run in the same session,
    and an endpoint URL in the environment would send their calls to the stand-in instead.
    ``clean_sagemaker_standin`` sets the variables for one test.
    """
    if tritonserver_path() is None:
        pytest.skip(SKIP_REASON)
    standin = _start(tmp_path_factory.mktemp("sagemaker-standin"))
    try:
        yield standin
    finally:
        _stop(standin)


@pytest.fixture
def clean_sagemaker_standin(
    sagemaker_standin: SageMakerStandin, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SageMakerStandin]:
    """The session's stand-in, emptied before and after the test, with boto3 pointed at it
    through the standard ``AWS_ENDPOINT_URL_*`` variables for the test's duration."""
    from deployments.sagemaker_standin.server import environment_for

    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment_for(
        sagemaker_standin.base_url, sagemaker_standin.region
    ).items():
        monkeypatch.setenv(name, value)
    sagemaker_standin.reset()
    yield sagemaker_standin
    sagemaker_standin.tritons()
    sagemaker_standin.reset()
    sagemaker_standin.assert_no_training_processes()
