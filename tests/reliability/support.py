"""Real worker processes for the reliability tests: a Celery worker on the test database."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The test database, as a URL another process can open."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """``celery -A config worker`` in its own process group, on the test database."""

    def __init__(self, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "TENANTML_VAR_DIR": str(settings.VAR_DIR),
            "ARTIFACT_STORE": settings.ARTIFACT_STORE.uri,
            "LOG_LEVEL": "INFO",
        }
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--concurrency",
                "1",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            cwd=REPO,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_hard(self) -> None:
        """SIGKILL the worker and every process of its group, as a lost machine would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_hard()


def with_log(what: str, log: Path):
    """A ``wait_until`` message that ends with the tail of the worker's log, read at failure."""
    return lambda: f"{what}; worker log:\n{log.read_text()[-4000:] if log.exists() else ''}"


def queued_training_job(*, seed: int, rows: int = 90):
    """A tenant model with a demo dataset and a training job queued for it (its message sent).

    More ``rows`` make a long training: with the most head epochs (100,000), 1,500 tickets keep
    the intent classifier training for about a minute however idle the machine.
    """
    from models_registry.demo import tickets as demo_data
    from models_registry.services.datasets import create_dataset
    from models_registry.services.training import start_training_job
    from tests.factories import TenantFactory, TenantModelFactory

    tenant = TenantFactory(slug="zoomride")
    model = TenantModelFactory(tenant=tenant, name="intents")
    rows = demo_data.generate_tickets("zoomride", rows=rows, seed=seed)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "label"])
    writer.writeheader()
    writer.writerows(rows)
    dataset = create_dataset(
        tenant=tenant,
        name="tickets.csv",
        content=out.getvalue().encode(),
        filename="t.csv",
        actor="test",
    )
    job, _ = start_training_job(model=model, dataset=dataset, actor="test")
    return model, job


def finished_job_under_a_new_worker(job, log: Path):
    """Start a worker, wait until the job has succeeded or failed, stop the worker."""
    from models_registry.models import TrainingJob

    worker = Worker(log)
    try:
        return wait_until(
            lambda: TrainingJob.objects.filter(
                pk=job.pk, status__in=[TrainingJob.Status.SUCCEEDED, TrainingJob.Status.FAILED]
            ).first(),
            240,
            with_log("a new worker did not finish the job", log),
            interval_s=0.2,
        )
    finally:
        worker.stop()


# --- Traffic through the proxy ---------------------------------------------------------------


def invoke(base: str, slug: str, token: str) -> tuple[int, Mapping[str, str], dict]:
    """One native invoke through the proxy: (status, headers, JSON body). Only an HTTP answer is
    returned; anything else (a reset connection, a refused one, a timeout) raises."""
    request = urllib.request.Request(
        f"{base}/api/v1/tenants/{slug}/models/intents/invoke",
        data=json.dumps({"inputs": ["Where is my refund?"]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"{}")


@dataclass(frozen=True)
class Outcome:
    """One request of a traffic thread: when it was sent, and its answer or what it raised."""

    sent_at: float  # time.monotonic()
    answer: tuple | None = None
    error: BaseException | None = None

    @property
    def status(self) -> int | None:
        return self.answer[0] if self.answer else None

    def __repr__(self) -> str:
        return f"Outcome({self.error!r})" if self.error else f"Outcome({self.status})"


class Traffic:
    """``send()`` called again and again on a thread until ``stop()``, each outcome kept: an
    exception is recorded as an outcome and the thread goes on, so a connection reset fails
    the test's checks instead of quietly ending the thread."""

    def __init__(self, send: Callable[[], tuple], *, pause_s: float, name: str = "traffic"):
        self.name = name
        self.outcomes: list[Outcome] = []
        self.ran_until_stopped = False
        self._send = send
        self._pause_s = pause_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            sent_at = time.monotonic()
            try:
                outcome = Outcome(sent_at, answer=self._send())
            except Exception as exc:
                outcome = Outcome(sent_at, error=exc)
            self.outcomes.append(outcome)
            self._stop.wait(self._pause_s)  # pacing between requests, not synchronisation
        self.ran_until_stopped = True

    def stop(self, timeout_s: float = 60) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)

    def sent_since(self, moment: float) -> list[Outcome]:
        """The requests sent at or after ``moment`` that have finished."""
        return [outcome for outcome in list(self.outcomes) if outcome.sent_at >= moment]

    def assert_every_request_answered(self) -> None:
        """The thread ran until it was stopped, and every request it sent got an HTTP answer."""
        assert not self._thread.is_alive(), f"{self.name}: still running after stop()"
        assert self.ran_until_stopped, f"{self.name}: the thread ended before it was stopped"
        errors = [outcome.error for outcome in self.outcomes if outcome.error is not None]
        assert not errors, (
            f"{self.name}: {len(errors)} of {len(self.outcomes)} requests got no HTTP answer: "
            f"{errors[:5]!r}"
        )
