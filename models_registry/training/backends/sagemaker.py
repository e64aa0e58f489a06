"""The SageMaker training backend: a tenant's job as a SageMaker training job.

``launch`` uploads the job's split and the training code (``sourcedir.tar.gz`` holding the same
entry point a local job runs) under the s3:// artifact store and calls CreateTrainingJob through
the training client (``models_registry.training.sagemaker_client``: one launch a second across
every worker process, throttling retried), with the operator's warm-pool keep-alive; ``follow``
reads DescribeTrainingJob, and once the job's instances are provisioned whether it reused a warm
pool; ``stop`` sends StopTrainingJob to a job still in progress (a job already stopping or ended
is left alone, so the follower may ask again every pass). The job runs on SageMaker, never in a
worker, so a stale heartbeat never means its process was lost.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from models_registry.training.backends.base import (
    TrainingInputs,
    TrainingProgress,
    TrainingReport,
)
from models_registry.training.sagemaker_client import (
    SageMakerTrainingClient,
    TrainingBackendError,
    TrainingLaunch,
    TrainingStatus,
    default_client,
    training_image_uri,
)
from models_registry.training.sourcedir import build_sourcedir

if TYPE_CHECKING:
    from models_registry.models import TrainingJob

logger = logging.getLogger(__name__)


class SageMakerTrainingBackend:
    """Trains on SageMaker: launched once, then followed by polling until it ends."""

    name = "sagemaker"
    launch_task = "models_registry.tasks.launch_sagemaker_training"

    def __init__(self, client: SageMakerTrainingClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> SageMakerTrainingClient:
        # The process-wide client unless one was given, so launches share one rate limiter.
        return self._client or default_client()

    def configuration_problem(self) -> str:
        if not settings.TENANTML_SAGEMAKER_ROLE_ARN:
            return "SageMaker training is not configured (set SAGEMAKER_ROLE_ARN)."
        if settings.ARTIFACT_STORE.kind != "s3":
            return "SageMaker training needs an s3:// ARTIFACT_STORE for its inputs and outputs."
        return ""

    def launch(
        self, *, job: TrainingJob, inputs: TrainingInputs, progress: TrainingProgress
    ) -> TrainingReport:
        """Upload the inputs and create the training job; it is running once this returns."""
        model = job.model
        bucket, _, store_prefix = settings.ARTIFACT_STORE.root.partition("/")
        prefix = "/".join(part for part in (store_prefix, "training", str(job.pk)) if part)
        with tempfile.TemporaryDirectory(prefix="tenantml-sourcedir-") as scratch:
            sourcedir = build_sourcedir(Path(scratch) / "sourcedir.tar.gz")
            uris = self.client.upload_training_inputs(
                bucket=bucket,
                prefix=prefix,
                train_jsonl=_jsonl(inputs.train_rows),
                validation_jsonl=_jsonl(inputs.validation_rows),
                sourcedir=sourcedir.path,
            )
        launch = TrainingLaunch.for_tenant_job(
            tenant_slug=model.tenant.slug,
            model_name=model.name,
            job_id=job.pk,
            role_arn=settings.TENANTML_SAGEMAKER_ROLE_ARN,
            image_uri=training_image_uri(
                region=settings.TENANTML_AWS_REGION,
                instance_type=settings.TENANTML_SAGEMAKER_TRAINING_INSTANCE_TYPE,
            ),
            instance_type=settings.TENANTML_SAGEMAKER_TRAINING_INSTANCE_TYPE,
            train_s3_uri=uris["train"],
            validation_s3_uri=uris["validation"],
            output_s3_uri=uris["output"],
            sourcedir_s3_uri=uris["sourcedir"],
            max_runtime_s=int(settings.TENANTML_TRAINING_TIMEOUT_S),
            # The same for every launch, so that each job matches the pool the last one left.
            warm_pool_keep_alive_s=int(settings.TENANTML_SAGEMAKER_TRAINING_WARM_POOL_S),
            hyperparameters=inputs.hyperparameters,
        )
        arn = self.client.launch(launch)
        return TrainingReport(
            state="running", external_id=arn, summary=f"launched on SageMaker: {launch.job_name}"
        )

    def follow(self, *, job: TrainingJob) -> TrainingReport | None:
        """DescribeTrainingJob in the platform's words; a success carries ``S3ModelArtifacts``."""
        if job.batch_name:
            return None  # its batch is described once for all its jobs, by the batch follower
        described = self.client.describe(_job_name(job))
        reused = self._warm_pool_reused(job, described)
        if not described.is_terminal:
            return TrainingReport(
                state="running" if described.status == "running" else "launching",
                progress_pct=described.progress_pct,
                warm_pool_reused=reused,
            )
        if described.status != "succeeded":
            return TrainingReport(
                state=described.status,
                failure_reason=described.failure_reason or described.secondary_status,
                warm_pool_reused=reused,
            )
        return TrainingReport(
            state="succeeded",
            warm_pool_reused=reused,
            artifact_uri=described.model_artifacts_s3_uri or "",
            # SageMaker names metrics after the regexes ("validation:macro_f1"); versions use
            # the kind's own names, as local jobs do.
            metrics={
                name.split(":", 1)[-1]: value for name, value in described.final_metrics.items()
            },
        )

    def stop(self, *, job: TrainingJob) -> None:
        if job.batch_name:
            return  # one job's cancel discards its result; its batch trains on for the others
        self.client.stop(_job_name(job))

    def _warm_pool_reused(self, job: TrainingJob, described: TrainingStatus) -> bool | None:
        """Whether the job reused a warm pool, asked once (None: not asked, or not known yet)."""
        if job.warm_pool_reused is not None:
            return None  # recorded already
        try:
            return self.client.warm_pool_reused(described, _job_name(job))
        except TrainingBackendError as error:
            # Only the record of a reuse is missing; the next pass asks again.
            logger.warning("Training job %s: warm-pool reuse not known yet: %s", job.pk, error)
            return None

    def process_lost(self, *, job: TrainingJob) -> bool:
        return False

    def release(self, *, job: TrainingJob, keep_uris: frozenset[str], last_of_batch: bool) -> int:
        """Delete the job's S3 objects (its uploaded split and code, and an output no version
        was registered from: a cancelled or failed job's; a held-back version's stays) but the
        objects in ``keep_uris``. A batched job's are its own inputs and outputs in the batch's
        prefix, and the batch's shared manifest, code and outputs once its last job ends."""
        if settings.ARTIFACT_STORE.kind != "s3":
            return 0
        bucket, _, store_prefix = settings.ARTIFACT_STORE.root.partition("/")
        if not job.batch_name:
            prefix = "/".join(part for part in (store_prefix, "training", str(job.pk)) if part)
            return self.client.delete_prefix(
                bucket=bucket, prefix=prefix + "/", keep_uris=keep_uris
            )
        batch = "/".join(
            part for part in (store_prefix, "training", "batches", job.batch_name) if part
        )
        prefixes = (
            [f"{batch}/"]
            if last_of_batch
            else [f"{batch}/input/{job.pk}/", f"{batch}/output/{job.pk}/"]
        )
        return sum(
            self.client.delete_prefix(bucket=bucket, prefix=prefix, keep_uris=keep_uris)
            for prefix in prefixes
        )


def _job_name(job: TrainingJob) -> str:
    # external_id holds the training job's ARN; its name is the last path segment.
    return job.external_id.rsplit("/", 1)[-1]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
