"""Writes for batch training: queued jobs of one kind trained together in one multi-instance
training job, and each job's own outcome from it.

SageMaker accepts about one CreateTrainingJob a second per account, so a burst of onboardings
would wait in line for launches. When the launch of a queued SageMaker job finds at least
``TRAINING_BATCH_MIN_JOBS`` queued jobs of its kind and hyperparameters (itself included), it
claims them (``select_for_update(skip_locked=True)``: two workers never take the same job; a job
another worker holds is left to it) and launches them as one batch (``batching``: similar sizes
together, K hosts, each host's share balanced longest-first), one launch for them all. Every
claimed job records the batch's name (``batch_name``, also the training job's name) and its host
(``batch_host``) and goes launching → running with the others. Fewer waiting jobs launch one by
one, as before (``training.launch_training_job``).

The follower describes each batch once per pass, whatever the number of its jobs, and reads the
results its hosts have written so far, so a tenant whose task is done does not wait for the rest:
a trained task's artifact is registered as that job's version and handed to the packaging task and
the quality gate (``training.hand_to_packaging``), exactly as a job trained alone; a failed task
fails only its own job, with the task's reason. When the batch ends, a job its task never reported
on fails (or is cancelled, if the batch was stopped) with the batch's reason.

Cancelling one job of a running batch discards that job's result (it ends ``cancelled`` at the
next pass and nothing it trained is registered) while the batch trains on for the others; when
every job still waiting on a batch is cancelled, the batch is stopped (StopTrainingJob).

Every step survives a lost worker: jobs are claimed in one transaction before anything is
launched; a batch whose claiming worker died before CreateTrainingJob (no such training job after
``STALE_QUEUED``) has its jobs queued again by ``reconcile_training_batches``, and one created
just before the worker died is found by its deterministic name and followed like any other.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from config.queue import send_task_on_commit
from models_registry.exceptions import TrainingLaunchDeferred
from models_registry.models import TrainingJob
from models_registry.services import training
from models_registry.training import batching
from models_registry.training.backends.base import TrainingReport, training_backend_for
from models_registry.training.backends.batches import (
    BatchReport,
    BatchTask,
    BatchTrainingBackend,
    TaskResult,
    batch_backend,
)

logger = logging.getLogger(__name__)

BATCH_NAME_PREFIX = "tml-batch"
# How many of a kind's oldest queued jobs one launch plans over: a few batches' worth.
SCAN_BATCHES = 4
LAUNCHED = (TrainingJob.Status.LAUNCHING, TrainingJob.Status.RUNNING)


def batch_limits() -> batching.BatchLimits:
    """The operator's batching settings."""
    return batching.BatchLimits(
        min_jobs=settings.TENANTML_TRAINING_BATCH_MIN_JOBS,
        max_instances=settings.TENANTML_TRAINING_BATCH_MAX_INSTANCES,
        tasks_per_instance=settings.TENANTML_TRAINING_BATCH_TASKS_PER_INSTANCE,
    )


def batch_name(job_ids: Iterable[int]) -> str:
    """The batch's training-job name: the same jobs give the same name, so a re-run launch finds
    the training job it created instead of creating a second one."""
    ids = sorted(job_ids)
    digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:8]
    return f"{BATCH_NAME_PREFIX}-{ids[0]}-{digest}"


def launch_training_job(*, job_id: int) -> TrainingJob:
    """Launch a queued job: in a batch with the other queued jobs of its kind when enough wait,
    else on its own."""
    job = launch_in_batch(job_id=job_id)
    return job if job is not None else training.launch_training_job(job_id=job_id)


def launch_in_batch(
    *, job_id: int, backend: BatchTrainingBackend | None = None
) -> TrainingJob | None:
    """Claim the queued job with the others of its batch and launch the batch; the job, or None
    when it is to launch on its own (too few wait, batching is off, or it is not queued)."""
    limits = batch_limits()
    job = TrainingJob.objects.select_related("model__tenant").get(pk=job_id)
    if job.batch_name and job.status != TrainingJob.Status.QUEUED:
        return job  # an earlier launch took it into its batch; this is its own message
    if job.batch_name:
        # Queued again after its batch was lost: whatever launches it next says where.
        TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.QUEUED).update(
            batch_name="", batch_host=""
        )
    if (
        not limits.enabled
        or job.status != TrainingJob.Status.QUEUED
        or job.cancel_requested
        or job.attempts >= training.MAX_TRAINING_ATTEMPTS
    ):
        return None
    backend = backend or batch_backend(job.backend)
    if backend is None or backend.configuration_problem():
        return None  # the single launch fails the job with the backend's reason
    plan = _plan_for(job, limits=limits)
    if plan is None:
        return None
    claimed = _claim(plan, job_id=job.pk, limits=limits, now=timezone.now())
    if claimed is None:
        return None
    name, plan = claimed
    _launch(name=name, plan=plan, backend=backend)
    return TrainingJob.objects.get(pk=job_id)


def _plan_for(job: TrainingJob, *, limits: batching.BatchLimits) -> batching.BatchPlan | None:
    """The batch ``job`` belongs in among the oldest queued jobs of its backend and kind."""
    candidates = list(
        TrainingJob.objects.filter(
            backend=job.backend,
            status=TrainingJob.Status.QUEUED,
            cancel_requested=False,
            attempts__lt=training.MAX_TRAINING_ATTEMPTS,
            model__kind=job.model.kind,
        )
        .select_related("dataset")
        .order_by("created_at", "pk")[: SCAN_BATCHES * limits.capacity]
    )
    if job.pk not in {candidate.pk for candidate in candidates}:
        candidates.append(TrainingJob.objects.select_related("dataset").get(pk=job.pk))
    tasks = [
        batching.QueuedTask(
            job_id=candidate.pk,
            kind=job.model.kind,
            size=max(1, candidate.dataset.rows),
            hyperparameters=candidate.hyperparameters,
        )
        for candidate in candidates
    ]
    for plan in batching.plan_batches(tasks, limits=limits):
        if job.pk in plan.job_ids:
            return plan
    return None


def _claim(
    plan: batching.BatchPlan, *, job_id: int, limits: batching.BatchLimits, now: datetime
) -> tuple[str, batching.BatchPlan] | None:
    """Move the plan's jobs that no other worker holds to launching, in one batch; its name and
    the plan of the jobs really claimed, or None when ``job_id`` itself was not claimed."""
    with transaction.atomic():
        locked = list(
            TrainingJob.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("model__tenant")
            .filter(pk__in=plan.job_ids, status=TrainingJob.Status.QUEUED, cancel_requested=False)
            .order_by("pk")
        )
        claimed = {job.pk for job in locked}
        if job_id not in claimed or len(claimed) < 2:
            return None
        if len(claimed) < len(plan.tasks):
            # Another worker took some meanwhile: balance what is left over the hosts again.
            plan = batching.plan_one(
                [task for task in plan.tasks if task.job_id in claimed],
                limits=limits,
                kind=plan.kind,
            )
        name = batch_name(claimed)
        for job in locked:
            job.status = TrainingJob.Status.LAUNCHING
            job.attempts += 1
            job.started_at = now
            job.heartbeat_at = now
            job.progress_pct = 0
            job.external_id = ""
            job.batch_name = name
            job.batch_host = plan.host_of(job.pk)
            job.save(
                update_fields=[
                    "status",
                    "attempts",
                    "started_at",
                    "heartbeat_at",
                    "progress_pct",
                    "external_id",
                    "batch_name",
                    "batch_host",
                ]
            )
            record_event(
                kind="training.started",
                message=(
                    f"Training job {job.pk} for {job.model} started (attempt {job.attempts}) in "
                    f"batch {name}, on {job.batch_host} of {plan.instance_count}, with "
                    f"{len(claimed) - 1} other {plan.kind} jobs."
                ),
                actor="worker",
                tenant=job.model.tenant,
                data={
                    "job": job.pk,
                    "attempt": job.attempts,
                    "batch": name,
                    "host": job.batch_host,
                },
            )
    return name, plan


def _launch(*, name: str, plan: batching.BatchPlan, backend: BatchTrainingBackend) -> None:
    """Read the claimed jobs' inputs (a job whose dataset cannot be read fails alone) and launch
    the batch; record what the backend reports."""
    jobs = TrainingJob.objects.select_related("model__tenant", "dataset").filter(
        batch_name=name, status=TrainingJob.Status.LAUNCHING
    )
    tasks: dict[int, BatchTask] = {}
    for job in jobs:
        try:
            inputs = training.training_inputs(job)
        except (DomainError, OSError, ValueError) as exc:
            reason = getattr(exc, "message", None) or str(exc)
            _finish_if_waiting(
                job.pk,
                name=name,
                status=TrainingJob.Status.FAILED,
                reason=f"Preparing the job failed: {reason}",
            )
            continue
        tasks[job.pk] = BatchTask(
            job_id=job.pk,
            tenant_slug=job.model.tenant.slug,
            model_name=job.model.name,
            train_rows=inputs.train_rows,
            validation_rows=inputs.validation_rows,
        )
    if not tasks:
        return
    if set(tasks) != set(plan.job_ids):
        # Those hosts train fewer tasks; their names stay as the claimed jobs recorded them.
        plan = replace(
            plan, hosts=tuple(tuple(t for t in host if t.job_id in tasks) for host in plan.hosts)
        )
    try:
        report = backend.launch_batch(
            name=name, plan=plan, tasks=tasks, progress=_BatchProgress(name)
        )
    except TrainingLaunchDeferred as exc:
        _requeue(name=name, reason=f"{exc.message} It stays queued.", kind="launch_throttled")
        raise
    except DomainError as exc:
        for job_id in tasks:
            _finish_if_waiting(
                job_id, name=name, status=TrainingJob.Status.FAILED, reason=exc.message
            )
        raise
    _record_batch_report(name=name, report=report, launched=True)


def _finish_if_waiting(job_id: int, *, name: str, status: str, reason: str) -> None:
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("model__tenant")
            .get(pk=job_id)
        )
        if job.status in LAUNCHED and job.batch_name == name:
            training.finish_job(job, status=status, reason=reason, data={"batch": name})


def _requeue(
    *, name: str, reason: str, kind: str, now: datetime | None = None
) -> list[TrainingJob]:
    """Put a batch's launching jobs back in the queue (a cancelled one ends cancelled); the jobs.

    ``kind`` ``launch_throttled``: the launch never ran, so it is no attempt; ``requeued``: the
    worker was lost before the launch, which counts as one (as for a job launched alone).
    """
    now = now or timezone.now()
    changed = []
    waiting = TrainingJob.objects.filter(batch_name=name, status=TrainingJob.Status.LAUNCHING)
    for job_id in waiting.values_list("pk", flat=True):
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(of=("self",))
                .select_related("model__tenant")
                .get(pk=job_id)
            )
            if job.status != TrainingJob.Status.LAUNCHING or job.batch_name != name:
                continue
            if job.cancel_requested:
                training.finish_job(
                    job,
                    status=TrainingJob.Status.CANCELLED,
                    reason="Cancelled before start.",
                    data={"batch": name},
                )
                changed.append(job)
                continue
            job.status = TrainingJob.Status.QUEUED
            job.batch_name = job.batch_host = ""
            job.heartbeat_at = now
            job.progress_pct = 0
            fields = ["status", "batch_name", "batch_host", "heartbeat_at", "progress_pct"]
            if kind == "launch_throttled":
                job.attempts = max(0, job.attempts - 1)
                fields.append("attempts")
            job.save(update_fields=fields)
            record_event(
                kind=f"training.{kind}",
                severity="warning",
                message=f"Training job {job.pk} (batch {name}): {reason}",
                actor="worker" if kind == "launch_throttled" else "reconciler",
                tenant=job.model.tenant,
                data={"job": job.pk, "batch": name, "attempts": job.attempts},
            )
            if kind != "launch_throttled":
                send_task_on_commit(training_backend_for(job).launch_task, job.pk)
            changed.append(job)
    return changed


def _record_batch_report(*, name: str, report: BatchReport, launched: bool) -> None:
    """Fan a batch's report out to its waiting jobs, each in its own transaction: a reported
    task's outcome (trained → registered and sent to packaging; failed → failed with its
    reason), the batch's end for a job without a result, else its progress."""
    waiting = TrainingJob.objects.filter(batch_name=name, status__in=LAUNCHED).order_by("pk")
    for job_id in waiting.values_list("pk", flat=True):
        with transaction.atomic():
            job = (
                TrainingJob.objects.select_for_update(of=("self",))
                .select_related("model__tenant")
                .get(pk=job_id)
            )
            if job.status not in LAUNCHED or job.batch_name != name:
                continue  # recorded by another pass meanwhile
            result = report.results.get(job.pk)
            if job.cancel_requested:
                training.finish_job(
                    job,
                    status=TrainingJob.Status.CANCELLED,
                    reason=(
                        f"Cancelled on request; batch {name} trains on for its other jobs and "
                        "this job's result is discarded."
                    ),
                    report=TrainingReport(state="cancelled", external_id=report.external_id),
                    data={"batch": name},
                )
            elif result is not None:
                _record_task_result(job, result=result, name=name, external_id=report.external_id)
            elif report.is_terminal:
                status = (
                    TrainingJob.Status.CANCELLED
                    if report.state == "cancelled"
                    else TrainingJob.Status.FAILED
                )
                training.finish_job(
                    job,
                    status=status,
                    reason=(
                        f"Batch {name} {report.state} without a result for this job"
                        + (f": {report.failure_reason}" if report.failure_reason else ".")
                    ),
                    report=TrainingReport(state=status, external_id=report.external_id),
                    data={"batch": name},
                )
            else:
                _record_progress(job, report=report, launched=launched)


def _record_task_result(
    job: TrainingJob, *, result: TaskResult, name: str, external_id: str
) -> None:
    if result.state == "succeeded":
        training.hand_to_packaging(
            job,
            report=TrainingReport(
                state="succeeded",
                external_id=external_id,
                artifact_uri=result.artifact_uri,
                metrics=result.metrics,
            ),
        )
        return
    training.finish_job(
        job,
        status=TrainingJob.Status.FAILED,
        reason=result.failure_reason,
        report=TrainingReport(state="failed", external_id=external_id, metrics=result.metrics),
        data={"batch": name, "host": result.host},
    )


def _record_progress(job: TrainingJob, *, report: BatchReport, launched: bool) -> None:
    job.status = (
        TrainingJob.Status.RUNNING if report.state == "running" else TrainingJob.Status.LAUNCHING
    )
    job.heartbeat_at = timezone.now()
    fields = ["status", "heartbeat_at"]
    if report.external_id:
        job.external_id = report.external_id
        fields.append("external_id")
    if report.progress_pct is not None:
        job.progress_pct = report.progress_pct
        fields.append("progress_pct")
    job.save(update_fields=fields)
    if launched:
        record_event(
            kind="training.launched",
            message=(
                f"Training job {job.pk} for {job.model} {report.summary or 'launched'}; it "
                f"trains on {job.batch_host}."
            ),
            actor="worker",
            tenant=job.model.tenant,
            data={"job": job.pk, "external_id": report.external_id, "batch": job.batch_name},
        )


def follow_training_batches(*, backend: BatchTrainingBackend | None = None) -> int:
    """Follow every batch in flight, one status call each (on ``backend`` where given, else on
    each batch's own); returns how many a backend reported on."""
    in_flight = (
        TrainingJob.objects.filter(status__in=LAUNCHED)
        .exclude(batch_name="")
        .values_list("batch_name", "backend")
        .distinct()
    )
    followed = 0
    for name, backend_name in sorted(set(in_flight)):
        batches = backend or batch_backend(backend_name)
        if batches is None:
            continue
        try:
            followed += _follow_batch(name=name, backend=batches)
        except DomainError as exc:
            # One batch's backend error must not keep the others from being followed.
            logger.warning("Batch %s not followed this pass: %s", name, exc)
    return followed


def _follow_batch(*, name: str, backend: BatchTrainingBackend) -> bool:
    waiting = dict(
        TrainingJob.objects.filter(batch_name=name, status__in=LAUNCHED).values_list(
            "pk", "cancel_requested"
        )
    )
    if not waiting:
        return False
    report = backend.follow_batch(name=name, waiting=sorted(waiting))
    if report is None or report.missing:
        return False  # its worker reports; or not launched yet (the reconciler judges that)
    if not report.is_terminal and all(waiting.values()):
        # Every job still waiting on it was cancelled: nobody needs the batch any more.
        backend.stop_batch(name=name)
    _record_batch_report(name=name, report=report, launched=False)
    return True


def reconcile_training_batches(
    *, now: datetime | None = None, backend: BatchTrainingBackend | None = None
) -> list[TrainingJob]:
    """Repair batches whose claiming worker was lost before the launch was recorded: one the
    backend has (created just before the worker died) is followed from now on; one it has not,
    ``STALE_QUEUED`` after the claim, has its jobs queued again. Returns the jobs it changed."""
    now = now or timezone.now()
    stale = (
        TrainingJob.objects.filter(status=TrainingJob.Status.LAUNCHING, external_id="")
        .exclude(batch_name="")
        .filter(Q(heartbeat_at__lt=now - training.STALE_QUEUED) | Q(heartbeat_at__isnull=True))
    )
    changed: list[TrainingJob] = []
    for name, backend_name in sorted(set(stale.values_list("batch_name", "backend"))):
        batches = backend or batch_backend(backend_name)
        if batches is None:
            continue
        waiting = list(
            TrainingJob.objects.filter(batch_name=name, status__in=LAUNCHED).values_list(
                "pk", flat=True
            )
        )
        try:
            report = batches.follow_batch(name=name, waiting=waiting)
        except DomainError as exc:
            logger.warning("Batch %s not reconciled this pass: %s", name, exc)
            continue
        if report is None:
            continue  # trains in a worker: the training reconciler judges its processes
        if not report.missing:
            _record_batch_report(name=name, report=report, launched=False)
            changed += TrainingJob.objects.filter(pk__in=waiting)
            continue
        changed += _requeue(
            name=name,
            reason="the worker stopped before launching its batch; queued again.",
            kind="requeued",
            now=now,
        )
    return changed


class _BatchProgress:
    """``BatchProgress`` for a batch training in this worker: its processes and heartbeats."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_heartbeat = time.monotonic()

    def on_start(self, host: str, external_id: str) -> None:
        # Recorded at once so the reconciler can tell a live training process from a lost one.
        TrainingJob.objects.filter(
            batch_name=self.name, batch_host=host, status__in=LAUNCHED
        ).update(
            external_id=external_id, status=TrainingJob.Status.RUNNING, heartbeat_at=timezone.now()
        )

    def should_cancel(self) -> bool:
        waiting = TrainingJob.objects.filter(batch_name=self.name, status__in=LAUNCHED)
        now = time.monotonic()
        if now - self.last_heartbeat >= training.HEARTBEAT_INTERVAL_S:
            self.last_heartbeat = now
            waiting.update(heartbeat_at=timezone.now())
        # One cancelled job does not stop the others' training; all of them cancelled does.
        return waiting.exists() and not waiting.filter(cancel_requested=False).exists()
