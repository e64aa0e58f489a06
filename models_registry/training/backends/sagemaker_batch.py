"""The SageMaker batch backend: a batch of tenant jobs as one multi-instance SageMaker training job.

Everything lives under ``<s3 artifact store>/training/batches/<batch name>/``:

- ``input/``: the batch channel (``manifest.json`` and each task's ``<job id>/train.jsonl`` and
  ``validation.jsonl``), one ``S3Prefix`` channel named ``batch``, ``FullyReplicated`` so every
  instance has the manifest and reads the inputs of its own tasks (per-tenant datasets are small);
- ``code/sourcedir.tar.gz``: the same training code a single job runs; the program is
  ``train_batch.py`` (``batch_entrypoint``);
- ``output/<job id>/model.tar.gz`` and ``output/<job id>/result.json``: written by the host that
  trained the task, as soon as it ends (SageMaker's own ``model.tar.gz`` under ``sagemaker/`` holds
  nothing the platform reads).

AWS calls: ``launch_batch`` PutObject for the manifest and inputs, PutObject (multipart as needed)
for the code, then one CreateTrainingJob with ``InstanceCount`` K through the training client (its
launch-rate limit and throttling retries apply, and the batch's deterministic name makes a
re-delivered launch find the job it created); ``follow_batch`` one DescribeTrainingJob and one
ListObjectsV2 per batch, plus a GetObject for each result not read before; ``stop_batch``
StopTrainingJob.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from config import aws
from models_registry.training import batching
from models_registry.training.backends.base import training_backend
from models_registry.training.backends.batches import (
    BatchProgress,
    BatchReport,
    BatchTask,
    TaskResult,
    task_result,
)
from models_registry.training.sagemaker_client import (
    SageMakerTrainingClient,
    TrainingBackendError,
    TrainingLaunch,
    default_client,
    training_image_uri,
)
from models_registry.training.sourcedir import build_sourcedir

BATCH_CHANNEL = "batch"
BATCH_PROGRAM = "train_batch.py"


@dataclass(frozen=True)
class BatchTrainingLaunch(TrainingLaunch):
    """A CreateTrainingJob whose only input is the batch channel (manifest and every task's data).

    ``train_s3_uri`` and ``validation_s3_uri`` name the batch channel too: the single-job request
    they shape is replaced by the one channel here.
    """

    def create_request(self) -> dict[str, Any]:
        request = super().create_request()
        request["InputDataConfig"] = [
            {
                "ChannelName": BATCH_CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": self.train_s3_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "application/jsonlines",
                "InputMode": "File",
            }
        ]
        return request


@dataclass(frozen=True)
class BatchLocation:
    """Where one batch's inputs, code and outputs live in S3."""

    bucket: str
    prefix: str

    @classmethod
    def for_batch(cls, name: str) -> BatchLocation:
        bucket, _, store_prefix = settings.ARTIFACT_STORE.root.partition("/")
        parts = (store_prefix, "training", "batches", name)
        return cls(bucket=bucket, prefix="/".join(part for part in parts if part))

    def key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


class SageMakerBatchBackend:
    """Trains a batch as one multi-instance SageMaker training job, followed by polling."""

    name = "sagemaker"

    def __init__(self, client: SageMakerTrainingClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> SageMakerTrainingClient:
        # The process-wide client unless one was given, so batches and single jobs share one
        # launch-rate limiter.
        return self._client or default_client()

    def configuration_problem(self) -> str:
        return training_backend("sagemaker").configuration_problem()

    def launch_batch(
        self,
        *,
        name: str,
        plan: batching.BatchPlan,
        tasks: Mapping[int, BatchTask],
        progress: BatchProgress,
    ) -> BatchReport:
        """Upload the manifest, the tasks' inputs and the code; create the training job."""
        where = BatchLocation.for_batch(name)
        document = batching.manifest(batch_name=name, plan=plan, output_uri=where.uri("output")) | {
            "region": settings.TENANTML_AWS_REGION
        }
        s3 = self.client.s3_client
        try:
            s3.put_object(
                Bucket=where.bucket,
                Key=where.key("input", batching.MANIFEST_FILE),
                Body=json.dumps(document, indent=2).encode(),
                ContentType="application/json",
            )
            for job_id, task in tasks.items():
                for file_name, rows in zip(
                    batching.TASK_FILES, (task.train_rows, task.validation_rows), strict=True
                ):
                    s3.put_object(
                        Bucket=where.bucket,
                        Key=where.key("input", str(job_id), file_name),
                        Body=_jsonl(rows),
                        ContentType="application/jsonlines",
                    )
            with tempfile.TemporaryDirectory(prefix="tenantml-sourcedir-") as scratch:
                sourcedir = build_sourcedir(Path(scratch) / "sourcedir.tar.gz")
                s3.upload_file(
                    str(sourcedir.path), where.bucket, where.key("code", "sourcedir.tar.gz")
                )
        except ClientError as error:
            raise TrainingBackendError(
                f"S3 upload failed ({aws.error_code(error) or 'error'}): {aws.error_message(error)}"
            ) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"S3 upload failed: {error}") from error
        instance_type = settings.TENANTML_SAGEMAKER_TRAINING_INSTANCE_TYPE
        busiest = max(len(host) for host in plan.hosts)
        launch = BatchTrainingLaunch(
            job_name=name,
            role_arn=settings.TENANTML_SAGEMAKER_ROLE_ARN,
            image_uri=training_image_uri(
                region=settings.TENANTML_AWS_REGION, instance_type=instance_type
            ),
            train_s3_uri=where.uri("input") + "/",
            validation_s3_uri=where.uri("input") + "/",
            output_s3_uri=where.uri("sagemaker") + "/",
            sourcedir_s3_uri=where.uri("code", "sourcedir.tar.gz"),
            instance_type=instance_type,
            instance_count=plan.instance_count,
            # Each host trains its tasks one after another, each within the training timeout.
            max_runtime_s=int(settings.TENANTML_TRAINING_TIMEOUT_S) * busiest,
            entry_point=BATCH_PROGRAM,
            hyperparameters={"kind": plan.kind},
            tags={"batch": name, "kind": plan.kind, "jobs": str(len(plan.tasks))},
        )
        arn = self.client.launch(launch)
        return BatchReport(
            state="running",
            external_id=arn,
            summary=(
                f"launched on SageMaker as {name}: {len(plan.tasks)} jobs on "
                f"{plan.instance_count} instances"
            ),
        )

    def follow_batch(self, *, name: str, waiting: Sequence[int]) -> BatchReport:
        """One DescribeTrainingJob, then the results of ``waiting`` jobs written so far."""
        try:
            described = self.client.describe(name)
        except TrainingBackendError as error:
            if _is_missing(error):
                return BatchReport(state="launching", missing=True)
            raise
        # Read after describing: once the job has ended, every result it wrote is listed.
        results = self._results(BatchLocation.for_batch(name), waiting=set(waiting))
        if not described.is_terminal:
            return BatchReport(
                state="running" if described.status == "running" else "launching",
                progress_pct=described.progress_pct,
                results=results,
            )
        return BatchReport(
            state=described.status,
            progress_pct=100,
            results=results,
            failure_reason=described.failure_reason or described.secondary_status,
        )

    def stop_batch(self, *, name: str) -> None:
        self.client.stop(name)

    def _results(self, where: BatchLocation, *, waiting: set[int]) -> dict[int, TaskResult]:
        s3 = self.client.s3_client
        results: dict[int, TaskResult] = {}
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=where.bucket, Prefix=where.key("output") + "/"
            )
            for page in pages:
                for item in page.get("Contents") or []:
                    job, _, file_name = item["Key"][len(where.key("output")) + 1 :].partition("/")
                    if file_name != batching.RESULT_FILE or not job.isdigit():
                        continue
                    if int(job) not in waiting:
                        continue  # recorded already
                    body = s3.get_object(Bucket=where.bucket, Key=item["Key"])["Body"].read()
                    try:
                        document = json.loads(body)
                    except ValueError:
                        document = None
                    results[int(job)] = task_result(
                        job_id=int(job),
                        document=document,
                        artifact_uri=where.uri("output", job, batching.MODEL_ARCHIVE),
                    )
        except ClientError as error:
            raise TrainingBackendError(
                f"Reading the batch's results failed ({aws.error_code(error) or 'error'}): "
                f"{aws.error_message(error)}"
            ) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"Reading the batch's results failed: {error}") from error
        return results


def _is_missing(error: TrainingBackendError) -> bool:
    """Whether DescribeTrainingJob said there is no such job (it was never created)."""
    cause = error.__cause__
    if not isinstance(cause, ClientError):
        return False
    code, message = aws.error_code(cause), aws.error_message(cause).lower()
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code == "ValidationException" and ("not found" in message or "could not find" in message)
    )


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
