"""Writes for training jobs: starting, running, following and cancelling them, and repairing jobs
whose worker or message was lost."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from config.queue import send_task_on_commit
from models_registry import artifacts
from models_registry.dataset_files import (
    parse_dataset,
    stratified_split,
)
from models_registry.exceptions import (
    IdempotencyKeyReused,
    InvalidDataset,
    InvalidTrainingRequest,
    JobNotCancellable,
    TrainingBackendNotConfigured,
)
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from models_registry.services.packaging import package_version
from models_registry.services.promotion import apply_quality_gate
from models_registry.services.registry import register_version


def request_training_cancel(*, job: TrainingJob, actor: str) -> TrainingJob:
    """Ask a queued or running job to stop; the job's runner honours the flag."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_terminal:
            raise JobNotCancellable(f"Training job {job.pk} already {job.status}.")
        job.cancel_requested = True
        update = ["cancel_requested"]
        if job.status == TrainingJob.Status.QUEUED:
            # Nothing runs yet, so the cancellation is complete at once.
            job.status = TrainingJob.Status.CANCELLED
            job.finished_at = timezone.now()
            update += ["status", "finished_at"]
        job.save(update_fields=update)
        record_event(
            kind="training.cancel_requested",
            message=f"Cancellation of training job {job.pk} requested.",
            actor=actor,
            tenant=job.model.tenant,
        )
    return job


TERMINAL_JOB_STATUSES = TrainingJob.TERMINAL_STATUSES
# A running job whose worker has not written a heartbeat for this long is presumed orphaned.
STALE_HEARTBEAT = timedelta(minutes=2)
# A queued job no worker has picked up for this long had its message lost; it is sent again.
STALE_QUEUED = timedelta(minutes=10)
# A job is run at most this many times: a worker lost once is retried, twice means a real fault.
MAX_TRAINING_ATTEMPTS = 2
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
    return {name: hyperparameters[name] for name in sorted(hyperparameters) if name != "kind"}


def _check_dataset_for_model(*, model: TenantModel, dataset: Dataset) -> None:
    if dataset.tenant_id != model.tenant_id:
        # Worded like a missing dataset, so another tenant's dataset ids do not leak.
        raise InvalidDataset(
            f"No dataset {dataset.pk} for tenant {model.tenant.slug}.", field="dataset"
        )
    if dataset.status != Dataset.Status.VALID:
        raise InvalidDataset(f"Dataset {dataset.name!r} did not pass validation.", field="dataset")
    if model.kind == "embedding":
        report = dataset.validation_report or {}
        if "group" not in report.get("columns", []) and not report.get("groups"):
            raise InvalidDataset(
                f"Dataset {dataset.name!r} has no group column; an embedding model trains on "
                "paraphrase groups (text,label,group).",
                field="dataset",
            )


def _derived_idempotency_key(
    *, model: TenantModel, dataset: Dataset, hyperparameters: dict, backend: str
) -> str:
    payload = json.dumps(
        [model.pk, dataset.sha256, hyperparameters, backend], sort_keys=True, default=str
    )
    return "auto:" + hashlib.sha256(payload.encode()).hexdigest()


def _enqueue_training(job: TrainingJob) -> None:
    """Send the job's task once the transaction that made it visible commits."""
    task_name = (
        "models_registry.tasks.launch_sagemaker_training"
        if job.backend == TrainingJob.Backend.SAGEMAKER
        else "models_registry.tasks.run_training_job"
    )
    send_task_on_commit(task_name, job.pk)


def start_training_job(
    *,
    model: TenantModel,
    dataset: Dataset,
    actor: str,
    hyperparameters: dict | None = None,
    idempotency_key: str | None = None,
    backend: str = TrainingJob.Backend.LOCAL,
) -> tuple[TrainingJob, bool]:
    """Queue a training job, or return the job the same request already made.

    A client's ``idempotency_key`` always names one job (whatever became of it); reusing it with
    other inputs is a 409. Without a key, one is derived from the model, the dataset's sha256,
    the hyperparameters and the backend: a double click finds the job still queued, running or
    succeeded, while a failed or cancelled one is tried afresh under the next key.
    """
    hyperparameters = _validated_hyperparameters(hyperparameters, kind=model.kind)
    if backend not in TrainingJob.Backend.values:
        raise InvalidTrainingRequest(
            f"backend {backend!r}: choose one of {', '.join(TrainingJob.Backend.values)}.",
            field="backend",
        )
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
            _enqueue_training(job)
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


def _job_dir(job: TrainingJob) -> Path:
    return Path(settings.VAR_DIR) / "training" / "jobs" / str(job.pk)


def _claim_training_job(*, job_id: int, now: datetime) -> tuple[TrainingJob, bool]:
    """Move a job to running under a row lock; False when this worker must not run it."""
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant", "dataset")
            .get(pk=job_id)
        )
        if job.is_terminal or job.backend != TrainingJob.Backend.LOCAL:
            return job, False
        if job.cancel_requested:
            _finish_job(job, status=TrainingJob.Status.CANCELLED, reason="Cancelled before start.")
            return job, False
        if (
            job.status == TrainingJob.Status.RUNNING
            and job.heartbeat_at is not None
            and now - job.heartbeat_at < STALE_HEARTBEAT
        ):
            return job, False  # a re-delivered message while a live worker runs it
        if job.attempts >= MAX_TRAINING_ATTEMPTS:
            _finish_job(
                job,
                status=TrainingJob.Status.FAILED,
                reason=f"Gave up after {job.attempts} attempts: the worker was lost each time.",
            )
            return job, False
        job.status = TrainingJob.Status.RUNNING
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
    return job, True


def _finish_job(
    job: TrainingJob,
    *,
    status: str,
    reason: str = "",
    outcome=None,
    actor: str = "worker",
) -> TrainingJob:
    """Write a job's terminal state and the Event saying why (call inside a transaction)."""
    job.status = status
    job.failure_reason = reason if status != TrainingJob.Status.SUCCEEDED else ""
    job.finished_at = timezone.now()
    fields = ["status", "failure_reason", "finished_at"]
    if outcome is not None:
        job.log_tail = (outcome.log_tail or "")[-LOG_TAIL_CHARS:]
        job.metrics = _metrics_of(outcome)
        job.external_id = str(outcome.pid or job.external_id)
        fields += ["log_tail", "metrics", "external_id"]
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
        data={"job": job.pk},
    )
    return job


def _metrics_of(outcome) -> dict:
    """The figures of a training outcome; the entry point wraps them as ``{"metrics": {...}}``
    beside the kind and its primary metric, which the registry already knows."""
    document = outcome.metrics if isinstance(outcome.metrics, dict) else {}
    inner = document.get("metrics")
    return dict(inner) if isinstance(inner, dict) else dict(document)


def _training_rows(dataset: Dataset) -> tuple[list[dict], list[dict]]:
    content = artifacts.read_bytes(dataset.storage_uri)
    parsed = parse_dataset(content, format=dataset.format)
    if parsed.problems:
        raise InvalidDataset(
            f"Dataset {dataset.name!r} no longer parses: {parsed.problems[0]}", field="dataset"
        )
    # Datasets uploaded before splits were stored get the same deterministic split now.
    split = dataset.split or stratified_split(parsed.rows)
    train = [parsed.rows[index] for index in split["train"]]
    validation = [parsed.rows[index] for index in split["validation"]]
    return train, validation


class _ProgressWriter:
    """The runner's callbacks: the pid, throttled progress and heartbeats (cheap UPDATEs)."""

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

    def on_start(self, pid: int) -> None:
        # Recorded at once so the reconciler can tell a live training process from a lost one.
        TrainingJob.objects.filter(pk=self.job_id).update(
            external_id=str(pid), heartbeat_at=timezone.now()
        )

    def should_cancel(self) -> bool:
        # Polled every runner tick, so it doubles as the heartbeat that keeps the job from being
        # taken for orphaned while a long epoch reports no progress.
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self.last_heartbeat = now
            TrainingJob.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now())
        return TrainingJob.objects.filter(pk=self.job_id, cancel_requested=True).exists()


def run_training_job(*, job_id: int) -> TrainingJob:
    """Run a queued local job to the end: train, register and package the version, apply the
    quality gate. A re-delivered message for a job already running or finished changes nothing."""
    from models_registry.training.runner import prepare_job_dir, run_local_job

    job, claimed = _claim_training_job(job_id=job_id, now=timezone.now())
    if not claimed:
        return job
    model = job.model
    job_dir = _job_dir(job)
    try:
        train_rows, validation_rows = _training_rows(job.dataset)
        # A previous attempt's files would mix with this one's.
        shutil.rmtree(job_dir, ignore_errors=True)
        prepare_job_dir(
            job_dir=job_dir,
            hyperparameters={**job.hyperparameters, "kind": model.kind},
            train_rows=train_rows,
            validation_rows=validation_rows,
        )
    except (DomainError, OSError, ValueError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        with transaction.atomic():
            return _finish_job(
                job, status=TrainingJob.Status.FAILED, reason=f"Preparing the job failed: {reason}"
            )
    progress = _ProgressWriter(job.pk)
    outcome = run_local_job(
        job_dir=job_dir,
        on_progress=progress.on_progress,
        should_cancel=progress.should_cancel,
        timeout_s=float(settings.TENANTML_TRAINING_TIMEOUT_S),
        on_start=progress.on_start,
        # Every local job shares the platform's base-encoder export instead of redoing it.
        extra_env={
            "TENANTML_BASE_MODEL_CACHE": str(Path(settings.VAR_DIR) / "cache" / "base_models")
        },
    )
    if outcome.status != "succeeded":
        status = (
            TrainingJob.Status.CANCELLED
            if outcome.status == "cancelled"
            else TrainingJob.Status.FAILED
        )
        reason = outcome.failure_reason or (
            "Cancelled on request." if status == TrainingJob.Status.CANCELLED else "Failed."
        )
        with transaction.atomic():
            return _finish_job(job, status=status, reason=reason, outcome=outcome)
    artifact_uri = artifacts.put_directory(
        f"models/{model.tenant.slug}/{model.name}/jobs/{job.pk}", Path(outcome.model_dir)
    )
    return _complete_training(
        job=job, artifact_uri=artifact_uri, metrics=_metrics_of(outcome), outcome=outcome
    )


def _complete_training(*, job: TrainingJob, artifact_uri: str, metrics: dict, outcome=None):
    """A succeeded job's artifact becomes the next version: registered once (a re-run finds it),
    packaged for Triton, then promoted if the quality gate lets it."""
    version = ModelVersion.objects.filter(training_job=job).first() or register_version(
        model=job.model,
        actor="worker",
        training_job=job,
        artifact_uri=artifact_uri,
        metrics=metrics,
    )
    with transaction.atomic():
        _finish_job(job, status=TrainingJob.Status.SUCCEEDED, outcome=outcome)
        if outcome is None and metrics:
            TrainingJob.objects.filter(pk=job.pk).update(metrics=metrics)
    try:
        version = package_version(version=version, actor="worker")
    except (DomainError, OSError, ValueError):
        return job  # the version is marked failed with the reason; the training itself succeeded
    apply_quality_gate(version=version, actor="worker")
    job.refresh_from_db()
    return job


def launch_sagemaker_job(*, job: TrainingJob, backend=None) -> TrainingJob:
    """Launch a queued job as a SageMaker training job.

    The job is claimed (queued → launching) under a row lock, its dataset split and the training
    code are uploaded to the s3:// artifact store, and CreateTrainingJob is called (spaced at
    one launch a second, throttling retried with backoff). A launch still throttled after its
    retries puts the job back in the queue for the reconciler; any other refusal fails it with
    AWS's message. Without an execution role (SAGEMAKER_ROLE_ARN) the job fails saying so.
    """
    from models_registry.training import sagemaker

    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant", "dataset")
            .get(pk=job.pk)
        )
        if job.status != TrainingJob.Status.QUEUED:
            return job
        problem = _sagemaker_configuration_problem()
        if problem:
            _finish_job(job, status=TrainingJob.Status.FAILED, reason=problem)
        else:
            job.status = TrainingJob.Status.LAUNCHING
            job.attempts += 1
            job.started_at = job.heartbeat_at = timezone.now()
            job.save(update_fields=["status", "attempts", "started_at", "heartbeat_at"])
    if problem:
        raise TrainingBackendNotConfigured(problem, field="backend")

    backend = backend or sagemaker.default_backend()
    model = job.model
    bucket, _, store_prefix = settings.ARTIFACT_STORE.root.partition("/")
    prefix = "/".join(part for part in (store_prefix, "training", str(job.pk)) if part)
    try:
        train_rows, validation_rows = _training_rows(job.dataset)
        with tempfile.TemporaryDirectory(prefix="tenantml-sourcedir-") as scratch:
            from models_registry.training.sourcedir import build_sourcedir

            sourcedir = build_sourcedir(Path(scratch) / "sourcedir.tar.gz")
            uris = backend.upload_training_inputs(
                bucket=bucket,
                prefix=prefix,
                train_jsonl=_jsonl(train_rows),
                validation_jsonl=_jsonl(validation_rows),
                sourcedir=sourcedir.path,
            )
        launch = sagemaker.TrainingLaunch.for_tenant_job(
            tenant_slug=model.tenant.slug,
            model_name=model.name,
            job_id=job.pk,
            role_arn=settings.TENANTML_SAGEMAKER_ROLE_ARN,
            image_uri=sagemaker.training_image_uri(
                region=settings.TENANTML_AWS_REGION,
                instance_type=settings.TENANTML_SAGEMAKER_TRAINING_INSTANCE_TYPE,
            ),
            instance_type=settings.TENANTML_SAGEMAKER_TRAINING_INSTANCE_TYPE,
            train_s3_uri=uris["train"],
            validation_s3_uri=uris["validation"],
            output_s3_uri=uris["output"],
            sourcedir_s3_uri=uris["sourcedir"],
            max_runtime_s=int(settings.TENANTML_TRAINING_TIMEOUT_S),
            hyperparameters={**job.hyperparameters, "kind": model.kind},
        )
        arn = backend.launch(launch)
    except sagemaker.TrainingLaunchThrottled as exc:
        with transaction.atomic():
            TrainingJob.objects.filter(pk=job.pk).update(
                status=TrainingJob.Status.QUEUED, heartbeat_at=timezone.now()
            )
            record_event(
                kind="training.launch_throttled",
                severity="warning",
                message=f"Training job {job.pk}: {exc.message} It stays queued.",
                actor="worker",
                tenant=model.tenant,
            )
        raise
    except DomainError as exc:
        with transaction.atomic():
            job.refresh_from_db()
            _finish_job(job, status=TrainingJob.Status.FAILED, reason=exc.message)
        raise
    with transaction.atomic():
        TrainingJob.objects.filter(pk=job.pk).update(
            external_id=arn, status=TrainingJob.Status.RUNNING, heartbeat_at=timezone.now()
        )
        record_event(
            kind="training.launched",
            message=f"Training job {job.pk} for {model} launched on SageMaker: {launch.job_name}.",
            actor="worker",
            tenant=model.tenant,
            data={"job": job.pk, "arn": arn},
        )
    job.refresh_from_db()
    return job


def follow_sagemaker_job(*, job: TrainingJob, backend=None) -> TrainingJob:
    """Poll one SageMaker job (DescribeTrainingJob): progress while it runs; on success register
    the version from ``S3ModelArtifacts``; on failure or stop record AWS's reason."""
    from models_registry.training import sagemaker

    if job.backend != TrainingJob.Backend.SAGEMAKER or not job.external_id or job.is_terminal:
        return job
    backend = backend or sagemaker.default_backend()
    job_name = job.external_id.rsplit("/", 1)[-1]
    described = backend.describe(job_name)
    if not described.is_terminal:
        TrainingJob.objects.filter(pk=job.pk).update(
            progress_pct=described.progress_pct,
            heartbeat_at=timezone.now(),
            status=(
                TrainingJob.Status.RUNNING
                if described.status == "running"
                else TrainingJob.Status.LAUNCHING
            ),
        )
        job.refresh_from_db()
        return job
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=job.pk)
        )
        if job.is_terminal:
            return job
        if described.status != "succeeded":
            status = (
                TrainingJob.Status.CANCELLED
                if described.status == "cancelled"
                else TrainingJob.Status.FAILED
            )
            return _finish_job(
                job, status=status, reason=described.failure_reason or described.secondary_status
            )
    return _complete_training(
        job=job,
        artifact_uri=described.model_artifacts_s3_uri,
        # SageMaker names metrics after the regexes ("validation:macro_f1"); versions use the
        # kind's own names, as local jobs do.
        metrics={name.split(":", 1)[-1]: value for name, value in described.final_metrics.items()},
    )


def follow_sagemaker_jobs() -> int:
    """Poll every SageMaker job still in flight; returns how many were polled."""
    jobs = TrainingJob.objects.filter(
        backend=TrainingJob.Backend.SAGEMAKER,
        status__in=[TrainingJob.Status.LAUNCHING, TrainingJob.Status.RUNNING],
    ).exclude(external_id="")
    polled = 0
    for job in jobs.select_related("model__tenant"):
        follow_sagemaker_job(job=job)
        polled += 1
    return polled


def _sagemaker_configuration_problem() -> str:
    if not settings.TENANTML_SAGEMAKER_ROLE_ARN:
        return "SageMaker training is not configured (set SAGEMAKER_ROLE_ARN)."
    if settings.ARTIFACT_STORE.kind != "s3":
        return "SageMaker training needs an s3:// ARTIFACT_STORE for its inputs and outputs."
    return ""


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def reconcile_training_jobs(*, now: datetime | None = None) -> list[TrainingJob]:
    """Repair local jobs whose worker vanished and queued jobs whose message was lost.

    A running job with a stale heartbeat is left alone while its training process (the pid in
    ``external_id``) is alive; otherwise it is queued again if it has an attempt left, else
    failed with the last heartbeat in the reason. Returns the jobs it changed.
    """
    from models_registry.training.runner import process_alive

    now = now or timezone.now()
    changed: list[TrainingJob] = []
    stale_running = TrainingJob.objects.filter(
        backend=TrainingJob.Backend.LOCAL,
        status=TrainingJob.Status.RUNNING,
    ).filter(Q(heartbeat_at__lt=now - STALE_HEARTBEAT) | Q(heartbeat_at__isnull=True))
    for job_id in stale_running.values_list("pk", flat=True):
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(of=("self",))
                .select_related("model__tenant")
                .get(pk=job_id)
            )
            # Re-checked under the lock: the worker may have written a heartbeat meanwhile.
            if job.status != TrainingJob.Status.RUNNING or (
                job.heartbeat_at is not None and job.heartbeat_at >= now - STALE_HEARTBEAT
            ):
                continue
            pid = int(job.external_id) if job.external_id.isdigit() else None
            if pid is not None and process_alive(pid):
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
                _enqueue_training(job)
            else:
                _finish_job(
                    job,
                    status=TrainingJob.Status.FAILED,
                    reason=f"worker stopped while the job was running (last heartbeat {last})",
                    actor="reconciler",
                )
            changed.append(job)
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
            _enqueue_training(job)
            changed.append(job)
    return changed
