"""Batch training backends: where a multi-instance batch of training jobs runs, behind one
interface.

A batch (``models_registry.training.batching``) trains several queued jobs of one kind in one
training job of ``K`` hosts. A batch backend launches it, follows it (one status call per batch,
never per job) with the results its tasks have written so far, and stops it. Services own every
database write (``models_registry.services.batch_training``); a backend answers with plain
values (``BatchReport``, ``TaskResult``), as the single-job backends do.

``sagemaker`` launches one multi-instance SageMaker training job (``sagemaker_batch``); ``local``
runs one process per host on this machine (``local_batch``), which is how the batch entry point
is tested with real training. Like ``TrainingBackend``, a backend that trains in the worker
(``local``) returns from ``launch_batch`` when the batch has ended and has nothing to add when
followed; one that trains elsewhere returns once launched and is followed by polling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal, Protocol, runtime_checkable

from django.utils.module_loading import import_string

from models_registry.training.backends.base import TERMINAL_STATES, JobState
from models_registry.training.batching import BatchPlan


@dataclass(frozen=True)
class BatchTask:
    """One job of a batch: whose model it trains and on which rows (the plan has the rest)."""

    job_id: int
    tenant_slug: str
    model_name: str
    train_rows: list[dict]
    validation_rows: list[dict]


@dataclass(frozen=True)
class TaskResult:
    """What one task of a batch left behind: its artifact and metrics, or why it failed."""

    job_id: int
    state: Literal["succeeded", "failed"]
    host: str = ""
    artifact_uri: str = ""
    metrics: dict = field(default_factory=dict)
    failure_reason: str = ""


@dataclass(frozen=True)
class BatchReport:
    """What a batch backend knows about one batch now.

    ``results`` holds the tasks that have written their result so far (all of them once the batch
    ended, except those it ended before); ``missing`` says the backend has no batch of that name
    (it was never launched).
    """

    state: JobState
    external_id: str = ""
    progress_pct: int | None = None
    results: Mapping[int, TaskResult] = field(default_factory=dict)
    failure_reason: str = ""
    summary: str = ""
    missing: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class BatchProgress(Protocol):
    """Where a backend that trains in the worker reports while a batch runs."""

    def on_start(self, host: str, external_id: str) -> None:
        """The process of ``host`` started; ``external_id`` names it (a pid)."""
        ...

    def should_cancel(self) -> bool:
        """Whether every job of the batch was cancelled; polled, it doubles as the heartbeat."""
        ...


@runtime_checkable
class BatchTrainingBackend(Protocol):
    """One place batches run, behind one API."""

    name: str  # the ``TrainingJob.backend`` value whose jobs it batches

    def configuration_problem(self) -> str:
        """What keeps this backend from launching (a missing setting), or ""."""
        ...

    def launch_batch(
        self,
        *,
        name: str,
        plan: BatchPlan,
        tasks: Mapping[int, BatchTask],
        progress: BatchProgress,
    ) -> BatchReport:
        """Start batch ``name`` (the training job's name) training ``plan`` on ``tasks``.

        Raises ``TrainingLaunchDeferred`` when the launch should be tried again later, and a
        ``DomainError`` whose message says why when the batch cannot run at all.
        """
        ...

    def follow_batch(self, *, name: str, waiting: Sequence[int]) -> BatchReport | None:
        """The batch's state now and the results of the ``waiting`` jobs written so far; None
        when the worker that launched it reports for it."""
        ...

    def stop_batch(self, *, name: str) -> None:
        """Ask the batch to stop (every job it trains was cancelled)."""
        ...


def task_result(*, job_id: int, document: object, artifact_uri: str) -> TaskResult:
    """A task's ``result.json`` (see ``batch_entrypoint``) as a ``TaskResult``; anything
    unreadable is a failed task that says so."""
    if not isinstance(document, dict) or document.get("status") not in ("succeeded", "failed"):
        return TaskResult(
            job_id=job_id, state="failed", failure_reason="Its task wrote an unreadable result."
        )
    # The entry point's metrics document wraps the figures beside the kind's name.
    metrics = document.get("metrics") if isinstance(document.get("metrics"), dict) else {}
    figures = metrics.get("metrics") if isinstance(metrics.get("metrics"), dict) else metrics
    succeeded = document["status"] == "succeeded"
    return TaskResult(
        job_id=job_id,
        state=document["status"],
        host=str(document.get("host") or ""),
        artifact_uri=artifact_uri if succeeded else "",
        metrics=dict(figures),
        failure_reason="" if succeeded else str(document.get("reason") or "Its task failed."),
    )


BATCH_BACKENDS: dict[str, str] = {
    "local": "models_registry.training.backends.local_batch.LocalBatchBackend",
    "sagemaker": "models_registry.training.backends.sagemaker_batch.SageMakerBatchBackend",
}


def batch_backend(name: str) -> BatchTrainingBackend | None:
    """The batch backend for jobs of backend ``name``; None where that backend has none."""
    if name not in BATCH_BACKENDS:
        return None
    return _backend_at(BATCH_BACKENDS[name])


@cache
def _backend_at(path: str) -> BatchTrainingBackend:
    # One per process, as the single-job backends: launches share the SageMaker client's limiter.
    return import_string(path)()
