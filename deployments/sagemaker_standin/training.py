"""SageMaker training jobs on the stand-in, run for real.

CreateTrainingJob is validated as AWS validates it (``training_requests``: botocore's model of
the request, AWS's "N validation errors detected" message, plus what the stand-in cannot run),
and refused with ThrottlingException "Rate exceeded" when calls come faster than
``launches_per_s`` (AWS's quota is one a second per account and region; the stand-in serves one
of each). A job then goes through SageMaker's statuses in a thread of its own:

- ``InProgress``/``Starting`` for ``provisioning_s`` (skipped when a warm pool is reused), then
  ``Downloading`` (TrainingStartTime): the S3 channels (``S3Prefix``; ``FullyReplicated`` gives
  each host every object, ``ShardedByS3Key`` every N-th) and the ``sagemaker_submit_directory``
  archive are read from the stand-in's S3 into each host's ``/opt/ml`` (``training_host``);
- ``Training``: every host runs ``sagemaker_program`` as its own process group with the
  toolkit's environment, ``AWS_ENDPOINT_URL_S3`` at the stand-in and the stand-in's credentials
  (a real job's role), the request's Environment and the stand-in's own ``environment``;
- every host exits 0: ``Uploading``, then ``Completed``. SageMaker's documented behaviour for
  several hosts is mirrored: the ``/opt/ml/model`` of every host is aggregated into ONE
  ``<S3OutputPath>/<job>/output/model.tar.gz`` (hosts must not write the same file names; when
  they do, the higher-numbered host's file is kept and the stand-in logs it), and
  ``/opt/ml/output/data`` likewise into ``output.tar.gz`` beside it;
- a host exits non-zero: the other hosts are stopped and the job is ``Failed`` with
  FailureReason ``AlgorithmError: <its /opt/ml/output/failure>`` (first 1,024 characters; the
  toolkit's ``ExecuteUserScriptError`` text when the script wrote none); nothing is uploaded.
  Channels that cannot be read fail it with ``ClientError: ...`` before any script runs;
- StopTrainingJob: ``Stopping``; SIGTERM to every host's group, SIGKILL after ``stop_grace_s``
  (SageMaker's 120 s by default), then ``Stopped``. AWS documents that window as the time an
  algorithm has to save its model and that the saved results are not lost, so what
  ``/opt/ml/model`` holds by then is uploaded as ``model.tar.gz`` (for a custom container as for
  AWS's algorithms); a job stopped before its instances started uploads nothing;
- MaxRuntimeInSeconds (counted from TrainingStartTime): stopped the same way, ending
  ``Stopped`` with SecondaryStatus ``MaxRuntimeExceeded``.

FinalMetricDataList comes from the MetricDefinitions' regexes over the hosts' logs (the last
value, first host that prints it); TrainingTimeInSeconds and BillableTimeInSeconds run from
TrainingStartTime to TrainingEndTime.

Managed warm pools, as AWS documents them (``WarmPoolStatus``, "Train using SageMaker managed
warm pools"): a job with ``ResourceConfig.KeepAlivePeriodInSeconds`` > 0 (at most 3,600 s, the
default quota) leaves its instances provisioned once it ends, whether it completed, stopped
after its instances started, or failed with an algorithm or client error; its WarmPoolStatus is
``Available`` with ``ResourceRetainedBillableTimeInSeconds`` growing with the time retained. A
later job whose RoleArn, ResourceConfig (instance type and count, volume size and key,
keep-alive), VpcConfig, EnableNetworkIsolation and EnableInterContainerTrafficEncryption all
match takes the pool over: it skips the provisioning delay and shows WarmPoolStatus ``InUse``
while it runs (``Available`` once it ended), and the earlier job's status becomes ``Reused``
with ``ReusedByJob`` naming it. The image, code and hyperparameters need not match. A pool not
reused within its keep-alive period is ``Terminated``. Jobs on a pool get
``SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY``, a per-host directory that survives from job to
job of the pool (AWS's persistent cache).

Not modelled: spot training, checkpoints, debugger and profiler configs, Pipe mode, pip
installs from the sourcedir's ``requirements.txt`` (the stand-in's Python already has them).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import signal
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from deployments.sagemaker_standin.errors import StandinError, ValidationException
from deployments.sagemaker_standin.moto_state import MotoState, split_s3_uri, unpack_archive
from deployments.sagemaker_standin.training_host import (
    FAILURE_REASON_CHARS,
    HostLayout,
    HostProcess,
    UnsupportedProgram,
    container_environment,
    decode_hyperparameters,
    final_metrics,
    host_names,
    input_data_config,
    log_tail,
    pack_directories,
    resource_config,
    script_failure_reason,
    user_args,
)
from deployments.sagemaker_standin.training_requests import (
    refuse,
    stand_in_violations,
    validation_errors,
)

__all__ = [
    "ResourceInUse",
    "ThrottlingException",
    "TrainingJobs",
    "TrainingSettings",
]

logger = logging.getLogger(__name__)

# A client that spaces its calls exactly 1/rate apart still sees some arrive a little early
# (scheduling, the network); AWS's bucket is not that strict either.
RATE_SLACK = 0.05
WATCH_INTERVAL_S = 0.05
JOIN_TIMEOUT_S = 15.0
WARM_POOL_CACHE_ENV = "SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY"


class ThrottlingException(StandinError):
    """AWS's answer to calls beyond an operation's rate."""

    code = "ThrottlingException"
    status = 400


class ResourceInUse(StandinError):
    """A training job by that name already exists in the account and region."""

    code = "ResourceInUse"
    status = 400


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings:
    """How the stand-in runs training jobs (its command's flags; tests change them per test)."""

    # Starting: launching the instances and pulling the image; a reused warm pool skips it.
    provisioning_s: float = 2.0
    # StopTrainingJob and MaxRuntimeInSeconds: SIGTERM, then SIGKILL this much later.
    stop_grace_s: float = 120.0
    # CreateTrainingJob calls admitted per second (AWS's quota is 1); 0 turns the limit off.
    launches_per_s: float = 1.0
    # Added to every training container's environment (e.g. a model cache on this machine).
    environment: dict[str, str] = field(default_factory=dict)

    def changed(self, changes: dict[str, Any]) -> TrainingSettings:
        """A copy with ``changes`` applied; ValueError names an unknown or mistyped setting."""
        known = {item.name for item in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"Unknown training settings: {', '.join(unknown)}.")
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "environment":
                if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError("environment must map names to strings.")
                values[name] = dict(value)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number of seconds (or per second) >= 0.")
            values[name] = float(value)
        return replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


class LaunchRateLimit:
    """CreateTrainingJob's per-account rate: a call is admitted 1/rate after the last one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None

    def admit(self, per_s: float) -> bool:
        if per_s <= 0:
            return True
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < (1.0 - RATE_SLACK) / per_s:
                return False
            self._last = now
            return True

    def forget(self) -> None:
        with self._lock:
            self._last = None


# ---------------------------------------------------------------------------------------------
# Jobs and warm pools
# ---------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds()))


def _pool_key(params: dict[str, Any]) -> str:
    resources = params.get("ResourceConfig") or {}
    return json.dumps(
        {
            "role": params.get("RoleArn"),
            "type": resources.get("InstanceType"),
            "count": resources.get("InstanceCount"),
            "volume": resources.get("VolumeSizeInGB"),
            "volume_key": resources.get("VolumeKmsKeyId"),
            "keep_alive": resources.get("KeepAlivePeriodInSeconds"),
            "vpc": params.get("VpcConfig"),
            "isolation": bool(params.get("EnableNetworkIsolation")),
            "encryption": bool(params.get("EnableInterContainerTrafficEncryption")),
        },
        sort_keys=True,
    )


@dataclass
class WarmPool:
    """Provisioned instances kept after a job, waiting for a matching one."""

    key: str
    holder: str
    keep_alive_s: int
    cache_dir: Path
    available_since: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return (
            self.available_since is not None
            and (now - self.available_since).total_seconds() >= self.keep_alive_s
        )


@dataclass
class TrainingJob:
    """One training job: the request as sent and everything DescribeTrainingJob shows."""

    name: str
    arn: str
    request: dict[str, Any]
    created: datetime
    tags: list[dict[str, str]]  # moto's ListTags/AddTags read and write this list
    status: str = "InProgress"
    secondary: str = "Starting"
    transitions: list[dict[str, Any]] = field(default_factory=list)
    modified: datetime | None = None
    started: datetime | None = None
    started_clock: float = 0.0
    ended: datetime | None = None
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    warm_pool: dict[str, Any] | None = None
    pool: WarmPool | None = None
    hosts: list[HostProcess] = field(default_factory=list)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    discarded: bool = False
    thread: threading.Thread | None = None

    @property
    def keep_alive_s(self) -> int:
        return int((self.request.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds") or 0)

    @property
    def artifacts_prefix(self) -> str:
        output = self.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        return f"{output}/{self.name}/output"

    def enter(self, secondary: str, message: str, *, status: str | None = None) -> None:
        """Move to a secondary status (closing the previous transition), as SageMaker lists them."""
        now = _now()
        if self.transitions and "EndTime" not in self.transitions[-1]:
            self.transitions[-1]["EndTime"] = now
        entry: dict[str, Any] = {"Status": secondary, "StartTime": now, "StatusMessage": message}
        if secondary in ("Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
            entry["EndTime"] = now
        self.transitions.append(entry)
        self.secondary = secondary
        if status is not None:
            self.status = status
        self.modified = now

    def describe(self) -> dict[str, Any]:
        request = self.request
        described: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "ModelArtifacts": {"S3ModelArtifacts": f"{self.artifacts_prefix}/model.tar.gz"},
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary,
            "HyperParameters": request.get("HyperParameters") or {},
            "AlgorithmSpecification": request.get("AlgorithmSpecification"),
            "RoleArn": request.get("RoleArn"),
            "InputDataConfig": request.get("InputDataConfig") or [],
            "OutputDataConfig": request.get("OutputDataConfig"),
            "ResourceConfig": request.get("ResourceConfig"),
            "StoppingCondition": request.get("StoppingCondition"),
            "CreationTime": self.created,
            "LastModifiedTime": self.modified or self.created,
            # Copies: the answer is serialized after the lock is released.
            "SecondaryStatusTransitions": [dict(item) for item in self.transitions],
            "EnableNetworkIsolation": bool(request.get("EnableNetworkIsolation")),
            "EnableInterContainerTrafficEncryption": bool(
                request.get("EnableInterContainerTrafficEncryption")
            ),
            "EnableManagedSpotTraining": bool(request.get("EnableManagedSpotTraining")),
        }
        for name in ("VpcConfig", "Environment", "ExperimentConfig", "CheckpointConfig"):
            if request.get(name):
                described[name] = request[name]
        if self.failure_reason:
            described["FailureReason"] = self.failure_reason
        if self.started is not None:
            described["TrainingStartTime"] = self.started
        if self.ended is not None:
            described["TrainingEndTime"] = self.ended
            if self.started is not None:
                seconds = max(1, _seconds(self.started, self.ended))
                described["TrainingTimeInSeconds"] = seconds
                described["BillableTimeInSeconds"] = seconds
        if self.metrics:
            described["FinalMetricDataList"] = [
                {"MetricName": name, "Value": value, "Timestamp": self.ended or _now()}
                for name, value in self.metrics.items()
            ]
        if self.warm_pool is not None:
            described["WarmPoolStatus"] = dict(self.warm_pool)
        return described

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified or self.created,
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary,
        }
        if self.ended is not None:
            summary["TrainingEndTime"] = self.ended
        if self.warm_pool is not None:
            summary["WarmPoolStatus"] = dict(self.warm_pool)
        return summary


class _JobFailed(Exception):
    """The job cannot go on; the message is its FailureReason."""


class _JobStopped(Exception):
    """A stop arrived before the job's instances started."""


class TrainingJobs:
    """The stand-in's training jobs: the API operations, the runs, the warm pools."""

    def __init__(
        self,
        *,
        workdir: Path,
        moto: MotoState,
        settings: TrainingSettings | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.moto = moto
        self.initial_settings = settings or TrainingSettings()
        self.settings = self.initial_settings
        self.base_url = ""
        self.lock = threading.RLock()
        self.jobs: dict[str, TrainingJob] = {}
        self.pools: list[WarmPool] = []
        self.rate = LaunchRateLimit()
        self._pool_ids = itertools.count(1)

    def attach(self, *, base_url: str) -> None:
        """Where training containers (and the stand-in itself) reach S3."""
        self.base_url = base_url

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The SageMaker operations answered here, by name."""
        return {
            "CreateTrainingJob": self.create,
            "DescribeTrainingJob": self.describe,
            "ListTrainingJobs": self.list,
            "StopTrainingJob": self.stop,
        }

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the settings until the next reset (ValueError names a wrong one)."""
        with self.lock:
            self.settings = self.settings.changed(changes)
            return self.settings.as_dict()

    # -- operations ---------------------------------------------------------------------------

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.rate.admit(self.settings.launches_per_s):
            raise ThrottlingException("Rate exceeded")
        refuse(validation_errors("CreateTrainingJob", params) + stand_in_violations(params))
        name = params["TrainingJobName"]
        with self.lock:
            self._expire_pools()
            if name in self.jobs:
                raise ResourceInUse(
                    "Training job names must be unique within an AWS account and region, and "
                    f"a training job with this name already exists ({self.jobs[name].arn})"
                )
            job = TrainingJob(
                name=name,
                arn=self.moto.arn("training-job", name),
                request=json.loads(json.dumps(params)),
                created=_now(),
                tags=list(params.get("Tags") or []),
            )
            job.enter("Starting", "Preparing the instances for training")
            if job.keep_alive_s > 0:
                self._take_pool(job)
            self.jobs[name] = job
            # Registered with moto too, so ListTags/AddTags/DeleteTags find the job's ARN.
            self.moto.sagemaker.training_jobs[name] = job
            job.thread = threading.Thread(
                target=self._run, args=(job,), name=f"training-{name}", daemon=True
            )
            job.thread.start()
        return {"TrainingJobArn": job.arn}

    def describe(self, params: dict[str, Any]) -> dict[str, Any]:
        refuse(validation_errors("DescribeTrainingJob", params))
        with self.lock:
            self._expire_pools()
            return self._require(params["TrainingJobName"]).describe()

    def list(self, params: dict[str, Any]) -> dict[str, Any]:
        refuse(validation_errors("ListTrainingJobs", params))
        with self.lock:
            self._expire_pools()
            jobs = list(self.jobs.values())
            filters: list[Callable[[TrainingJob], bool]] = []
            if params.get("NameContains"):
                filters.append(lambda job: params["NameContains"] in job.name)
            if params.get("StatusEquals"):
                filters.append(lambda job: job.status == params["StatusEquals"])
            if params.get("WarmPoolStatusEquals"):
                filters.append(
                    lambda job: (
                        (job.warm_pool or {}).get("Status") == params["WarmPoolStatusEquals"]
                    )
                )
            for key, attribute, after in (
                ("CreationTimeAfter", "created", True),
                ("CreationTimeBefore", "created", False),
                ("LastModifiedTimeAfter", "modified", True),
                ("LastModifiedTimeBefore", "modified", False),
            ):
                if params.get(key) is not None:
                    bound = _timestamp(params[key])
                    filters.append(_time_filter(attribute, bound, after=after))
            jobs = [job for job in jobs if all(keep(job) for keep in filters)]
            sort_key = {
                "Name": lambda job: job.name,
                "Status": lambda job: job.status,
                "CreationTime": lambda job: job.created,
            }[params.get("SortBy") or "CreationTime"]
            jobs.sort(key=sort_key, reverse=(params.get("SortOrder") == "Descending"))
            start = int(params.get("NextToken") or 0)
            size = int(params.get("MaxResults") or 10)
            result: dict[str, Any] = {
                "TrainingJobSummaries": [job.summary() for job in jobs[start : start + size]]
            }
            if start + size < len(jobs):
                result["NextToken"] = str(start + size)
            return result

    def stop(self, params: dict[str, Any]) -> dict[str, Any]:
        refuse(validation_errors("StopTrainingJob", params))
        with self.lock:
            job = self._require(params["TrainingJobName"])
            if job.status != "InProgress":
                raise ValidationException(
                    f"The request was rejected because the training job is in status {job.status}."
                )
            job.enter("Stopping", "Stopping the training job", status="Stopping")
            job.stop_requested.set()
        return {}

    def _require(self, name: str) -> TrainingJob:
        job = self.jobs.get(name)
        if job is None:
            raise ValidationException("Requested resource not found.")
        return job

    # -- warm pools ---------------------------------------------------------------------------

    def _take_pool(self, job: TrainingJob) -> None:
        """Give ``job`` the matching available pool, if any (caller holds the lock)."""
        key = _pool_key(job.request)
        for pool in self.pools:
            if pool.key == key and pool.available_since is not None:
                previous = self.jobs.get(pool.holder)
                now = _now()
                if previous is not None:
                    previous.warm_pool = {
                        "Status": "Reused",
                        "ResourceRetainedBillableTimeInSeconds": _seconds(
                            pool.available_since, now
                        ),
                        "ReusedByJob": job.name,
                    }
                    previous.modified = now
                pool.holder = job.name
                pool.available_since = None
                job.pool = pool
                job.warm_pool = {"Status": "InUse"}
                return

    def _release_pool(self, job: TrainingJob) -> None:
        """After the job ended: its instances stay as an available pool (caller holds the lock)."""
        now = _now()
        if job.pool is None:
            job.pool = WarmPool(
                key=_pool_key(job.request),
                holder=job.name,
                keep_alive_s=job.keep_alive_s,
                cache_dir=self.workdir / "warm-pools" / f"pool-{next(self._pool_ids)}",
            )
            self.pools.append(job.pool)
        job.pool.available_since = now
        job.warm_pool = {"Status": "Available", "ResourceRetainedBillableTimeInSeconds": 0}

    def _expire_pools(self) -> None:
        """End the pools whose keep-alive ran out; refresh the retained time of the rest."""
        now = _now()
        for pool in list(self.pools):
            holder = self.jobs.get(pool.holder)
            if pool.available_since is None:
                continue
            if pool.expired(now):
                self.pools.remove(pool)
                shutil.rmtree(pool.cache_dir, ignore_errors=True)
                if holder is not None:
                    holder.warm_pool = {
                        "Status": "Terminated",
                        "ResourceRetainedBillableTimeInSeconds": pool.keep_alive_s,
                    }
                    holder.modified = now
            elif holder is not None and holder.warm_pool is not None:
                holder.warm_pool["ResourceRetainedBillableTimeInSeconds"] = _seconds(
                    pool.available_since, now
                )

    # -- running ------------------------------------------------------------------------------

    def _run(self, job: TrainingJob) -> None:
        try:
            self._provision(job)
            self._download(job)
            outcome = self._train(job)
            if outcome == "completed":
                self._finish(job, secondary="Completed", status="Completed")
            else:
                self._finish(job, secondary=outcome, status="Stopped")
        except _JobStopped:
            self._end(job, "Stopped", "Training job stopped", status="Stopped", keep_pool=False)
        except _JobFailed as failure:
            self._fail(job, str(failure))
        except Exception:
            logger.exception("stand-in: training job %s failed inside the stand-in", job.name)
            self._fail(job, "InternalServerError: We encountered an internal error.")
        finally:
            for host in job.hosts:
                host.end_container()

    def _provision(self, job: TrainingJob) -> None:
        delay = 0.0 if job.pool is not None else self.settings.provisioning_s
        job.stop_requested.wait(delay)
        with self.lock:
            if job.stop_requested.is_set() or job.discarded:
                raise _JobStopped()
            job.started = _now()
            job.started_clock = time.monotonic()
            job.enter("Downloading", "Downloading input data")

    def _s3(self) -> Any:
        # A client per use: boto3 clients are made from a session that is not thread-safe.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.base_url,
            region_name=self.moto.region,
            aws_access_key_id="standin",
            aws_secret_access_key="standin",
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )

    def _download(self, job: TrainingJob) -> None:
        """Lay out every host's /opt/ml and fill its channels and code from S3."""
        request = job.request
        count = int(request["ResourceConfig"]["InstanceCount"])
        names = host_names(count)
        job_dir = self.workdir / job.name
        s3 = self._s3()
        channels = request.get("InputDataConfig") or []
        objects = {
            channel["ChannelName"]: self._channel_objects(s3, channel, role=request["RoleArn"])
            for channel in channels
        }
        hyperparameters = request.get("HyperParameters") or {}
        framework = decode_hyperparameters(hyperparameters)
        program = framework.get("sagemaker_program")
        submit = framework.get("sagemaker_submit_directory")
        if not isinstance(program, str) or not isinstance(submit, str):
            raise _JobFailed(
                "AlgorithmError: the stand-in runs script-mode jobs: HyperParameters need "
                "sagemaker_program and sagemaker_submit_directory (an s3:// tar.gz)."
            )
        code = self._read(s3, submit, what="sagemaker_submit_directory")
        input_mode = request["AlgorithmSpecification"].get("TrainingInputMode") or "File"
        instance_type = request["ResourceConfig"]["InstanceType"]
        for index, host in enumerate(names):
            layout = HostLayout(job_dir / host).create()
            for channel in channels:
                name = channel["ChannelName"]
                source = channel["DataSource"]["S3DataSource"]
                mine = objects[name]
                if source.get("S3DataDistributionType") == "ShardedByS3Key":
                    mine = mine[index::count]
                for key, relative in mine:
                    target = layout.channel_dir(name) / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    bucket = split_s3_uri(source["S3Uri"])[0]
                    target.write_bytes(self._read(s3, f"s3://{bucket}/{key}", what=name))
                layout.channel_dir(name).mkdir(parents=True, exist_ok=True)
            try:
                unpack_archive(code, layout.code_dir)
            except (tarfile.TarError, OSError) as error:
                raise _JobFailed(
                    f"AlgorithmError: sagemaker_submit_directory {submit} could not be "
                    f"unpacked: {error}"
                ) from error
            layout.write_config(
                hyperparameters=hyperparameters,
                input_data=input_data_config(channels, input_mode=input_mode),
                resources=resource_config(
                    current_host=host, hosts=names, instance_type=instance_type
                ),
            )
            try:
                command = HostProcess.command_for(layout, program, user_args(hyperparameters))
            except UnsupportedProgram as error:
                raise _JobFailed(f"AlgorithmError: {error}") from error
            job.hosts.append(
                HostProcess(
                    name=host, layout=layout, log_path=job_dir / f"{host}.log", command=command
                )
            )

    def _channel_objects(
        self, s3: Any, channel: dict[str, Any], *, role: str
    ) -> list[tuple[str, str]]:
        """(key, path under the channel) of every object the channel's S3Prefix names."""
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = split_s3_uri(uri)
        # Paths are kept relative to the prefix's last "/", as SageMaker lays them out.
        base = prefix[: prefix.rfind("/") + 1]
        found = []
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for entry in page.get("Contents") or []:
                    if not entry["Key"].endswith("/"):
                        found.append((entry["Key"], entry["Key"][len(base) :]))
        except (ClientError, BotoCoreError):
            found = []
        if not found:
            raise _JobFailed(
                f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data '
                f"source. Please ensure that the bucket exists in the selected region "
                f"({self.moto.region}), that objects exist under that S3 prefix, and that the "
                f'role "{role}" has "s3:ListBucket" permissions on bucket "{bucket}".'
            )
        return sorted(found)

    def _read(self, s3: Any, uri: str, *, what: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            raise _JobFailed(
                f"ClientError: Data download failed ({what}): {uri}: {error}"
            ) from error

    def _train(self, job: TrainingJob) -> str:
        """Run every host's script until all end, one fails, a stop or the runtime limit;
        'completed', 'Stopped' or 'MaxRuntimeExceeded' (a failure raises)."""
        request = job.request
        names = [host.name for host in job.hosts]
        extra = {
            "AWS_ENDPOINT_URL_S3": self.base_url,
            "AWS_ACCESS_KEY_ID": "standin",
            "AWS_SECRET_ACCESS_KEY": "standin",
            **self.settings.environment,
            **(request.get("Environment") or {}),
        }
        framework = decode_hyperparameters(request.get("HyperParameters") or {})
        with self.lock:
            if job.stop_requested.is_set():
                return "Stopped"
            for host in job.hosts:
                env = container_environment(
                    layout=host.layout,
                    job_name=job.name,
                    job_arn=job.arn,
                    region=self.moto.region,
                    current_host=host.name,
                    hosts=names,
                    instance_type=request["ResourceConfig"]["InstanceType"],
                    hyperparameters=request.get("HyperParameters") or {},
                    channels=request.get("InputDataConfig") or [],
                    input_mode=request["AlgorithmSpecification"].get("TrainingInputMode") or "File",
                    program=str(framework["sagemaker_program"]),
                    extra=extra,
                )
                if job.pool is not None or job.keep_alive_s > 0:
                    cache = self._pool_cache(job) / host.name
                    cache.mkdir(parents=True, exist_ok=True)
                    env[WARM_POOL_CACHE_ENV] = str(cache)
                host.start(env)
            job.enter("Training", "Training image download completed. Training in progress.")
        deadline = job.started_clock + float(request["StoppingCondition"]["MaxRuntimeInSeconds"])
        while True:
            codes = [host.exit_code() for host in job.hosts]
            failed = [host for host, code in zip(job.hosts, codes, strict=True) if code]
            if failed:
                self._stop_hosts(job, grace_s=self.settings.stop_grace_s)
                reason = script_failure_reason(failed[0])
                raise _JobFailed(f"AlgorithmError: {reason}")
            if all(code == 0 for code in codes):
                return "completed"
            if job.stop_requested.is_set() or job.discarded:
                self._stop_hosts(job, grace_s=self.settings.stop_grace_s)
                return "Stopped"
            if time.monotonic() >= deadline:
                with self.lock:
                    job.enter("Stopping", "Stopping the training job", status="Stopping")
                self._stop_hosts(job, grace_s=self.settings.stop_grace_s)
                return "MaxRuntimeExceeded"
            job.stop_requested.wait(WATCH_INTERVAL_S)

    def _pool_cache(self, job: TrainingJob) -> Path:
        with self.lock:
            if job.pool is None:
                # Made now so the first job of a pool already writes where its successors read.
                job.pool = WarmPool(
                    key=_pool_key(job.request),
                    holder=job.name,
                    keep_alive_s=job.keep_alive_s,
                    cache_dir=self.workdir / "warm-pools" / f"pool-{next(self._pool_ids)}",
                )
                self.pools.append(job.pool)
            return job.pool.cache_dir

    def _stop_hosts(self, job: TrainingJob, *, grace_s: float) -> None:
        """SIGTERM every host's group; SIGKILL whatever is left after ``grace_s``."""
        for host in job.hosts:
            if host.exit_code() is None:
                host.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(h.exit_code() is None for h in job.hosts):
            if job.discarded:
                break
            time.sleep(WATCH_INTERVAL_S)
        for host in job.hosts:
            host.end_container()

    def _finish(self, job: TrainingJob, *, secondary: str, status: str) -> None:
        # A job stopped before any script ran has nothing to upload.
        if any(host.pid is not None for host in job.hosts):
            if status == "Completed":
                with self.lock:
                    job.enter("Uploading", "Uploading generated training model")
            self._upload(job)
        job.metrics = final_metrics(
            (job.request["AlgorithmSpecification"].get("MetricDefinitions") or []),
            [host.log_path for host in job.hosts],
        )
        messages = {
            "Completed": "Training job completed",
            "Stopped": "Training job stopped",
            "MaxRuntimeExceeded": "Training job runtime exceeded MaxRuntimeInSeconds provided",
        }
        self._end(job, secondary, messages[secondary], status=status, keep_pool=True)

    def _upload(self, job: TrainingJob) -> None:
        """model.tar.gz and output.tar.gz, each the aggregate of every host's directory."""
        if job.discarded:
            return
        s3 = self._s3()
        bucket, prefix = split_s3_uri(job.artifacts_prefix)
        with tempfile.TemporaryDirectory() as scratch:
            for name, directory in (
                ("model.tar.gz", "model_dir"),
                ("output.tar.gz", "output_data_dir"),
            ):
                archive = Path(scratch) / name
                clashes = pack_directories(
                    [(host.name, getattr(host.layout, directory)) for host in job.hosts], archive
                )
                if clashes:
                    logger.warning(
                        "stand-in: training job %s: several hosts wrote %s into %s; the "
                        "higher-numbered host's files were kept",
                        job.name,
                        ", ".join(clashes[:5]),
                        name,
                    )
                try:
                    s3.upload_file(str(archive), bucket, f"{prefix}/{name}")
                except (ClientError, BotoCoreError) as error:
                    raise _JobFailed(
                        f"ClientError: Failed to upload {name} to s3://{bucket}/{prefix}/: {error}"
                    ) from error

    def _fail(self, job: TrainingJob, reason: str) -> None:
        with self.lock:
            job.failure_reason = reason[:FAILURE_REASON_CHARS]
        job.metrics = final_metrics(
            ((job.request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []),
            [host.log_path for host in job.hosts],
        )
        for host in job.hosts:
            logger.info(
                "stand-in: training job %s failed; %s log ends:\n%s",
                job.name,
                host.name,
                log_tail(host.log_path, 2000),
            )
        # Algorithm and client errors leave the instances healthy: a warm pool is kept.
        self._end(job, "Failed", "Training job failed", status="Failed", keep_pool=True)

    def _end(
        self, job: TrainingJob, secondary: str, message: str, *, status: str, keep_pool: bool
    ) -> None:
        with self.lock:
            if job.discarded:
                return
            job.ended = _now()
            job.enter(secondary, message, status=status)
            if keep_pool and job.keep_alive_s > 0 and job.started is not None:
                self._release_pool(job)
            elif job.pool is not None:
                # Nothing to keep: the instances never started.
                if job.pool in self.pools:
                    self.pools.remove(job.pool)
                job.warm_pool = None

    # -- the stand-in's own calls --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Jobs, their hosts' processes and logs, and the settings (``GET /_standin/training``)."""
        with self.lock:
            self._expire_pools()
            jobs = []
            for job in self.jobs.values():
                jobs.append(
                    {
                        "name": job.name,
                        "status": job.status,
                        "secondary_status": job.secondary,
                        "warm_pool": job.warm_pool,
                        "hosts": [
                            {
                                "host": host.name,
                                "pid": host.pid,
                                "running": host.pid is not None and host.exit_code() is None,
                                "directory": str(host.layout.root),
                                "log_tail": log_tail(host.log_path, 2000),
                            }
                            for host in job.hosts
                        ],
                    }
                )
            return {"settings": self.settings.as_dict(), "jobs": jobs}

    def reset(self) -> None:
        """Kill every training process at once and forget every job, pool and setting change."""
        with self.lock:
            jobs = list(self.jobs.values())
            for job in jobs:
                job.discarded = True
                job.stop_requested.set()
            for job in jobs:
                for host in job.hosts:
                    host.signal_group(signal.SIGKILL)
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=JOIN_TIMEOUT_S)
            for host in job.hosts:
                host.end_container()
        with self.lock:
            self.jobs.clear()
            self.pools.clear()
            self.settings = self.initial_settings
            self.rate.forget()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def shutdown(self) -> None:
        """The stand-in stops: no training process outlives it."""
        self.reset()


def _timestamp(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value))


def _time_filter(attribute: str, bound: datetime, *, after: bool) -> Callable[[TrainingJob], bool]:
    def keep(job: TrainingJob) -> bool:
        value = getattr(job, attribute) or job.created
        return value > bound if after else value < bound

    return keep
