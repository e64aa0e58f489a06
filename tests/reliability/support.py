"""Real worker processes for the reliability tests: a Celery worker on the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
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


def queued_training_job(*, seed: int):
    """A tenant model with a demo dataset and a training job queued for it (its message sent)."""
    from models_registry import demo_data
    from models_registry.services import create_dataset, start_training_job
    from tests.factories import TenantFactory, TenantModelFactory

    tenant = TenantFactory(slug="zoomride")
    model = TenantModelFactory(tenant=tenant, name="intents")
    rows = demo_data.generate_tickets("zoomride", rows=90, seed=seed)
    csv = "text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in rows)
    dataset = create_dataset(
        tenant=tenant, name="tickets.csv", content=csv.encode(), filename="t.csv", actor="test"
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

