"""The local training backend's process runner: a SageMaker-style job directory and one process.

``prepare_job_dir`` lays out what a SageMaker training container would see under ``/opt/ml``
(``input/config/hyperparameters.json``, ``input/data/<channel>/<channel>.jsonl``, ``model/``,
``output/data/``) inside ``job_dir``; ``run_local_job`` runs the training entry point there as a
separate process in its own session, streams its output to ``output/training.log``, reports its
``#progress`` lines, and stops it on cancel or timeout. ``prepare_batch_dir`` and
``run_local_batch`` do the same for a batch (``models_registry.training.batching``): one shared
batch channel, one ``/opt/ml`` per host with its ``resourceconfig.json``, and one process per host
running the batch entry point at once, as the instances of a multi-instance SageMaker training job
do. Pure: no ORM, so the Celery task owns the database writes and this is testable and
benchmarkable on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models_registry.training import batching

ENTRYPOINT_MODULE = "models_registry.training.entrypoint"
BATCH_ENTRYPOINT_MODULE = "models_registry.training.batch_entrypoint"
REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_FILE = "training.log"
LOG_TAIL_BYTES = 4096
# SageMaker gives a stopped container 120 s; a local job holds no remote state to flush.
KILL_AFTER_S = 10.0
_PROGRESS = re.compile(r"^#progress\s+(\d{1,3})\s*(.*)$")

Status = Literal["succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class JobPaths:
    """Where one local job's inputs and outputs live (the ``/opt/ml`` layout, under job_dir)."""

    job_dir: Path
    config_dir: Path
    train_dir: Path
    validation_dir: Path
    model_dir: Path
    output_dir: Path
    output_data_dir: Path

    @classmethod
    def under(cls, job_dir: Path) -> JobPaths:
        job_dir = Path(job_dir)
        return cls(
            job_dir=job_dir,
            config_dir=job_dir / "input" / "config",
            train_dir=job_dir / "input" / "data" / "train",
            validation_dir=job_dir / "input" / "data" / "validation",
            model_dir=job_dir / "model",
            output_dir=job_dir / "output",
            output_data_dir=job_dir / "output" / "data",
        )

    @property
    def log_path(self) -> Path:
        return self.output_dir / LOG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.output_data_dir / "metrics.json"

    @property
    def failure_path(self) -> Path:
        return self.output_dir / "failure"

    def environment(self) -> dict[str, str]:
        """The SM_* variables the entry point reads, pointing into this job directory."""
        return {
            "SM_MODEL_DIR": str(self.model_dir),
            "SM_OUTPUT_DIR": str(self.output_dir),
            "SM_OUTPUT_DATA_DIR": str(self.output_data_dir),
            "SM_CHANNEL_TRAIN": str(self.train_dir),
            "SM_CHANNEL_VALIDATION": str(self.validation_dir),
            "SM_CHANNELS": json.dumps(["train", "validation"]),
            "SM_INPUT_CONFIG_DIR": str(self.config_dir),
        }


@dataclass(frozen=True)
class TrainingOutcome:
    """How a local training process ended and what it left behind."""

    status: Status
    model_dir: Path
    metrics: dict = field(default_factory=dict)
    failure_reason: str = ""
    log_tail: str = ""
    pid: int | None = None
    duration_s: float = 0.0
    exit_code: int | None = None


def prepare_job_dir(
    *,
    job_dir: Path,
    hyperparameters: dict,
    train_rows: list[dict],
    validation_rows: list[dict],
) -> JobPaths:
    """Lay out ``job_dir`` as a SageMaker training container sees ``/opt/ml``; returns its paths.

    Hyperparameter values are written as strings, as SageMaker passes them, so the local run
    exercises the same parsing as a SageMaker one.
    """
    paths = JobPaths.under(job_dir)
    for directory in (
        paths.config_dir,
        paths.train_dir,
        paths.validation_dir,
        paths.model_dir,
        paths.output_data_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    as_strings = {
        str(name): value if isinstance(value, str) else json.dumps(value)
        for name, value in hyperparameters.items()
    }
    (paths.config_dir / "hyperparameters.json").write_text(
        json.dumps(as_strings, indent=2, sort_keys=True) + "\n"
    )
    _write_jsonl(paths.train_dir / "train.jsonl", train_rows)
    _write_jsonl(paths.validation_dir / "validation.jsonl", validation_rows)
    return paths


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_local_job(
    *,
    job_dir: Path,
    on_progress: Callable[[int, str], None],
    should_cancel: Callable[[], bool],
    timeout_s: float,
    poll_s: float = 0.5,
    extra_env: dict | None = None,
    on_start: Callable[[int], None] | None = None,
    module: str = ENTRYPOINT_MODULE,
) -> TrainingOutcome:
    """Run the training entry point (``module``) on a prepared ``job_dir`` and wait for it to end.

    ``on_progress(percent, message)`` is called from this thread for each new ``#progress``
    line; ``should_cancel()`` is polled every ``poll_s``; cancel or ``timeout_s`` send SIGTERM
    to the process group, then SIGKILL after 10 s. ``on_start(pid)`` lets the caller record
    the pid (the reconciler checks it with ``process_alive``).
    """
    paths = JobPaths.under(job_dir)
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    paths.failure_path.unlink(missing_ok=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith("SM_")}
    env.update(paths.environment())
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",  # progress lines must arrive as they are printed
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update({str(name): str(value) for name, value in (extra_env or {}).items()})

    started = time.monotonic()
    lines: queue.Queue[str | None] = queue.Queue()
    with open(paths.log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=str(REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: cancel signals the whole group, and a Celery worker's signals
            # (e.g. a Ctrl-C to the worker) do not reach the job.
            start_new_session=True,
        )
        reader = threading.Thread(
            target=_pump, args=(process.stdout, log, lines), name="training-log", daemon=True
        )
        reader.start()

        last_progress: tuple[int, str] | None = None
        stop_reason: Status | None = None
        timeout_reason = ""
        eof = False
        try:
            if on_start is not None:
                on_start(process.pid)
            while not eof:
                deadline = time.monotonic() + poll_s
                # Drain what the process printed, waiting at most until the next poll.
                while True:
                    remaining = deadline - time.monotonic()
                    try:
                        line = lines.get(timeout=max(0.0, remaining))
                    except queue.Empty:
                        break
                    if line is None:
                        eof = True
                        break
                    match = _PROGRESS.match(line)
                    if match:
                        update = (min(100, int(match.group(1))), match.group(2).strip())
                        if update != last_progress:
                            last_progress = update
                            on_progress(*update)
                if eof or stop_reason is not None:
                    continue
                if should_cancel():
                    stop_reason = "cancelled"
                    _stop(process)
                elif time.monotonic() - started > timeout_s:
                    stop_reason = "failed"
                    timeout_reason = f"timed out after {timeout_s:g} s"
                    _stop(process)
        except BaseException:
            # The caller's callback failed or the worker is shutting down: never leave an
            # orphaned training process behind.
            _stop(process)
            raise
        exit_code = process.wait()
        reader.join(timeout=5)
    duration_s = time.monotonic() - started

    metrics = _read_metrics(paths.metrics_path)
    log_tail = _tail(paths.log_path)
    if stop_reason == "cancelled":
        status, reason = "cancelled", "cancelled"
    elif stop_reason == "failed":
        status, reason = "failed", timeout_reason
    elif exit_code == 0 and metrics:
        status, reason = "succeeded", ""
    else:
        status = "failed"
        reason = _failure_reason(paths.failure_path, exit_code, log_tail)
    return TrainingOutcome(
        status=status,
        model_dir=paths.model_dir,
        metrics=metrics,
        failure_reason=reason,
        log_tail=log_tail,
        pid=process.pid,
        duration_s=round(duration_s, 3),
        exit_code=exit_code,
    )


def _pump(stream, log, lines: queue.Queue) -> None:
    # One thread owns the pipe: the process never blocks on a full pipe, whatever we do.
    try:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    finally:
        stream.close()
        lines.put(None)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the job's process group, SIGKILL it if it has not exited after KILL_AFTER_S."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)  # the session leader's pid is its group id


def _read_metrics(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _failure_reason(failure_path: Path, exit_code: int, log_tail: str) -> str:
    try:
        reason = failure_path.read_text(encoding="utf-8").strip()
    except OSError:
        reason = ""
    if reason:
        return reason
    last_lines = [line for line in log_tail.splitlines() if line.strip()][-1:]
    detail = f": {last_lines[0]}" if last_lines else ""
    if exit_code < 0:
        return f"the training process was killed by signal {-exit_code}{detail}"
    return f"the training process exited with code {exit_code}{detail}"


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` is still a running training entry point (not a reused pid, not a zombie)."""
    if not pid:
        return False
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = " ".join(process.cmdline())
        return ENTRYPOINT_MODULE in command or BATCH_ENTRYPOINT_MODULE in command
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # AccessDenied: another user's process, so not one this runner started.
        return False


# ---------------------------------------------------------------------------------------------
# Batches: one process per host, as the instances of a multi-instance training job
# ---------------------------------------------------------------------------------------------

BATCH_CHANNEL_DIR = ("input", "data", "batch")


@dataclass(frozen=True)
class BatchOutcome:
    """How a local batch ended: each host's outcome and each task's result (those written)."""

    status: Status
    hosts: dict[str, TrainingOutcome]
    results: dict[int, dict]
    failure_reason: str = ""
    duration_s: float = 0.0


def prepare_batch_dir(
    *, batch_dir: Path, manifest: dict, task_rows: dict[int, tuple[list[dict], list[dict]]]
) -> Path:
    """Lay out a batch under ``batch_dir``: the batch channel (``input/data/batch``: the manifest
    and each task's ``<job id>/{train,validation}.jsonl``) and ``hosts/algo-N``, each an ``/opt/ml``
    with its ``resourceconfig.json`` and the batch's ``hyperparameters.json``; the channel."""
    batch_dir = Path(batch_dir)
    channel = batch_dir.joinpath(*BATCH_CHANNEL_DIR)
    channel.mkdir(parents=True, exist_ok=True)
    (channel / batching.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    for job_id, (train_rows, validation_rows) in task_rows.items():
        (channel / str(job_id)).mkdir(parents=True, exist_ok=True)
        _write_jsonl(channel / str(job_id) / "train.jsonl", train_rows)
        _write_jsonl(channel / str(job_id) / "validation.jsonl", validation_rows)
    hosts = [batching.host_name(index) for index in range(len(manifest["hosts"]))]
    for host in hosts:
        paths = JobPaths.under(batch_dir / "hosts" / host)
        for directory in (paths.config_dir, paths.model_dir, paths.output_data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # What SageMaker writes on each instance of a multi-instance job.
        (paths.config_dir / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "lo"})
            + "\n"
        )
        (paths.config_dir / "hyperparameters.json").write_text(
            json.dumps({"kind": manifest["kind"]}) + "\n"
        )
    return channel


def run_local_batch(
    *,
    batch_dir: Path,
    should_cancel: Callable[[], bool],
    timeout_s: float,
    poll_s: float = 0.5,
    extra_env: dict | None = None,
    on_start: Callable[[str, int], None] | None = None,
) -> BatchOutcome:
    """Run one batch entry-point process per host of a prepared ``batch_dir``, all at once, and
    wait for every one to end.

    ``should_cancel()`` and ``on_start(host, pid)`` are called from this thread only (the caller
    may use its database connection in them); cancel stops every host, and ``timeout_s`` applies
    to each host. Results are read from the manifest's output directory.
    """
    batch_dir = Path(batch_dir)
    channel = batch_dir.joinpath(*BATCH_CHANNEL_DIR)
    manifest = json.loads((channel / batching.MANIFEST_FILE).read_text(encoding="utf-8"))
    hosts = [batching.host_name(index) for index in range(len(manifest["hosts"]))]
    cancelled = threading.Event()
    started_hosts: queue.Queue[tuple[str, int]] = queue.Queue()
    outcomes: dict[str, TrainingOutcome] = {}
    errors: list[BaseException] = []
    started = time.monotonic()

    def run_host(host: str) -> None:
        try:
            outcomes[host] = run_local_job(
                job_dir=batch_dir / "hosts" / host,
                on_progress=lambda percent, message: None,  # tasks report through results
                should_cancel=cancelled.is_set,
                timeout_s=timeout_s,
                poll_s=poll_s,
                extra_env={
                    **(extra_env or {}),
                    "SM_CHANNEL_BATCH": str(channel),
                    "SM_CURRENT_HOST": host,
                    "SM_HOSTS": json.dumps(hosts),
                },
                on_start=lambda pid: started_hosts.put((host, pid)),
                module=BATCH_ENTRYPOINT_MODULE,
            )
        except BaseException as exc:  # handed to the calling thread, which raises it
            errors.append(exc)

    threads = [
        threading.Thread(target=run_host, args=(host,), name=f"batch-{host}", daemon=True)
        for host in hosts
    ]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=poll_s / len(threads))
            while not started_hosts.empty():
                host, pid = started_hosts.get()
                if on_start is not None:
                    on_start(host, pid)
            if not cancelled.is_set() and should_cancel():
                cancelled.set()
    except BaseException:
        # The caller's callback failed or the worker is shutting down: stop every host.
        cancelled.set()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]

    results = {}
    output = Path(manifest["output"])
    for host_tasks in manifest["hosts"]:
        for task in host_tasks:
            result = _read_metrics(output / str(task["job"]) / batching.RESULT_FILE)
            if result:
                results[int(task["job"])] = result
    failed = {host: outcome for host, outcome in outcomes.items() if outcome.status == "failed"}
    if cancelled.is_set():
        status, reason = "cancelled", "cancelled"
    elif failed:
        status = "failed"
        reason = "; ".join(f"{host}: {outcome.failure_reason}" for host, outcome in failed.items())
    else:
        status, reason = "succeeded", ""
    return BatchOutcome(
        status=status,
        hosts=outcomes,
        results=results,
        failure_reason=reason,
        duration_s=round(time.monotonic() - started, 3),
    )
