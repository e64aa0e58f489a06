"""Writes for training jobs: from queued to finished on whichever backend the job names, and the
repair of jobs whose worker or message was lost.

Every decision about a job's state is made here, under a row lock, with the Event that says why;
where and how the training runs is the job's backend's (``training_backend_for(job)``), which
answers with plain reports. A trained job's artifact becomes the model's next version: registered
as the job enters ``packaging``, then packaged for Triton and put to the quality gate; the job
succeeds in the same transaction as the gate's decision, so a succeeded job's version is ready and
its outcome (promoted or held, with the reason) is known.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from config.queue import send_task_on_commit
from models_registry import artifacts
from models_registry.dataset_files import parse_dataset
from models_registry.exceptions import (
    IdempotencyKeyReused,
    InvalidDataset,
    InvalidTrainingRequest,
    JobNotCancellable,
    TrainingBackendNotConfigured,
    TrainingLaunchDeferred,
)
from models_registry.kinds import get_kind
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from models_registry.quality_gate import GateDecision
from models_registry.services.packaging import package_version
from models_registry.services.promotion import apply_quality_gate
from models_registry.services.registry import register_version
from models_registry.training.backends.base import (
    DEFAULT_TRAINING_BACKEND,
    TrainingBackend,
    TrainingInputs,
    TrainingReport,
    training_backend,
    training_backend_for,
)

logger = logging.getLogger(__name__)

# A launched job whose worker has not written a heartbeat for this long is presumed orphaned,
# unless its backend still sees the training process.
STALE_HEARTBEAT = timedelta(minutes=2)
# A queued job no worker has picked up for this long had its message lost; it is sent again.
STALE_QUEUED = timedelta(minutes=10)
# A job packaging its version for this long without a heartbeat lost its worker (packaging a
# version takes seconds; the heartbeat is written as it starts and between its steps).
STALE_PACKAGING = timedelta(minutes=10)
# A job is run at most this many times: a worker lost once is retried, twice means a real fault.
MAX_TRAINING_ATTEMPTS = 2
# The same for packaging a trained version: resumed once after a lost worker, then failed.
MAX_PACKAGING_ATTEMPTS = 2
PACKAGE_TASK = "models_registry.tasks.package_trained_version"
STOP_TASK = "models_registry.tasks.stop_training_job"
# Progress is written at most this often (a cheap UPDATE), plus every change of whole percent.
PROGRESS_WRITE_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 10.0
LOG_TAIL_CHARS = 8000
SCALAR_TYPES = (str, int, float, bool)


def _validated_hyperparameters(hyperparameters: object, *, kind: str) -> dict:
    if hyperparameters is None:
        return {}
    if not isinstance(hyperparameters, dict):
        raise InvalidTrainingRequest(
            "hyperparameters must be a JSON object of names to values.", field="hyperparameters"
        )
    for name, value in hyperparameters.items():
        if not isinstance(name, str) or not name:
            raise InvalidTrainingRequest(
                "hyperparameters: every name must be a non-empty string.", field="hyperparameters"
            )
        if value is not None and not isinstance(value, SCALAR_TYPES):
            raise InvalidTrainingRequest(
                f"hyperparameters.{name}: must be a string, number or boolean, not "
                f"{type(value).__name__}.",
                field="hyperparameters",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidTrainingRequest(
                f"hyperparameters.{name}: must be a finite number.", field="hyperparameters"
            )
    if "kind" in hyperparameters and hyperparameters["kind"] != kind:
        raise InvalidTrainingRequest(
            f"hyperparameters.kind: the model's kind is {kind!r}; it cannot be overridden.",
            field="hyperparameters",
        )
    checked = {name: hyperparameters[name] for name in sorted(hyperparameters) if name != "kind"}
    check = get_kind(kind).check_hyperparameters
    if check is not None:
        check(checked)
    return checked


def _check_dataset_for_model(*, model: TenantModel, dataset: Dataset) -> None:
    if dataset.tenant_id != model.tenant_id:
        # Worded like a missing dataset, so another tenant's dataset ids do not leak.
        raise InvalidDataset(
            f"No dataset {dataset.pk} for tenant {model.tenant.slug}.", field="dataset"
        )
    if dataset.status != Dataset.Status.VALID:
        raise InvalidDataset(f"Dataset {dataset.name!r} did not pass validation.", field="dataset")
    wanted = get_kind(model.kind).dataset_columns
    missing = [column for column in wanted if column not in dataset_columns(dataset)]
    if missing:
        raise InvalidDataset(
            f"Dataset {dataset.name!r} has no {' or '.join(missing)} column; "
            f"{model.kind!r} models train on rows of {','.join(wanted)}.",
            field="dataset",
        )


def dataset_columns(dataset: Dataset) -> list[str]:
    """The columns a stored dataset's rows have (datasets validated before the report named
    them: text and label, and group where it counted groups)."""
    report = dataset.validation_report or {}
    if report.get("columns"):
        return list(report["columns"])
    return ["text", "label", *(["group"] if report.get("groups") else [])]


def _derived_idempotency_key(
    *, model: TenantModel, dataset: Dataset, hyperparameters: dict, backend: str
) -> str:
    payload = json.dumps(
        [model.pk, dataset.sha256, hyperparameters, backend], sort_keys=True, default=str
    )
    return "auto:" + hashlib.sha256(payload.encode()).hexdigest()


def _send_to_backend(job: TrainingJob) -> None:
    """Send the job to its backend's launch task once the transaction that made it visible
    commits."""
    send_task_on_commit(training_backend_for(job).launch_task, job.pk)


def start_training_job(
    *,
    model: TenantModel,
    dataset: Dataset,
    actor: str,
    hyperparameters: dict | None = None,
    idempotency_key: str | None = None,
    backend: str = DEFAULT_TRAINING_BACKEND,
) -> tuple[TrainingJob, bool]:
    """Queue a training job, or return the job the same request already made.

    A client's ``idempotency_key`` always names one job (whatever became of it); reusing it with
    other inputs is a 409. Without a key, one is derived from the model, the dataset's sha256,
    the hyperparameters and the backend: a double click finds the job still queued, running or
    succeeded, while a failed or cancelled one is tried afresh under the next key.
    """
    hyperparameters = _validated_hyperparameters(hyperparameters, kind=model.kind)
    training_backend(backend)  # an unknown name is refused here, naming the field
    _check_dataset_for_model(model=model, dataset=dataset)
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not idempotency_key or len(idempotency_key) > 128:
            raise InvalidTrainingRequest(
                "Idempotency-Key must be 1 to 128 characters.", field="idempotency_key"
            )
        keys = [idempotency_key]
    else:
        base = _derived_idempotency_key(
            model=model, dataset=dataset, hyperparameters=hyperparameters, backend=backend
        )
        keys = [base]
        previous = (
            TrainingJob.objects.filter(model=model, idempotency_key__startswith=base)
            .order_by("-created_at", "-pk")
            .first()
        )
        if previous is not None:
            if previous.status not in (TrainingJob.Status.FAILED, TrainingJob.Status.CANCELLED):
                return previous, False
            tries = TrainingJob.objects.filter(model=model, idempotency_key__startswith=base)
            keys = [f"{base}:{tries.count() + 1}"]
    key = keys[0]
    existing = TrainingJob.objects.filter(model=model, idempotency_key=key).first()
    if existing is not None:
        return _same_request(
            existing, dataset=dataset, hyperparameters=hyperparameters, backend=backend
        ), False
    try:
        with transaction.atomic():
            job = TrainingJob.objects.create(
                model=model,
                dataset=dataset,
                backend=backend,
                hyperparameters=hyperparameters,
                idempotency_key=key,
            )
            record_event(
                kind="training.queued",
                message=(
                    f"Training job {job.pk} queued for {model} on dataset {dataset.name} "
                    f"({backend})."
                ),
                actor=actor,
                tenant=model.tenant,
                data={"job": job.pk, "hyperparameters": hyperparameters},
            )
            _send_to_backend(job)
    except IntegrityError:
        # Two requests raced past the lookup; the one that lost answers with the winner's job.
        existing = TrainingJob.objects.get(model=model, idempotency_key=key)
        return _same_request(
            existing, dataset=dataset, hyperparameters=hyperparameters, backend=backend
        ), False
    return job, True


def _same_request(
    job: TrainingJob, *, dataset: Dataset, hyperparameters: dict, backend: str
) -> TrainingJob:
    if (
        job.dataset_id != dataset.pk
        or job.hyperparameters != hyperparameters
        or job.backend != backend
    ):
        raise IdempotencyKeyReused(
            f"Idempotency-Key {job.idempotency_key!r} was already used for training job "
            f"{job.pk} with other inputs.",
            field="idempotency_key",
        )
    return job


def request_training_cancel(*, job: TrainingJob, actor: str) -> TrainingJob:
    """Ask a queued or running job to stop.

    A queued job is cancelled at once; a launched one keeps the flag (durable: a lost worker's
    cancellation is carried on by the follower and the reconciler), which the local runner polls
    and a task passes on to a backend that trains elsewhere as soon as this commits. Whatever the
    training does meanwhile, a job cancelled on request ends ``cancelled`` and its artifact is
    never registered.
    """
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_terminal:
            raise JobNotCancellable(f"Training job {job.pk} already {job.status}.")
        if job.status == TrainingJob.Status.PACKAGING:
            raise JobNotCancellable(
                f"Training job {job.pk} has finished training; its version is being packaged "
                "and put to the quality gate."
            )
        job.cancel_requested = True
        update = ["cancel_requested"]
        if job.status == TrainingJob.Status.QUEUED:
            # Nothing runs yet, so the cancellation is complete at once.
            job.status = TrainingJob.Status.CANCELLED
            job.finished_at = timezone.now()
            update += ["status", "finished_at"]
        job.save(update_fields=update)
        if job.status in (TrainingJob.Status.LAUNCHING, TrainingJob.Status.RUNNING):
            send_task_on_commit(STOP_TASK, job.pk)
        record_event(
            kind="training.cancel_requested",
            message=f"Cancellation of training job {job.pk} requested.",
            actor=actor,
            tenant=job.model.tenant,
        )
    return job


def launch_training_job(*, job_id: int, backend: TrainingBackend | None = None) -> TrainingJob:
    """Hand a queued job to its backend and record what the backend reports.

    A local job trains here to its end (then registered, packaged and put to the quality gate,
    and only then succeeded);
    a SageMaker job returns once launched and ``follow_training_jobs`` takes it from there. A
    re-delivered message for a job already launched or finished changes nothing. A launch the
    backend defers (throttled) puts the job back in the queue; one it refuses fails the job with
    the reason, and so does a backend that is not configured (TrainingBackendNotConfigured).
    """
    if backend is None:
        backend = training_backend_for(TrainingJob.objects.only("backend").get(pk=job_id))
    job, claimed, problem = _claim_training_job(job_id=job_id, backend=backend, now=timezone.now())
    if problem:
        raise TrainingBackendNotConfigured(problem, field="backend")
    if not claimed:
        return job
    try:
        inputs = _training_inputs(job)
    except (DomainError, OSError, ValueError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        with transaction.atomic():
            return finish_job(
                job, status=TrainingJob.Status.FAILED, reason=f"Preparing the job failed: {reason}"
            )
    try:
        report = backend.launch(job=job, inputs=inputs, progress=_ProgressWriter(job.pk))
    except TrainingLaunchDeferred as exc:
        with transaction.atomic():
            # A launch that never ran is no attempt: only lost workers count against the job.
            TrainingJob.objects.filter(pk=job.pk).update(
                status=TrainingJob.Status.QUEUED,
                attempts=F("attempts") - 1,
                heartbeat_at=timezone.now(),
            )
            record_event(
                kind="training.launch_throttled",
                severity="warning",
                message=f"Training job {job.pk}: {exc.message} It stays queued.",
                actor="worker",
                tenant=job.model.tenant,
            )
        raise
    except DomainError as exc:
        with transaction.atomic():
            job.refresh_from_db()
            finish_job(job, status=TrainingJob.Status.FAILED, reason=exc.message)
        raise
    job = _record_report(job=job, report=report, launched=True)
    if job.cancel_requested and not job.is_terminal:
        # Cancelled while the launch was under way: stop it now, not at the next follow pass.
        send_task_on_commit(STOP_TASK, job.pk)
    return job


def stop_cancelled_training_job(
    *, job_id: int, backend: TrainingBackend | None = None
) -> TrainingJob:
    """Pass a launched job's cancellation on to its backend now (StopTrainingJob on SageMaker)
    and record what it reports; the follower carries it on until the job has stopped."""
    job = TrainingJob.objects.select_related("model__tenant").get(pk=job_id)
    if job.cancel_requested and not job.is_terminal:
        _follow(job=job, backend=backend or training_backend_for(job))
        job.refresh_from_db()
    return job


def follow_training_job(*, job: TrainingJob, backend: TrainingBackend | None = None) -> TrainingJob:
    """Bring one launched job up to date with its backend: progress while it runs, its outcome once
    it ended (a succeeded job's artifact becomes the next version). A job cancelled meanwhile is
    asked to stop."""
    _follow(job=job, backend=backend or training_backend_for(job))
    job.refresh_from_db()
    return job


def follow_training_jobs() -> int:
    """Follow every launched job still in flight; returns how many a backend reported on."""
    jobs = TrainingJob.objects.filter(
        status__in=[TrainingJob.Status.LAUNCHING, TrainingJob.Status.RUNNING],
    ).exclude(external_id="")
    return sum(
        _follow(job=job, backend=training_backend_for(job))
        for job in jobs.select_related("model__tenant")
    )


def _follow(*, job: TrainingJob, backend: TrainingBackend) -> bool:
    """Follow one job; False when its backend had nothing to report (its worker reports)."""
    if job.is_terminal or not job.external_id:
        return False
    if job.cancel_requested:
        backend.stop(job=job)
    report = backend.follow(job=job)
    if report is None:
        return False
    _record_report(job=job, report=report, launched=False)
    return True


def _claim_training_job(
    *, job_id: int, backend: TrainingBackend, now: datetime
) -> tuple[TrainingJob, bool, str]:
    """Move a job to launching under a row lock; False when this worker must not launch it, and
    the backend's configuration problem when that failed the job."""
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant", "dataset")
            .get(pk=job_id)
        )
        if job.is_terminal or job.status == TrainingJob.Status.PACKAGING:
            # A trained job is never trained again: the reconciler resumes its packaging.
            return job, False, ""
        if job.cancel_requested:
            finish_job(job, status=TrainingJob.Status.CANCELLED, reason="Cancelled before start.")
            return job, False, ""
        if job.status != TrainingJob.Status.QUEUED and not _worker_lost(job, backend, now=now):
            return job, False, ""  # a re-delivered message while the job is launched and alive
        if job.attempts >= MAX_TRAINING_ATTEMPTS:
            finish_job(
                job,
                status=TrainingJob.Status.FAILED,
                reason=f"Gave up after {job.attempts} attempts: the worker was lost each time.",
            )
            return job, False, ""
        problem = backend.configuration_problem()
        if problem:
            finish_job(job, status=TrainingJob.Status.FAILED, reason=problem)
            return job, False, problem
        job.status = TrainingJob.Status.LAUNCHING
        job.attempts += 1
        job.started_at = now
        job.heartbeat_at = now
        job.progress_pct = 0
        job.save(update_fields=["status", "attempts", "started_at", "heartbeat_at", "progress_pct"])
        record_event(
            kind="training.started",
            message=f"Training job {job.pk} for {job.model} started (attempt {job.attempts}).",
            actor="worker",
            tenant=job.model.tenant,
            data={"job": job.pk, "attempt": job.attempts},
        )
    return job, True, ""


def _worker_lost(job: TrainingJob, backend: TrainingBackend, *, now: datetime) -> bool:
    """Whether a launched job's worker is gone: no fresh heartbeat, and no training process its
    backend still sees."""
    fresh = job.heartbeat_at is not None and now - job.heartbeat_at < STALE_HEARTBEAT
    return not fresh and backend.process_lost(job=job)


def _training_inputs(job: TrainingJob) -> TrainingInputs:
    train_rows, validation_rows = _training_rows(job.dataset)
    return TrainingInputs(
        train_rows=train_rows,
        validation_rows=validation_rows,
        hyperparameters={**job.hyperparameters, "kind": job.model.kind},
    )


def training_inputs(job: TrainingJob) -> TrainingInputs:
    """What a job trains on: its dataset's split, and its hyperparameters with the kind."""
    return _training_inputs(job)


def _record_report(*, job: TrainingJob, report: TrainingReport, launched: bool) -> TrainingJob:
    """Store what a backend reported: progress while the job runs, its outcome once it ended."""
    model = job.model
    if not report.is_terminal:
        fields = {
            "status": (
                TrainingJob.Status.RUNNING
                if report.state == "running"
                else TrainingJob.Status.LAUNCHING
            ),
            "heartbeat_at": timezone.now(),
        }
        if report.external_id:
            fields["external_id"] = report.external_id
        if report.progress_pct is not None:
            fields["progress_pct"] = report.progress_pct
        if report.warm_pool_reused is not None:
            fields["warm_pool_reused"] = report.warm_pool_reused
        with transaction.atomic():
            TrainingJob.objects.filter(pk=job.pk).update(**fields)
            if launched:
                record_event(
                    kind="training.launched",
                    message=f"Training job {job.pk} for {model} {report.summary or 'launched'}.",
                    actor="worker",
                    tenant=model.tenant,
                    data={"job": job.pk, "external_id": report.external_id},
                )
        job.refresh_from_db()
        return job
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=job.pk)
        )
        if job.is_terminal or job.status == TrainingJob.Status.PACKAGING:
            return job  # a report delivered again: the job's outcome is recorded already
        if job.cancel_requested:
            # The user's cancel decides, whatever the training did before the stop took effect:
            # a model that finished meanwhile is never registered, packaged or promoted.
            return finish_job(
                job,
                status=TrainingJob.Status.CANCELLED,
                reason=_cancelled_reason(report),
                report=report,
                data={"training_ended": report.state},
            )
        if report.state != "succeeded":
            return finish_job(job, status=report.state, reason=report.failure_reason, report=report)
        _enter_packaging(job, report=report)
    return package_trained_version(job_id=job.pk)


def _cancelled_reason(report: TrainingReport) -> str:
    """Why a job cancelled on request ended as it did, from what its backend saw last."""
    if report.state == "succeeded":
        return (
            "Cancelled on request: the training finished before the stop took effect; its model "
            "was not registered."
        )
    if report.state == "failed":
        return f"Cancelled on request: the training had already failed ({report.failure_reason})."
    return "Cancelled on request: the training was stopped before it finished."


def finish_job(
    job: TrainingJob,
    *,
    status: str,
    reason: str = "",
    report: TrainingReport | None = None,
    actor: str = "worker",
    data: dict | None = None,
) -> TrainingJob:
    """Write a job's terminal state and the Event saying why (call inside a transaction, the
    job's row locked); ``data`` adds to the Event's."""
    job.status = status
    job.failure_reason = reason if status != TrainingJob.Status.SUCCEEDED else ""
    job.finished_at = timezone.now()
    fields = ["status", "failure_reason", "finished_at"]
    if report is not None:
        fields += _take_report(job, report)
    if status == TrainingJob.Status.SUCCEEDED:
        job.progress_pct = 100
        fields.append("progress_pct")
    job.save(update_fields=fields)
    severity = "error" if status == TrainingJob.Status.FAILED else "info"
    record_event(
        kind=f"training.{status}",
        severity=severity,
        message=f"Training job {job.pk} for {job.model} {status}"
        + (f": {reason}" if reason else "."),
        actor=actor,
        tenant=job.model.tenant,
        data={"job": job.pk, **(data or {})},
    )
    return job


def _take_report(job: TrainingJob, report: TrainingReport) -> list[str]:
    """Copy what an ended job's backend reported (log tail, metrics, external id) onto ``job``;
    the fields set."""
    fields = []
    if report.log_tail is not None:
        job.log_tail = report.log_tail[-LOG_TAIL_CHARS:]
        fields.append("log_tail")
    if report.metrics:
        job.metrics = report.metrics
        fields.append("metrics")
    if report.external_id:
        job.external_id = report.external_id
        fields.append("external_id")
    if report.warm_pool_reused is not None:
        job.warm_pool_reused = report.warm_pool_reused
        fields.append("warm_pool_reused")
    return fields


def _enter_packaging(job: TrainingJob, *, report: TrainingReport) -> ModelVersion:
    """Register the trained artifact as the model's next version (once: a re-run finds it) and
    move the job to packaging, with what the backend reported (call inside a transaction, the
    job's row locked)."""
    version = ModelVersion.objects.filter(training_job=job).first() or register_version(
        model=job.model,
        actor="worker",
        training_job=job,
        artifact_uri=report.artifact_uri,
        metrics=report.metrics,
    )
    job.status = TrainingJob.Status.PACKAGING
    job.progress_pct = 100
    job.heartbeat_at = timezone.now()
    job.packaging_attempts = 1
    fields = ["status", "progress_pct", "heartbeat_at", "packaging_attempts"]
    job.save(update_fields=fields + _take_report(job, report))
    record_event(
        kind="training.trained",
        message=(
            f"Training job {job.pk} for {job.model} trained v{version.number}; packaging it "
            "and putting it to the quality gate."
        ),
        actor="worker",
        tenant=job.model.tenant,
        data={"job": job.pk, "version": version.number},
    )
    return version


def hand_to_packaging(job: TrainingJob, *, report: TrainingReport) -> ModelVersion:
    """Register a trained job's artifact as its version and send it to the packaging task once
    the transaction commits (call inside a transaction, the job's row locked)."""
    version = _enter_packaging(job, report=report)
    send_task_on_commit(PACKAGE_TASK, job.pk)
    return version


def package_trained_version(*, job_id: int) -> TrainingJob:
    """Package the version a trained job produced and put it to the quality gate; the job
    succeeds in the gate decision's own transaction, with the outcome (promoted or held, and
    why).

    Safe to run again (the reconciler resumes a job whose worker was lost here): a version
    packaged already is not built again, and a job no longer packaging is returned as it is. A
    version that cannot be packaged fails the job with the reason, since nothing it produced
    can be deployed.
    """
    job = TrainingJob.objects.select_related("model__tenant").get(pk=job_id)
    if job.status != TrainingJob.Status.PACKAGING:
        return job
    version = ModelVersion.objects.filter(training_job=job).first()
    if version is None:
        # Registered in the transaction that moved the job here; gone only if deleted since.
        return _fail_packaging(job_id=job.pk, reason="its version no longer exists")
    try:
        version = package_version(version=version, actor="worker")
    except (DomainError, OSError, ValueError) as exc:
        # The version is marked failed with the same reason by packaging itself.
        return _fail_packaging(job_id=job.pk, reason=getattr(exc, "message", None) or str(exc))
    TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.PACKAGING).update(
        heartbeat_at=timezone.now()
    )

    def record_outcome(decision: GateDecision) -> None:
        locked = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=job.pk)
        )
        if locked.status != TrainingJob.Status.PACKAGING:
            return  # another run of this step recorded it first
        outcome = (
            TrainingJob.GateOutcome.PROMOTED if decision.promote else TrainingJob.GateOutcome.HELD
        )
        locked.gate_outcome = outcome
        locked.gate_reason = decision.reason
        locked.save(update_fields=["gate_outcome", "gate_reason"])
        finish_job(
            locked,
            status=TrainingJob.Status.SUCCEEDED,
            reason=f"v{version.number} {outcome}: {decision.reason}",
        )

    apply_quality_gate(version=version, actor="worker", on_decided=record_outcome)
    job.refresh_from_db()
    return job


def _fail_packaging(*, job_id: int, reason: str) -> TrainingJob:
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=job_id)
        )
        if job.status != TrainingJob.Status.PACKAGING:
            return job
        return finish_job(
            job, status=TrainingJob.Status.FAILED, reason=f"Packaging failed: {reason}"
        )


def _training_rows(dataset: Dataset) -> tuple[list[dict], list[dict]]:
    content = artifacts.read_bytes(dataset.storage_uri)
    parsed = parse_dataset(content, format=dataset.format)
    if parsed.problems:
        raise InvalidDataset(
            f"Dataset {dataset.name!r} no longer parses: {parsed.problems[0]}", field="dataset"
        )
    # Datasets uploaded before splits were stored get the same deterministic split now; a stored
    # split already leaves out the rows dropped as repeats.
    split = dataset.split or parsed.split()
    train = [parsed.rows[index] for index in split["train"]]
    validation = [parsed.rows[index] for index in split["validation"]]
    return train, validation


class _ProgressWriter:
    """``TrainingProgress`` for a job training in this worker: its process, throttled progress
    and heartbeats (cheap UPDATEs)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.last_pct = -1
        self.last_progress_write = 0.0
        self.last_heartbeat = time.monotonic()

    def on_progress(self, pct: int, message: str) -> None:
        pct = max(0, min(100, int(pct)))
        now = time.monotonic()
        if pct == self.last_pct or (
            now - self.last_progress_write < PROGRESS_WRITE_INTERVAL_S and pct < 100
        ):
            return
        self.last_pct, self.last_progress_write, self.last_heartbeat = pct, now, now
        TrainingJob.objects.filter(pk=self.job_id, status=TrainingJob.Status.RUNNING).update(
            progress_pct=pct, heartbeat_at=timezone.now()
        )

    def on_start(self, external_id: str) -> None:
        # Recorded at once so the reconciler can tell a live training process from a lost one.
        TrainingJob.objects.filter(pk=self.job_id).update(
            external_id=external_id, status=TrainingJob.Status.RUNNING, heartbeat_at=timezone.now()
        )

    def should_cancel(self) -> bool:
        # Polled every runner tick, so it doubles as the heartbeat that keeps the job from being
        # taken for orphaned while a long epoch reports no progress.
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self.last_heartbeat = now
            TrainingJob.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now())
        return TrainingJob.objects.filter(pk=self.job_id, cancel_requested=True).exists()


def reconcile_training_jobs(*, now: datetime | None = None) -> list[TrainingJob]:
    """Repair jobs whose worker vanished and queued jobs whose message was lost.

    A launched job with a stale heartbeat is left alone while its backend still sees its training
    process (a local pid that is alive; a SageMaker job always); otherwise it is queued again if
    it has an attempt left, else failed with the last heartbeat in the reason. A trained job
    whose worker was lost while packaging its version has the packaging and the quality gate
    resumed (never the training). A cancelled job that trains elsewhere and was not followed
    lately (its worker lost mid-cancel) is stopped and followed again. Returns the jobs it changed.
    """
    now = now or timezone.now()
    changed: list[TrainingJob] = []
    launched = [TrainingJob.Status.LAUNCHING, TrainingJob.Status.RUNNING]
    stale_running = TrainingJob.objects.filter(status__in=launched).filter(
        Q(heartbeat_at__lt=now - STALE_HEARTBEAT) | Q(heartbeat_at__isnull=True)
    )
    for job_id in stale_running.values_list("pk", flat=True):
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(of=("self",))
                .select_related("model__tenant")
                .get(pk=job_id)
            )
            # Re-checked under the lock: the worker may have written a heartbeat meanwhile.
            if job.status not in launched or not _worker_lost(
                job, training_backend_for(job), now=now
            ):
                continue
            last = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if job.heartbeat_at else "never"
            if job.attempts < MAX_TRAINING_ATTEMPTS and not job.cancel_requested:
                job.status = TrainingJob.Status.QUEUED
                job.heartbeat_at = now
                job.progress_pct = 0
                job.save(update_fields=["status", "heartbeat_at", "progress_pct"])
                record_event(
                    kind="training.requeued",
                    severity="warning",
                    message=(
                        f"Training job {job.pk}: worker stopped while the job was running "
                        f"(last heartbeat {last}); queued again."
                    ),
                    actor="reconciler",
                    tenant=job.model.tenant,
                    data={"job": job.pk, "attempts": job.attempts},
                )
                _send_to_backend(job)
            else:
                finish_job(
                    job,
                    status=TrainingJob.Status.FAILED,
                    reason=f"worker stopped while the job was running (last heartbeat {last})",
                    actor="reconciler",
                )
            changed.append(job)
    changed += _resume_lost_packaging(now=now)
    changed += _resume_cancels(now=now)
    lost = TrainingJob.objects.filter(
        status=TrainingJob.Status.QUEUED, cancel_requested=False
    ).filter(
        Q(heartbeat_at__lt=now - STALE_QUEUED)
        | Q(heartbeat_at__isnull=True, created_at__lt=now - STALE_QUEUED)
    )
    for job_id in lost.values_list("pk", flat=True):
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(of=("self",))
                .select_related("model__tenant")
                .get(pk=job_id)
            )
            if job.status != TrainingJob.Status.QUEUED:
                continue
            # Marks when it was last sent, so the next pass waits STALE_QUEUED again.
            job.heartbeat_at = now
            job.save(update_fields=["heartbeat_at"])
            record_event(
                kind="training.reenqueued",
                severity="warning",
                message=f"Training job {job.pk} was still queued; its task was sent again.",
                actor="reconciler",
                tenant=job.model.tenant,
                data={"job": job.pk},
            )
            _send_to_backend(job)
            changed.append(job)
    return changed


def _resume_cancels(*, now: datetime) -> list[TrainingJob]:
    """Carry on cancellations the follower has not reported on lately: the stop is asked again
    (a backend leaves a job already stopping alone) and the job followed, so it ends cancelled
    even when the worker that sent the stop died before recording anything."""
    changed: list[TrainingJob] = []
    pending = (
        TrainingJob.objects.filter(
            status__in=[TrainingJob.Status.LAUNCHING, TrainingJob.Status.RUNNING],
            cancel_requested=True,
        )
        .exclude(external_id="")
        .filter(Q(heartbeat_at__lt=now - STALE_HEARTBEAT) | Q(heartbeat_at__isnull=True))
    )
    for job in pending.select_related("model__tenant"):
        try:
            reported = _follow(job=job, backend=training_backend_for(job))
        except DomainError as exc:
            # The backend cannot be reached now; the next pass asks again.
            logger.warning("Training job %s: cancellation not passed on yet: %s", job.pk, exc)
            continue
        if reported:
            job.refresh_from_db()
            changed.append(job)
    return changed


def _resume_lost_packaging(*, now: datetime) -> list[TrainingJob]:
    """Send packaging jobs whose worker stopped back to a worker once; fail them the next time
    (their version failed too, so nothing waits on a package that will never come)."""
    changed: list[TrainingJob] = []
    stale = TrainingJob.objects.filter(status=TrainingJob.Status.PACKAGING).filter(
        Q(heartbeat_at__lt=now - STALE_PACKAGING) | Q(heartbeat_at__isnull=True)
    )
    for job_id in stale.values_list("pk", flat=True):
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(of=("self",))
                .select_related("model__tenant")
                .get(pk=job_id)
            )
            # Re-checked under the lock: the worker may have moved on meanwhile.
            if job.status != TrainingJob.Status.PACKAGING or (
                job.heartbeat_at is not None and now - job.heartbeat_at < STALE_PACKAGING
            ):
                continue
            last = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if job.heartbeat_at else "never"
            if job.packaging_attempts < MAX_PACKAGING_ATTEMPTS:
                job.packaging_attempts += 1
                job.heartbeat_at = now
                job.save(update_fields=["packaging_attempts", "heartbeat_at"])
                record_event(
                    kind="training.packaging_resumed",
                    severity="warning",
                    message=(
                        f"Training job {job.pk}: worker stopped while packaging its version "
                        f"(last heartbeat {last}); packaging resumed."
                    ),
                    actor="reconciler",
                    tenant=job.model.tenant,
                    data={"job": job.pk, "packaging_attempts": job.packaging_attempts},
                )
                send_task_on_commit(PACKAGE_TASK, job.pk)
            else:
                reason = f"worker stopped while packaging the version (last heartbeat {last})"
                ModelVersion.objects.filter(
                    training_job=job,
                    status__in=[ModelVersion.Status.REGISTERED, ModelVersion.Status.PACKAGING],
                ).update(
                    status=ModelVersion.Status.FAILED, status_reason=f"Packaging failed: {reason}"
                )
                finish_job(
                    job,
                    status=TrainingJob.Status.FAILED,
                    reason=f"Packaging failed: {reason}",
                    actor="reconciler",
                )
            changed.append(job)
    return changed
