"""The training backend interface: what the services ask of the place a training job runs.

A backend launches a job the services claimed, follows it while it runs and stops it when it was
cancelled. Services own every database write and Event: a backend reads the job row it is handed
and answers with plain values (``TrainingReport``), so which backend a job uses is decided here,
once, and never by an ``if`` in a service. A third backend is one module implementing
``TrainingBackend`` and one entry in ``TRAINING_BACKENDS`` (plus its name among the stored
``TrainingJob.Backend`` choices).

Two shapes fit the interface. A backend that trains in the worker (``local``) returns from
``launch`` when the training has ended, reporting the process and its progress meanwhile through
``TrainingProgress``; it has nothing to add when followed. A backend that trains elsewhere
(``sagemaker``) returns from ``launch`` once the job has started, and ``follow`` polls it until it
ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from django.utils.module_loading import import_string

from models_registry.exceptions import InvalidTrainingRequest

if TYPE_CHECKING:
    from models_registry.models import TrainingJob

JobState = Literal["launching", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class TrainingInputs:
    """What every backend trains on: the split's rows and the hyperparameters (with ``kind``)."""

    train_rows: list[dict]
    validation_rows: list[dict]
    hyperparameters: dict


@dataclass(frozen=True)
class TrainingReport:
    """What a backend knows about one job now: its state and, once it ended, what it left behind.

    ``external_id`` is the backend's own handle on the job (a process id, a training-job ARN);
    ``metrics`` use the kind's names; ``log_tail`` is None where the backend keeps no log here;
    ``summary`` says in a few words what a launch did, for the event log; ``warm_pool_reused``
    whether the job started on instances a finished job kept (None: not known, or no warm pool).
    """

    state: JobState
    external_id: str = ""
    progress_pct: int | None = None
    artifact_uri: str = ""
    metrics: dict = field(default_factory=dict)
    failure_reason: str = ""
    log_tail: str | None = None
    summary: str = ""
    warm_pool_reused: bool | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class TrainingProgress(Protocol):
    """Where a backend that trains in the worker reports while the job runs."""

    def on_start(self, external_id: str) -> None:
        """The training process started; ``external_id`` names it (a pid)."""
        ...

    def on_progress(self, pct: int, message: str) -> None:
        """The training reported ``pct`` percent done."""
        ...

    def should_cancel(self) -> bool:
        """Whether the job was cancelled; polled every tick, it doubles as the heartbeat."""
        ...


@runtime_checkable
class TrainingBackend(Protocol):
    """One place training jobs run (a local process, a SageMaker training job) behind one API."""

    name: str  # the ``TrainingJob.backend`` value it serves
    launch_task: str  # the Celery task (by registered name) a queued job is sent to

    def configuration_problem(self) -> str:
        """What keeps this backend from launching (a missing setting), or ""."""
        ...

    def launch(
        self, *, job: TrainingJob, inputs: TrainingInputs, progress: TrainingProgress
    ) -> TrainingReport:
        """Start the claimed ``job`` on ``inputs``.

        Raises ``TrainingLaunchDeferred`` when the launch should be tried again later, and a
        ``DomainError`` whose message says why when the job cannot run at all.
        """
        ...

    def follow(self, *, job: TrainingJob) -> TrainingReport | None:
        """The launched job's state now; None when the worker that launched it reports for it."""
        ...

    def stop(self, *, job: TrainingJob) -> None:
        """Ask a launched, cancelled job to stop; its end comes through ``launch`` or ``follow``."""
        ...

    def process_lost(self, *, job: TrainingJob) -> bool:
        """Whether a launched job whose heartbeat went stale has lost its training process."""
        ...

    def release(self, *, job: TrainingJob, keep_uris: frozenset[str], last_of_batch: bool) -> int:
        """Delete what the ended ``job`` left where it trained, except the objects named in
        ``keep_uris`` (the artifacts versions were registered from), and its batch's shared
        inputs too when ``last_of_batch``; how many were deleted. Raises a DomainError when the
        deletion could not be done (the next pass retries)."""
        ...


# The backend a job runs on when the request names none.
DEFAULT_TRAINING_BACKEND = "local"
TRAINING_BACKENDS: dict[str, str] = {
    "local": "models_registry.training.backends.local.LocalTrainingBackend",
    "sagemaker": "models_registry.training.backends.sagemaker.SageMakerTrainingBackend",
}


def training_backend_names() -> list[str]:
    """The names a training job may ask for, in the registry's order."""
    return list(TRAINING_BACKENDS)


def training_backend(name: str) -> TrainingBackend:
    """The backend registered as ``name``; any other name is a 400 naming the ``backend`` field."""
    if name not in TRAINING_BACKENDS:
        raise InvalidTrainingRequest(
            f"backend {name!r}: choose one of {', '.join(TRAINING_BACKENDS)}.", field="backend"
        )
    return _backend_at(TRAINING_BACKENDS[name])


def training_backend_for(job: TrainingJob) -> TrainingBackend:
    """The backend a training job runs on."""
    return training_backend(job.backend)


@cache
def _backend_at(path: str) -> TrainingBackend:
    # One instance per process, imported on first use (the SageMaker one needs boto3), so every
    # launch in a process shares its backend's clients and rate limiter.
    return import_string(path)()
