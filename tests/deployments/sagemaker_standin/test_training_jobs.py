"""Training jobs on the stand-in run for real: a script-mode job's hosts run as processes with
SageMaker's /opt/ml layout and the toolkit's environment, their model is uploaded as SageMaker
uploads it, failures, stops, the runtime limit, warm pools and the launch rate behave as AWS
documents them; and the platform's own SageMaker training path trains a real model on it."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import time
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from tests.deployments.sagemaker_standin.helpers import ROLE_ARN, wait_for

BUCKET = "standin-training"
IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "pytorch-training:2.3.0-cpu-py311-ubuntu20.04-sagemaker"
)
FINISHED = ("Completed", "Failed", "Stopped")

# Each host reports what its container showed it, then leaves a model file named after itself.
REPORTING_SCRIPT = textwrap.dedent(
    """\
    import json, os, pathlib, sys
    import boto3

    host = os.environ["SM_CURRENT_HOST"]
    config = pathlib.Path(os.environ["SM_INPUT_CONFIG_DIR"])
    seen = {
        "resourceconfig": json.loads((config / "resourceconfig.json").read_text()),
        "hyperparameters": json.loads((config / "hyperparameters.json").read_text()),
        "argv": sys.argv[1:],
        "hosts": json.loads(os.environ["SM_HOSTS"]),
        "gpus": os.environ["SM_NUM_GPUS"],
        "learning_rate": os.environ["SM_HP_LEARNING_RATE"],
        "train": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])),
        "shards": sorted(os.listdir(os.environ["SM_CHANNEL_SHARDS"])),
        "job": os.environ["TRAINING_JOB_NAME"],
    }
    model = pathlib.Path(os.environ["SM_MODEL_DIR"])
    (model / f"{host}.json").write_text(json.dumps(seen))
    pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], f"{host}.log").write_text("trained")
    # The job's role may write to S3: the container reaches the stand-in's S3 by itself.
    boto3.client("s3").put_object(Bucket="standin-training", Key=f"written-by/{host}", Body=b"1")
    print(f"epoch 1 loss={0.5};")
    print(f"epoch 2 loss={0.25};")
    """
)
FAILING_SCRIPT = textwrap.dedent(
    """\
    import os, pathlib, sys
    pathlib.Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text("row 7 has no label")
    sys.exit(1)
    """
)
# Ignores SIGTERM and leaves a child behind: only SIGKILL to the whole group ends the host.
STUBBORN_SCRIPT = textwrap.dedent(
    """\
    import os, pathlib, signal, subprocess, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen(["sleep", "60"])
    pathlib.Path(os.environ["SM_MODEL_DIR"], "checkpoint.txt").write_text("epoch 3")
    time.sleep(60)
    """
)
SLEEPING_SCRIPT = "import time\ntime.sleep(60)\n"
# Counts the jobs that ran on the same warm-pool instance, in its persistent cache.
CACHE_SCRIPT = textwrap.dedent(
    """\
    import os, pathlib
    counter = pathlib.Path(os.environ["SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY"], "runs")
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    pathlib.Path(os.environ["SM_MODEL_DIR"], "runs.txt").write_text(str(runs))
    """
)


def put_sourcedir(s3: Any, key: str, script: str) -> str:
    """A ``sourcedir.tar.gz`` holding ``train.py`` at ``s3://BUCKET/key``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = script.encode()
        member = tarfile.TarInfo("train.py")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    return f"s3://{BUCKET}/{key}"


def job_request(
    name: str,
    sourcedir: str,
    *,
    count: int = 1,
    keep_alive_s: int = 0,
    volume_gb: int = 30,
    learning_rate: str = "0.1",
    **overrides: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": count,
        "VolumeSizeInGB": volume_gb,
    }
    if keep_alive_s:
        resources["KeepAlivePeriodInSeconds"] = keep_alive_s
    request = {
        "TrainingJobName": name,
        "RoleArn": ROLE_ARN,
        "AlgorithmSpecification": {
            "TrainingImage": IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "train:loss", "Regex": r"loss=([0-9.]+);"}],
        },
        "HyperParameters": {
            "learning_rate": learning_rate,
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": json.dumps(sourcedir),
        },
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{BUCKET}/data/train/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/output/"},
        "ResourceConfig": resources,
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    request.update(overrides)
    return request


def wait_job(sagemaker: Any, name: str, *statuses: str, timeout_s: float = 60.0) -> dict:
    wanted = statuses or FINISHED
    return wait_for(
        lambda: (
            (d := sagemaker.describe_training_job(TrainingJobName=name))["TrainingJobStatus"]
            in wanted
            and d
        ),
        timeout_s=timeout_s,
        what=f"training job {name} to be {wanted}",
    )


def tar_members(s3: Any, key: str) -> dict[str, bytes]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def keys(s3: Any, prefix: str) -> list[str]:
    return sorted(
        entry["Key"]
        for entry in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents") or []
    )


@pytest.fixture
def standin(clean_sagemaker_standin):
    s3 = clean_sagemaker_standin.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="data/train/rows.jsonl", Body=b'{"text": "hi"}\n')
    return clean_sagemaker_standin


def test_a_two_host_job_runs_each_host_and_uploads_one_model_from_both(standin):
    sagemaker, s3 = standin.client("sagemaker"), standin.client("s3")
    for shard in ("a", "b"):
        s3.put_object(Bucket=BUCKET, Key=f"data/shards/{shard}.jsonl", Body=b"{}\n")
    sharded = {
        "ChannelName": "shards",
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{BUCKET}/data/shards/",
                "S3DataDistributionType": "ShardedByS3Key",
            }
        },
    }
    request = job_request("pair", put_sourcedir(s3, "code/pair.tar.gz", REPORTING_SCRIPT), count=2)
    request["InputDataConfig"].append(sharded)

    arn = sagemaker.create_training_job(**request)["TrainingJobArn"]
    described = wait_job(sagemaker, "pair")

    assert arn.endswith(":training-job/pair")
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{BUCKET}/output/pair/output/model.tar.gz"
    model = tar_members(s3, "output/pair/output/model.tar.gz")
    assert sorted(model) == ["algo-1.json", "algo-2.json"]
    seen = {host: json.loads(model[f"{host}.json"]) for host in ("algo-1", "algo-2")}
    for host, report in seen.items():
        assert report["resourceconfig"]["current_host"] == host
        assert report["resourceconfig"]["hosts"] == ["algo-1", "algo-2"] == report["hosts"]
        assert report["argv"] == ["--learning_rate", "0.1"]
        assert report["hyperparameters"]["sagemaker_program"] == '"train.py"'
        assert (report["gpus"], report["learning_rate"], report["job"]) == ("0", "0.1", "pair")
        assert report["train"] == ["rows.jsonl"]
    assert seen["algo-1"]["shards"] == ["a.jsonl"] and seen["algo-2"]["shards"] == ["b.jsonl"]
    assert sorted(tar_members(s3, "output/pair/output/output.tar.gz")) == [
        "algo-1.log",
        "algo-2.log",
    ]
    assert keys(s3, "written-by/") == ["written-by/algo-1", "written-by/algo-2"]
    assert [(m["MetricName"], m["Value"]) for m in described["FinalMetricDataList"]] == [
        ("train:loss", 0.25)
    ]
    assert described["TrainingStartTime"] <= described["TrainingEndTime"]
    assert described["BillableTimeInSeconds"] == described["TrainingTimeInSeconds"] >= 1
    assert "WarmPoolStatus" not in described
    standin.assert_no_training_processes()


def test_a_failing_script_fails_the_job_with_its_failure_file_and_uploads_nothing(standin):
    sagemaker, s3 = standin.client("sagemaker"), standin.client("s3")
    sagemaker.create_training_job(
        **job_request("broken", put_sourcedir(s3, "code/broken.tar.gz", FAILING_SCRIPT))
    )

    described = wait_job(sagemaker, "broken")

    assert described["TrainingJobStatus"] == "Failed"
    assert described["SecondaryStatus"] == "Failed"
    assert described["FailureReason"] == "AlgorithmError: row 7 has no label"
    assert keys(s3, "output/") == []


def test_a_stopped_job_ends_every_process_of_its_host_and_keeps_what_it_saved(standin):
    sagemaker, s3 = standin.client("sagemaker"), standin.client("s3")
    standin.configure_training(stop_grace_s=0.5)
    sagemaker.create_training_job(
        **job_request("stubborn", put_sourcedir(s3, "code/stubborn.tar.gz", STUBBORN_SCRIPT))
    )
    wait_for(lambda: len(standin.training_processes()) == 2, what="the script and its child")

    sagemaker.stop_training_job(TrainingJobName="stubborn")
    stopping = sagemaker.describe_training_job(TrainingJobName="stubborn")
    described = wait_job(sagemaker, "stubborn", "Stopped")

    assert stopping["TrainingJobStatus"] == "Stopping"
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]][-2:] == [
        "Stopping",
        "Stopped",
    ]
    standin.assert_no_training_processes()
    # AWS keeps what the algorithm saved in its SIGTERM window.
    assert tar_members(s3, "output/stubborn/output/model.tar.gz") == {"checkpoint.txt": b"epoch 3"}
    with pytest.raises(botocore.exceptions.ClientError, match="in status Stopped"):
        sagemaker.stop_training_job(TrainingJobName="stubborn")


def test_a_job_past_its_max_runtime_is_stopped_as_max_runtime_exceeded(standin):
    sagemaker, s3 = standin.client("sagemaker"), standin.client("s3")
    sourcedir = put_sourcedir(s3, "code/sleepy.tar.gz", SLEEPING_SCRIPT)
    sagemaker.create_training_job(
        **job_request("sleepy", sourcedir, StoppingCondition={"MaxRuntimeInSeconds": 1})
    )

    described = wait_job(sagemaker, "sleepy")

    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == (
        "Stopped",
        "MaxRuntimeExceeded",
    )
    standin.assert_no_training_processes()


def test_a_matching_job_reuses_the_warm_pool_and_an_unused_pool_is_terminated(standin):
    sagemaker, s3 = standin.client("sagemaker"), standin.client("s3")
    standin.configure_training(launches_per_s=0, provisioning_s=0.6)
    sourcedir = put_sourcedir(s3, "code/cache.tar.gz", CACHE_SCRIPT)
    sagemaker.create_training_job(**job_request("first", sourcedir, keep_alive_s=2))
    first = wait_job(sagemaker, "first")
    assert first["WarmPoolStatus"]["Status"] == "Available"

    # Another volume size is another configuration: it cannot take the pool.
    sagemaker.create_training_job(**job_request("other", sourcedir, keep_alive_s=2, volume_gb=50))
    # New hyperparameters (or code, or image) do not stop a job from taking the pool.
    sagemaker.create_training_job(
        **job_request("second", sourcedir, keep_alive_s=2, learning_rate="0.2")
    )
    in_use = sagemaker.describe_training_job(TrainingJobName="second")["WarmPoolStatus"]
    second = wait_job(sagemaker, "second")
    other = wait_job(sagemaker, "other")
    first = sagemaker.describe_training_job(TrainingJobName="first")

    assert in_use == {"Status": "InUse"}
    assert first["WarmPoolStatus"]["Status"] == "Reused"
    assert first["WarmPoolStatus"]["ReusedByJob"] == "second"
    assert other["WarmPoolStatus"]["Status"] == "Available"
    starting = {
        job["TrainingJobName"]: (
            job["SecondaryStatusTransitions"][0]["EndTime"]
            - job["SecondaryStatusTransitions"][0]["StartTime"]
        ).total_seconds()
        for job in (first, second, other)
    }
    assert starting["first"] >= 0.6 and starting["other"] >= 0.6 and starting["second"] < 0.5
    assert tar_members(s3, "output/second/output/model.tar.gz") == {"runs.txt": b"2"}
    listed = sagemaker.list_training_jobs(WarmPoolStatusEquals="Reused")["TrainingJobSummaries"]
    assert [job["TrainingJobName"] for job in listed] == ["first"]

    # Nobody takes the second job's pool within its keep-alive: it is terminated.
    wait_for(
        lambda: (
            sagemaker.describe_training_job(TrainingJobName="second")["WarmPoolStatus"]["Status"]
            == "Terminated"
        ),
        timeout_s=10,
        what="the unused pool to be terminated",
    )
    terminated = sagemaker.describe_training_job(TrainingJobName="second")["WarmPoolStatus"]
    assert terminated["ResourceRetainedBillableTimeInSeconds"] == 2


def test_launches_beyond_one_a_second_are_throttled_and_bad_requests_name_the_field(standin):
    s3 = standin.client("s3")
    sagemaker = boto3.client(
        "sagemaker",
        region_name=standin.region,
        # No retries, and no client-side checks, so every answer is the stand-in's own.
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False),
    )
    sourcedir = put_sourcedir(s3, "code/sleepy.tar.gz", SLEEPING_SCRIPT)

    sagemaker.create_training_job(**job_request("burst-1", sourcedir))
    with pytest.raises(botocore.exceptions.ClientError) as throttled:
        sagemaker.create_training_job(**job_request("burst-2", sourcedir))
    time.sleep(1.0)
    sagemaker.create_training_job(**job_request("burst-3", sourcedir))

    assert throttled.value.response["Error"] == {
        "Code": "ThrottlingException",
        "Message": "Rate exceeded",
    }
    standin.configure_training(launches_per_s=0)
    with pytest.raises(botocore.exceptions.ClientError) as duplicate:
        sagemaker.create_training_job(**job_request("burst-1", sourcedir))
    assert duplicate.value.response["Error"]["Code"] == "ResourceInUse"
    bad = job_request("-bad-name", sourcedir, keep_alive_s=4000)
    bad["HyperParameters"]["epochs"] = 3
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sagemaker.create_training_job(**bad)
    message = refused.value.response["Error"]["Message"]
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert message.startswith("3 validation errors detected: ")
    assert "at 'trainingJobName' failed to satisfy constraint" in message
    assert "at 'hyperParameters.epochs' failed to satisfy constraint: Member must be a string" in (
        message
    )
    assert (
        "Value '4000' at 'resourceConfig.keepAlivePeriodInSeconds' failed to satisfy constraint: "
        "Member must have value less than or equal to 3600" in message
    )
    names = [
        job["TrainingJobName"] for job in sagemaker.list_training_jobs()["TrainingJobSummaries"]
    ]
    assert names == ["burst-1", "burst-3"]


@pytest.mark.django_db
def test_the_platform_trains_an_intent_classifier_on_the_standin_and_registers_its_artifact(
    clean_sagemaker_standin, settings, tenant, base_encoder_files, base_encoder_cache_dir
):
    from config.env import ArtifactStore
    from models_registry.demo.tickets import generate_tickets, to_csv
    from models_registry.models import ModelVersion, TrainingJob
    from models_registry.services.datasets import create_dataset
    from models_registry.services.registry import create_model
    from models_registry.services.training import (
        follow_training_job,
        launch_training_job,
        start_training_job,
    )
    from models_registry.training.backends.sagemaker import SageMakerTrainingBackend
    from models_registry.training.sagemaker_client import SageMakerTrainingClient

    standin = clean_sagemaker_standin
    standin.client("s3").create_bucket(Bucket=BUCKET)
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE_ARN
    settings.TENANTML_AWS_REGION = standin.region
    # The session's exported base encoder stands in for the image's copy of it.
    standin.configure_training(
        environment={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)}
    )
    rows = generate_tickets("zoomride", rows=120, seed=3)
    dataset = create_dataset(tenant=tenant, name="tickets.csv", content=to_csv(rows), actor="t")
    model = create_model(tenant=tenant, name="intents", kind="intent-classifier", actor="t")
    job, _ = start_training_job(model=model, dataset=dataset, actor="t", backend="sagemaker")
    backend = SageMakerTrainingBackend(client=SageMakerTrainingClient(region=standin.region))

    job = launch_training_job(job_id=job.pk, backend=backend)
    deadline = time.monotonic() + 180
    # Followed as the periodic pass does, a few times a second: the job needs the CPU more.
    while job.status not in (TrainingJob.Status.SUCCEEDED, TrainingJob.Status.FAILED):
        assert time.monotonic() < deadline, "the platform's training job did not end"
        time.sleep(0.25)
        job = follow_training_job(job=job, backend=backend)

    name = job.external_id.rsplit("/", 1)[-1]
    described = standin.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert job.status == TrainingJob.Status.SUCCEEDED, described.get("FailureReason")
    assert described["HyperParameters"]["sagemaker_program"] == "train.py"
    version = ModelVersion.objects.get(training_job=job)
    assert version.artifact_uri == described["ModelArtifacts"]["S3ModelArtifacts"]
    assert version.status == ModelVersion.Status.READY
    final = {m["MetricName"]: m["Value"] for m in described["FinalMetricDataList"]}
    assert version.metrics["macro_f1"] == pytest.approx(final["validation:macro_f1"], rel=1e-5)
    model.refresh_from_db()
    assert model.active_version == version
    standin.assert_no_training_processes()
