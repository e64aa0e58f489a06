"""SageMaker training client: launch, watch and stop tenant training jobs with plain boto3.

This module owns everything that talks to the SageMaker training API and to the S3 prefix a job
reads its inputs from. It is ORM-free on purpose: plain dataclasses in (``TrainingLaunch``), plain
dataclasses out (``TrainingStatus``), so the ``sagemaker`` training backend
(``models_registry.training.backends.sagemaker``) decides what to ask and services decide what to
store, and tests need no database.

AWS facts it relies on:
- CreateTrainingJob is rate limited to about one call per second per account and region, so
  launches take a slot from the limiter every worker process shares
  (``models_registry.training.launch_rate``); botocore's standard retries (``config.aws``) take
  the transient errors, and throttling that outlasts them is retried here with exponential
  backoff and full jitter (the AWS Architecture Blog's "Exponential Backoff And Jitter").
- Warm pools: a launch with ``ResourceConfig.KeepAlivePeriodInSeconds`` (1 to 3600) keeps its
  instances provisioned after it ends, and the next job with the same resource configuration
  (role, instance type and count, volume, keep-alive) starts on them. The retained job's
  ``WarmPoolStatus`` then says ``Reused`` and names the new job in ``ReusedByJob``; that is how a
  job is known to have reused a pool (ListTrainingJobs filters on ``WarmPoolStatusEquals``).
- StopTrainingJob is accepted only while a job is ``InProgress``; the job then reports
  ``Stopping`` until its container has exited, and ends ``Stopped`` (or ``Completed``/``Failed``
  when it ended on its own before the stop took effect).
- Training-job names are unique per account and region and match
  ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``; a name derived from the job id makes a re-delivered
  launch find the job it already created instead of starting a second one.
- The SageMaker PyTorch training container (sagemaker-training toolkit) downloads
  ``sagemaker_submit_directory`` (a ``sourcedir.tar.gz``) and runs ``sagemaker_program`` from it;
  every hyperparameter value must be a string.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from config import aws
from config.errors import DomainError
from models_registry.exceptions import TrainingLaunchDeferred
from models_registry.training.launch_rate import LaunchLimiter, fleet_launch_limiter

__all__ = [
    "DEFAULT_METRIC_DEFINITIONS",
    "SageMakerTrainingClient",
    "TrainingBackendError",
    "TrainingImageUnavailable",
    "TrainingLaunch",
    "TrainingLaunchThrottled",
    "TrainingStatus",
    "default_client",
    "training_image_uri",
    "training_job_name",
]

TrainingState = Literal["queued", "running", "succeeded", "failed", "cancelled"]

PLATFORM_TAG = "tenantml"
# DeleteObjects takes at most 1,000 keys a call.
S3_DELETE_BATCH = 1000
JOB_NAME_MAX_LENGTH = 63
JOB_NAME_PREFIX = "tml"
# CreateTrainingJob calls are spaced this far apart: one a second, plus 50 ms because SageMaker
# counts them as they arrive, and the way there (and a busy worker between its slot and the
# request leaving) delays some calls more than others.
CREATE_TRAINING_JOB_INTERVAL_S = 1.05
# AWS accepts KeepAlivePeriodInSeconds from 1 to 3600; 0 here means no warm pool.
MAX_WARM_POOL_KEEP_ALIVE_S = 3600
# ListTrainingJobs pages read when looking for the pool a job reused (100 jobs a page).
MAX_WARM_POOL_PAGES = 10


class TrainingLaunchThrottled(TrainingLaunchDeferred):
    """SageMaker kept throttling the launch; the job can be retried later."""

    status_code = 503
    code = "training_launch_throttled"


class TrainingBackendError(DomainError):
    """SageMaker (or S3) refused a training request; the message is AWS's own."""

    status_code = 502
    code = "training_backend_error"


class TrainingImageUnavailable(DomainError):
    """No training image is known for the requested region, framework or instance type."""

    status_code = 400
    code = "training_image_unavailable"


# ---------------------------------------------------------------------------------------------
# Job names and launch description
# ---------------------------------------------------------------------------------------------

_NOT_NAME_CHARS = re.compile(r"[^a-zA-Z0-9]+")


def _name_part(value: object) -> str:
    """Collapse anything outside [a-zA-Z0-9] to single hyphens, trimmed at both ends."""
    return _NOT_NAME_CHARS.sub("-", str(value)).strip("-")


def training_job_name(tenant_slug: str, model_name: str, job_id: object) -> str:
    """A deterministic SageMaker job name (≤ 63 chars of [a-zA-Z0-9-]) that keeps the job id."""
    job = _name_part(job_id)
    if not job:
        raise ValueError("job_id must contain at least one letter or digit")
    tenant = _name_part(tenant_slug).lower() or "tenant"
    model = _name_part(model_name).lower() or "model"
    name = f"{JOB_NAME_PREFIX}-{tenant}-{model}-{job}"
    if len(name) <= JOB_NAME_MAX_LENGTH:
        return name
    # Too long: shorten tenant and model, and add a digest of the full originals so two long
    # names that share a prefix stay distinct and the same inputs always give the same name.
    digest = hashlib.sha256(f"{tenant_slug}\0{model_name}\0{job_id}".encode()).hexdigest()[:6]
    fixed = len(JOB_NAME_PREFIX) + len(digest) + len(job) + 4  # four separating hyphens
    room = JOB_NAME_MAX_LENGTH - fixed
    if room < 2:
        # Only a pathological job id gets here; its tail is the most specific part.
        return f"{JOB_NAME_PREFIX}-{digest}-{job[-(JOB_NAME_MAX_LENGTH - 11) :].strip('-')}"
    tenant_room = max(1, min(len(tenant), room // 2))
    model_room = max(1, room - tenant_room)
    tenant = tenant[:tenant_room].strip("-") or "t"
    model = model[:model_room].strip("-") or "m"
    return f"{JOB_NAME_PREFIX}-{tenant}-{model}-{digest}-{job}"


# The training entry point (``entrypoint.report_metrics``) prints ``validation:<name>=<%.6g>;``;
# SageMaker scans the job's log with these regexes and publishes the first group as the value.
# The trailing ``=`` and ``;`` keep ``recall_at_5`` from matching ``recall_at_5_before``.
_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
DEFAULT_METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "validation:macro_f1", "Regex": rf"validation:macro_f1={_NUMBER};"},
    {"Name": "validation:recall_at_5", "Regex": rf"validation:recall_at_5={_NUMBER};"},
    {"Name": "validation:accuracy", "Regex": rf"validation:accuracy={_NUMBER};"},
)

# Tag values allow letters, digits, spaces and _.:/=+-@ only; anything else becomes "_".
_NOT_TAG_CHARS = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)


def _tag_value(value: object) -> str:
    return _NOT_TAG_CHARS.sub("_", str(value))[:256]


def _hyperparameter_value(value: object) -> str:
    # Strings pass through untouched; everything else is JSON so the training toolkit (which
    # json-decodes each value, falling back to the raw string) hands the script a real bool/number.
    if isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass(frozen=True)
class TrainingLaunch:
    """Everything CreateTrainingJob needs for one tenant training job."""

    job_name: str
    role_arn: str
    image_uri: str
    train_s3_uri: str
    validation_s3_uri: str
    output_s3_uri: str
    sourcedir_s3_uri: str
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_gb: int = 30
    max_runtime_s: int = 4 * 3600
    # Seconds SageMaker keeps the instances after the job for a matching job to reuse; 0: none.
    warm_pool_keep_alive_s: int = 0
    entry_point: str = "train.py"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metric_definitions: tuple[dict[str, str], ...] = DEFAULT_METRIC_DEFINITIONS

    @classmethod
    def for_tenant_job(
        cls,
        *,
        tenant_slug: str,
        model_name: str,
        job_id: object,
        **fields: Any,
    ) -> TrainingLaunch:
        """A launch named and tagged after the tenant, model and job it trains."""
        tags = {
            "tenant": _tag_value(tenant_slug),
            "model": _tag_value(model_name),
            "job_id": _tag_value(job_id),
            **dict(fields.pop("tags", {}) or {}),
        }
        return cls(job_name=training_job_name(tenant_slug, model_name, job_id), tags=tags, **fields)

    def request_hyperparameters(self) -> dict[str, str]:
        """The string-only HyperParameters map, with the keys the PyTorch container reads."""
        values = {key: _hyperparameter_value(value) for key, value in self.hyperparameters.items()}
        values["sagemaker_program"] = self.entry_point
        values["sagemaker_submit_directory"] = self.sourcedir_s3_uri
        return values

    def request_tags(self) -> list[dict[str, str]]:
        """Tags in the API's Key/Value form; ``platform`` always says which product made the job."""
        tags = {key: _tag_value(value) for key, value in self.tags.items()}
        tags["platform"] = PLATFORM_TAG
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def resource_config(self) -> dict[str, Any]:
        """ResourceConfig: the same for every launch of one configuration, so that a warm pool
        one job leaves is matched by the next."""
        if not 0 <= self.warm_pool_keep_alive_s <= MAX_WARM_POOL_KEEP_ALIVE_S:
            raise ValueError(
                f"warm_pool_keep_alive_s must be 0 to {MAX_WARM_POOL_KEEP_ALIVE_S}, "
                f"not {self.warm_pool_keep_alive_s}"
            )
        config: dict[str, Any] = {
            "InstanceType": self.instance_type,
            "InstanceCount": self.instance_count,
            "VolumeSizeInGB": self.volume_gb,
        }
        if self.warm_pool_keep_alive_s:
            config["KeepAlivePeriodInSeconds"] = self.warm_pool_keep_alive_s
        return config

    def create_request(self) -> dict[str, Any]:
        """The CreateTrainingJob parameters for this launch."""
        return {
            "TrainingJobName": self.job_name,
            "AlgorithmSpecification": {
                "TrainingImage": self.image_uri,
                "TrainingInputMode": "File",
                "MetricDefinitions": [dict(item) for item in self.metric_definitions],
            },
            "RoleArn": self.role_arn,
            "InputDataConfig": [
                _s3_channel("train", self.train_s3_uri),
                _s3_channel("validation", self.validation_s3_uri),
            ],
            "OutputDataConfig": {"S3OutputPath": self.output_s3_uri},
            "ResourceConfig": self.resource_config(),
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_s},
            "HyperParameters": self.request_hyperparameters(),
            "Tags": self.request_tags(),
        }


def _s3_channel(name: str, s3_uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": s3_uri,
                # Every instance gets the whole (small, per-tenant) dataset.
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "ContentType": "application/jsonlines",
        "InputMode": "File",
    }


@dataclass(frozen=True)
class TrainingStatus:
    """What DescribeTrainingJob says about one job, in the platform's words."""

    status: TrainingState
    secondary_status: str
    failure_reason: str
    model_artifacts_s3_uri: str | None
    final_metrics: dict[str, float]
    progress_pct: int
    billable_seconds: int | None
    # TrainingJobStatus as AWS says it (InProgress, Stopping, Stopped, Completed, Failed).
    aws_status: str = ""
    # KeepAlivePeriodInSeconds the job was launched with (0: no warm pool asked for).
    warm_pool_keep_alive_s: int = 0
    # This job's own WarmPoolStatus.Status ("" until it has one).
    warm_pool_status: str = ""
    created_at: datetime | None = None
    max_runtime_s: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    @property
    def is_stopping_or_ended(self) -> bool:
        """Whether the job no longer needs a StopTrainingJob: stopping already, or over."""
        return self.aws_status != "InProgress"

    @property
    def instances_provisioned(self) -> bool:
        """Whether SageMaker has decided where the job runs (a warm pool or new instances)."""
        return self.is_terminal or self.status == "running"


# SecondaryStatus values before the training container starts: the job is still waiting on
# capacity, so the platform shows it as queued rather than running.
_QUEUED_SECONDARY = frozenset(
    {"Pending", "Starting", "LaunchingMLInstances", "PreparingTrainingStack"}
)
_PROGRESS_BY_SECONDARY = {
    "Pending": 0,
    "Starting": 5,
    "LaunchingMLInstances": 5,
    "PreparingTrainingStack": 10,
    "Downloading": 15,
    "DownloadingTrainingImage": 15,
    "Training": 50,
    "Uploading": 90,
    "Completed": 100,
}


def _progress_pct(description: Mapping[str, Any]) -> int:
    secondary = description.get("SecondaryStatus", "")
    if secondary in _PROGRESS_BY_SECONDARY:
        return _PROGRESS_BY_SECONDARY[secondary]
    # Failed/Stopped/Interrupted and friends: report how far the job got before it ended.
    for transition in reversed(description.get("SecondaryStatusTransitions") or []):
        if transition.get("Status") in _PROGRESS_BY_SECONDARY:
            return min(_PROGRESS_BY_SECONDARY[transition["Status"]], 99)
    return 0


# SecondaryStatus values of a job SageMaker stopped itself, at the job's StoppingCondition.
_TIME_LIMIT_SECONDARY = {
    "MaxRuntimeExceeded": "Stopped by SageMaker: the job ran past its MaxRuntimeInSeconds.",
    "MaxWaitTimeExceeded": "Stopped by SageMaker: the job waited past its MaxWaitTimeInSeconds.",
}


def _status_from_description(description: Mapping[str, Any]) -> TrainingStatus:
    aws_status = description.get("TrainingJobStatus", "")
    secondary = description.get("SecondaryStatus", "")
    state: TrainingState
    if aws_status == "Completed":
        state = "succeeded"
    elif aws_status == "Failed":
        state = "failed"
    elif aws_status == "Stopped" and secondary in _TIME_LIMIT_SECONDARY:
        # SageMaker stopped it at its StoppingCondition: the job failed, nobody cancelled it.
        state = "failed"
    elif aws_status == "Stopped":
        state = "cancelled"
    elif aws_status == "InProgress" and secondary in _QUEUED_SECONDARY:
        state = "queued"
    else:
        # InProgress, and Stopping: not final yet, the container may still upload artifacts.
        state = "running"
    artifacts = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    return TrainingStatus(
        status=state,
        secondary_status=secondary,
        failure_reason=description.get("FailureReason", "")
        or _TIME_LIMIT_SECONDARY.get(secondary if aws_status == "Stopped" else "", ""),
        # AWS reports the artifact path up front; it only holds a model once the job succeeded.
        model_artifacts_s3_uri=artifacts if state == "succeeded" else None,
        final_metrics={
            item["MetricName"]: float(item["Value"])
            for item in description.get("FinalMetricDataList") or []
            if "MetricName" in item and "Value" in item
        },
        progress_pct=_progress_pct(description),
        billable_seconds=description.get("BillableTimeInSeconds"),
        aws_status=aws_status,
        warm_pool_keep_alive_s=int(
            (description.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds") or 0
        ),
        warm_pool_status=(description.get("WarmPoolStatus") or {}).get("Status", ""),
        created_at=description.get("CreationTime"),
        max_runtime_s=int(
            (description.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds") or 0
        ),
    )


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


def _is_already_exists(error: ClientError) -> bool:
    code = aws.error_code(error)
    if code in ("ResourceInUse", "ResourceInUseException"):
        return True
    # Real SageMaker answers a duplicate name with a ValidationException whose message says
    # "... a training job with this name already exists".
    return code == "ValidationException" and "already exist" in aws.error_message(error).lower()


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class SageMakerTrainingClient:
    """Launches, describes and stops SageMaker training jobs; uploads their inputs to S3."""

    def __init__(
        self,
        client: Any | None = None,
        region: str | None = None,
        min_interval_s: float = CREATE_TRAINING_JOB_INTERVAL_S,
        max_retries: int = 6,
        base_backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        *,
        s3_client: Any | None = None,
        max_backoff_s: float = 20.0,
        jitter: Callable[[float], float] = aws.full_jitter,
        launch_limiter: LaunchLimiter | None = None,
    ) -> None:
        self.region = region or (client.meta.region_name if client is not None else None)
        self._client = client
        self._s3_client = s3_client
        self.max_retries = max_retries
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._jitter = jitter
        self._client_lock = threading.Lock()
        # One limiter for every worker process (Redis or a file lock), unless one is given.
        self.launch_limiter: LaunchLimiter = launch_limiter or fleet_launch_limiter(
            region=self.region, min_interval_s=min_interval_s, sleep=sleep
        )

    # -- clients -----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = aws.client("sagemaker", region=self.region)
            return self._client

    @property
    def s3_client(self) -> Any:
        with self._client_lock:
            if self._s3_client is None:
                self._s3_client = aws.client("s3", region=self.region)
            return self._s3_client

    # -- retry loop --------------------------------------------------------------------------

    def _call(
        self,
        operation: str,
        *,
        rate_limited: bool = False,
        **params: Any,
    ) -> dict[str, Any]:
        """Call one SageMaker operation, retrying throttling that outlasted botocore's own
        attempts with backoff and full jitter; a rate-limited call waits for the limiter first."""
        method = getattr(self.client, operation)
        attempt = 0
        while True:
            if rate_limited:
                self.launch_limiter.acquire()
            try:
                return method(**params)
            except ClientError as error:
                if not aws.is_throttling(error):
                    raise
                if attempt >= self.max_retries:
                    raise TrainingLaunchThrottled(
                        f"SageMaker is throttling {operation} (tried {attempt + 1} times); "
                        "the training job will be retried shortly."
                    ) from error
                ceiling = min(self.max_backoff_s, self.base_backoff_s * (2**attempt))
                self._sleep(self._jitter(ceiling))
                attempt += 1

    # -- public API --------------------------------------------------------------------------

    def launch(self, launch: TrainingLaunch) -> str:
        """Create the training job (or find the one already created under its name); its ARN."""
        try:
            response = self._call(
                "create_training_job", rate_limited=True, **launch.create_request()
            )
        except ClientError as error:
            if _is_already_exists(error):
                # A re-delivered task or a retry after a lost response: the job is already there.
                return self._describe_raw(launch.job_name)["TrainingJobArn"]
            raise _backend_error("CreateTrainingJob", error) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"CreateTrainingJob failed: {error}") from error
        return response["TrainingJobArn"]

    def describe(self, job_name: str) -> TrainingStatus:
        """The job's current status, progress, final metrics and artifact location."""
        return _status_from_description(self._describe_raw(job_name))

    def stop(self, job_name: str) -> TrainingStatus:
        """Send StopTrainingJob to a job still in progress; a job already stopping or ended is
        left as it is. Returns what DescribeTrainingJob said before the stop."""
        described = self.describe(job_name)
        if described.is_stopping_or_ended:
            return described
        try:
            self._call("stop_training_job", TrainingJobName=job_name)
        except ClientError as error:
            if aws.error_code(error) != "ValidationException":
                raise _backend_error("StopTrainingJob", error) from error
            # SageMaker refuses to stop a job that is not InProgress; that is success for us
            # if the job is already on its way out or over.
            current = self._describe_raw(job_name).get("TrainingJobStatus")
            if current not in ("Stopping", "Stopped", "Completed", "Failed"):
                raise _backend_error("StopTrainingJob", error) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"StopTrainingJob failed: {error}") from error
        return described

    def reused_warm_pool(self, job_name: str, *, since: datetime) -> bool:
        """Whether ``job_name`` started on a warm pool: a platform job created after ``since``
        whose pool says ``Reused`` names it in ``ReusedByJob``."""
        params: dict[str, Any] = {
            "WarmPoolStatusEquals": "Reused",
            "CreationTimeAfter": since,
            "NameContains": f"{JOB_NAME_PREFIX}-",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 100,
        }
        try:
            for _ in range(MAX_WARM_POOL_PAGES):
                page = self._call("list_training_jobs", **params)
                for summary in page.get("TrainingJobSummaries") or []:
                    if (summary.get("WarmPoolStatus") or {}).get("ReusedByJob") == job_name:
                        return True
                if not page.get("NextToken"):
                    break
                params["NextToken"] = page["NextToken"]
        except ClientError as error:
            raise _backend_error("ListTrainingJobs", error) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"ListTrainingJobs failed: {error}") from error
        return False

    def warm_pool_reused(self, described: TrainingStatus, job_name: str) -> bool | None:
        """For a job launched with a warm pool whose instances are provisioned: whether it reused
        a pool another job left (None: no pool asked for, or not decided yet)."""
        if not described.warm_pool_keep_alive_s or not described.instances_provisioned:
            return None
        created = described.created_at or datetime.now().astimezone()
        # The pool's first job ran for at most its time limit and then waited for at most its
        # keep-alive; its configuration is ours, so ours bound both.
        window = timedelta(seconds=described.max_runtime_s + described.warm_pool_keep_alive_s + 60)
        return self.reused_warm_pool(job_name, since=created - window)

    def upload_training_inputs(
        self,
        *,
        bucket: str,
        prefix: str,
        train_jsonl: bytes,
        validation_jsonl: bytes,
        sourcedir: Path,
    ) -> dict[str, str]:
        """Put the datasets and the training code under ``s3://bucket/prefix/``; their URIs.

        ``train`` and ``validation`` are channel prefixes (trailing slash, so a sibling such as
        ``train-old/`` is never pulled in), ``sourcedir`` the code archive, ``output`` where
        SageMaker should write model artifacts.
        """
        base = prefix.strip("/")

        def key(*parts: str) -> str:
            return "/".join(part for part in (base, *parts) if part)

        s3 = self.s3_client
        try:
            s3.put_object(
                Bucket=bucket,
                Key=key("train", "train.jsonl"),
                Body=train_jsonl,
                ContentType="application/jsonlines",
            )
            s3.put_object(
                Bucket=bucket,
                Key=key("validation", "validation.jsonl"),
                Body=validation_jsonl,
                ContentType="application/jsonlines",
            )
            with tempfile.TemporaryDirectory() as scratch:
                archive = _sourcedir_archive(Path(sourcedir), Path(scratch))
                s3.upload_file(str(archive), bucket, key("code", "sourcedir.tar.gz"))
        except ClientError as error:
            raise _backend_error("S3 upload", error) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"S3 upload failed: {error}") from error
        return {
            "train": f"s3://{bucket}/{key('train')}/",
            "validation": f"s3://{bucket}/{key('validation')}/",
            "sourcedir": f"s3://{bucket}/{key('code', 'sourcedir.tar.gz')}",
            "output": f"s3://{bucket}/{key('output')}/",
        }

    def delete_prefix(self, *, bucket: str, prefix: str, keep_uris: frozenset[str]) -> int:
        """Delete every object under ``s3://bucket/prefix`` except those in ``keep_uris``
        (ListObjectsV2 pages, DeleteObjects up to 1,000 keys a call); how many were deleted."""
        s3 = self.s3_client
        doomed: list[str] = []
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                doomed += [
                    item["Key"]
                    for item in page.get("Contents") or []
                    if f"s3://{bucket}/{item['Key']}" not in keep_uris
                ]
            for start in range(0, len(doomed), S3_DELETE_BATCH):
                answer = s3.delete_objects(
                    Bucket=bucket,
                    Delete={
                        "Objects": [
                            {"Key": key} for key in doomed[start : start + S3_DELETE_BATCH]
                        ],
                        "Quiet": True,
                    },
                )
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise TrainingBackendError(
                        f"S3 DeleteObjects kept {len(answer['Errors'])} object(s) under "
                        f"s3://{bucket}/{prefix}: {first.get('Code')}: {first.get('Message')}"
                    )
        except ClientError as error:
            raise _backend_error("S3 cleanup", error) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"S3 cleanup failed: {error}") from error
        return len(doomed)

    # -- helpers -----------------------------------------------------------------------------

    def _describe_raw(self, job_name: str) -> dict[str, Any]:
        try:
            return self._call("describe_training_job", TrainingJobName=job_name)
        except ClientError as error:
            raise _backend_error("DescribeTrainingJob", error) from error
        except BotoCoreError as error:
            raise TrainingBackendError(f"DescribeTrainingJob failed: {error}") from error


def _backend_error(operation: str, error: ClientError) -> TrainingBackendError:
    return TrainingBackendError(
        f"{operation} failed ({aws.error_code(error) or 'error'}): {aws.error_message(error)}"
    )


def _sourcedir_archive(sourcedir: Path, scratch: Path) -> Path:
    """A ready ``.tar.gz`` as is, or a directory packed with its files at the archive root."""
    if sourcedir.is_file():
        return sourcedir
    if not sourcedir.is_dir():
        raise TrainingBackendError(f"Training code not found at {sourcedir}.")
    archive = scratch / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(sourcedir.rglob("*")):
            relative = path.relative_to(sourcedir)
            # Byte-code caches are per-interpreter and only bloat the upload.
            if "__pycache__" in relative.parts or path.suffix == ".pyc" or not path.is_file():
                continue
            tar.add(path, arcname=str(relative))
    return archive


_default_client: SageMakerTrainingClient | None = None
_default_client_lock = threading.Lock()


def default_client() -> SageMakerTrainingClient:
    """The process-wide client, so every launch in this process shares one rate limiter."""
    global _default_client
    with _default_client_lock:
        if _default_client is None:
            _default_client = SageMakerTrainingClient()
        return _default_client


# ---------------------------------------------------------------------------------------------
# Training image URIs
# ---------------------------------------------------------------------------------------------

# Offline fallback for when the optional ``sagemaker`` SDK (the ``aws`` extra) is not installed:
# the Deep Learning Containers accounts (``config.aws``) and the DLC release tags listed in
# aws/deep-learning-containers' available_images.md for PyTorch 2.3.0 / 2.2.0 training.
_PYTORCH_TRAINING_TAGS = {
    ("2.3", "py311", "cpu"): "2.3.0-cpu-py311-ubuntu20.04-sagemaker",
    ("2.3", "py311", "gpu"): "2.3.0-gpu-py311-cu121-ubuntu20.04-sagemaker",
    ("2.2", "py310", "cpu"): "2.2.0-cpu-py310-ubuntu20.04-sagemaker",
    ("2.2", "py310", "gpu"): "2.2.0-gpu-py310-cu121-ubuntu20.04-sagemaker",
}


def _processor(instance_type: str) -> Literal["cpu", "gpu"]:
    family = instance_type.removeprefix("ml.").split(".")[0]
    if family.startswith(("trn", "inf")):
        raise TrainingImageUnavailable(
            f"{instance_type} needs a Neuron training image; choose a CPU or GPU instance type."
        )
    return "gpu" if family.startswith(("p", "g")) else "cpu"


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def training_image_uri(
    *,
    region: str,
    instance_type: str,
    framework_version: str = "2.3",
    py_version: str = "py311",
) -> str:
    """The SageMaker PyTorch training image for this region and instance type (no network)."""
    processor = _processor(instance_type)
    try:
        from sagemaker import image_uris  # optional ``aws`` extra
    except ImportError:
        image_uris = None
    if image_uris is not None:
        try:
            # The SDK reads its bundled JSON tables; nothing here goes to the network.
            return image_uris.retrieve(
                framework="pytorch",
                region=region,
                version=framework_version,
                py_version=py_version,
                instance_type=instance_type,
                image_scope="training",
            )
        except ValueError as error:
            raise TrainingImageUnavailable(str(error)) from error
    account = aws.PYTORCH_TRAINING_ACCOUNTS.get(region)
    if account is None:
        raise TrainingImageUnavailable(f"No PyTorch training image is known for region {region}.")
    tag = _PYTORCH_TRAINING_TAGS.get((_major_minor(framework_version), py_version, processor))
    if tag is None:
        raise TrainingImageUnavailable(
            f"No PyTorch {framework_version} {py_version} {processor} training image is known."
        )
    return aws.ecr_image_uri(account=account, region=region, repository="pytorch-training", tag=tag)
