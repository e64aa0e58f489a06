"""Writes for what ended training jobs leave in the cloud: their uploaded splits and code, and
outputs no version was registered from (a cancelled or failed job's), deleted once the job has
ended, so nothing the platform created keeps billing.

The training reconciler runs ``release_ended_jobs`` every pass. A job is released once: its
``resources_released_at`` is set in the same transaction that saw the deletion succeed, and a
deletion that failed is retried by the next pass. An artifact a version refers to is never
deleted, whatever became of the version (held back by the quality gate, retired).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from models_registry.models import ModelVersion, TrainingJob
from models_registry.training.backends.base import TrainingBackend, training_backend_for

logger = logging.getLogger(__name__)

# Released after this long, so a job's end is final (its packaging has taken the artifact).
RELEASE_AFTER = timedelta(minutes=2)
# At most this many jobs a pass; the next pass takes the rest.
RELEASE_BATCH = 100


def release_ended_jobs(
    *,
    now: datetime | None = None,
    limit: int = RELEASE_BATCH,
    backend: TrainingBackend | None = None,
) -> list[int]:
    """Delete what ended jobs left where they trained (through ``backend``, else each job's
    own); the ids of the jobs released."""
    now = now or timezone.now()
    candidates = list(
        TrainingJob.objects.filter(
            status__in=TrainingJob.TERMINAL_STATUSES,
            resources_released_at__isnull=True,
            finished_at__lt=now - RELEASE_AFTER,
        )
        .order_by("finished_at")
        .values_list("pk", flat=True)[:limit]
    )
    released = []
    for job_id in candidates:
        try:
            if _release(job_id=job_id, now=now, backend=backend):
                released.append(job_id)
        except DomainError as exc:
            logger.warning("Releasing training job %s's resources failed: %s", job_id, exc.message)
    return released


def _release(*, job_id: int, now: datetime, backend: TrainingBackend | None) -> bool:
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("model__tenant")
            .filter(pk=job_id, resources_released_at__isnull=True)
            .first()
        )
        if job is None:
            return False  # another pass has it
        keep = frozenset(
            ModelVersion.objects.filter(model_id=job.model_id)
            .exclude(artifact_uri="")
            .values_list("artifact_uri", flat=True)
        )
        last_of_batch = bool(job.batch_name) and not (
            TrainingJob.objects.filter(
                batch_name=job.batch_name, resources_released_at__isnull=True
            )
            .exclude(pk=job.pk)
            .exists()
        )
        if last_of_batch:
            # The batch's shared prefix goes: every job's registered artifact in it stays.
            keep = keep | frozenset(
                ModelVersion.objects.filter(model__training_jobs__batch_name=job.batch_name)
                .exclude(artifact_uri="")
                .values_list("artifact_uri", flat=True)
            )
        deleted = (backend or training_backend_for(job)).release(
            job=job, keep_uris=keep, last_of_batch=last_of_batch
        )
        job.resources_released_at = now
        job.save(update_fields=["resources_released_at"])
        if deleted:
            record_event(
                kind="training.resources_released",
                message=(
                    f"Training job {job.pk} for {job.model} ({job.status}): {deleted} object(s) "
                    "it left where it trained deleted."
                ),
                actor="reconciler",
                tenant=job.model.tenant,
                data={"job": job.pk, "deleted": deleted},
            )
    return True
