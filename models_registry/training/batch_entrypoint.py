"""The batch training entry point: one host of a multi-instance training job trains its share.

Run as ``python -m models_registry.training.batch_entrypoint`` (the local runner, one process per
host) or as ``train_batch.py`` from the sourcedir in a SageMaker PyTorch training container (one
per instance). It reads

- the batch channel (``SM_CHANNEL_BATCH``, default ``/opt/ml/input/data/batch``): the manifest
  (``manifest.json``, see ``batching.manifest``) and each task's ``<job id>/train.jsonl`` and
  ``<job id>/validation.jsonl``;
- ``<SM_INPUT_CONFIG_DIR>/resourceconfig.json`` (``/opt/ml/input/config``): ``current_host`` and
  ``hosts``, whose index picks this host's tasks from the manifest (``SM_CURRENT_HOST`` and
  ``SM_HOSTS``, which the training toolkit sets from the same file, where it is missing);
- ``TENANTML_BASE_MODEL_CACHE`` and the ``SM_*`` directories, as the single-job entry point does.

It trains its tasks one after another in this one process, so the libraries and the base
encoder's export are loaded once for all of them. As each task ends it writes, under the
manifest's ``output`` (an ``s3://`` prefix or a local directory), ``<job id>/model.tar.gz`` (the
model directory's files at the archive's root, as SageMaker packs ``/opt/ml/model``; trained tasks
only) and then ``<job id>/result.json`` (``{"job", "host", "status": "succeeded"|"failed",
"reason", "metrics", "seconds"}``, ``metrics`` being the single-job ``metrics.json`` document). A
result therefore means its artifact is complete. Each host uploads its own: SageMaker does not
say which instances' ``/opt/ml/model`` a multi-instance job uploads, so nothing here relies on it
(boto3 is in the PyTorch training container and finds the endpoint through
``AWS_ENDPOINT_URL_S3`` where that is set). A failed task is a result like any other: one
task's exception never stops the others.

``SM_OUTPUT_DATA_DIR/metrics.json`` gets the host's summary (tasks, succeeded, failed). Exit
status: 0 every task of this host has its result; 1 the manifest or resourceconfig.json cannot
be read (the reason in ``/opt/ml/output/failure``); 2 a result could not be written; 143 stopped
by SIGTERM. Django is not imported, as in the single-job entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from types import FrameType

from config.errors import DomainError
from models_registry.training import batching
from models_registry.training.entrypoint import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_TERMINATED,
    METRICS_FILE,
    TrainingPaths,
    train,
    write_failure,
)

BATCH_CHANNEL = "batch"
RESOURCE_CONFIG_FILE = "resourceconfig.json"
_REASON_CHARS = 1000


def batch_channel_dir(env: dict[str, str] | None = None) -> Path:
    """Where the batch channel (manifest and task inputs) is mounted."""
    env = dict(os.environ if env is None else env)
    return Path(env.get("SM_CHANNEL_BATCH", f"/opt/ml/input/data/{BATCH_CHANNEL}"))


def read_host_index(config_dir: Path, env: dict[str, str] | None = None) -> int:
    """This host's index among the job's hosts, from resourceconfig.json (or SM_* variables)."""
    env = dict(os.environ if env is None else env)
    path = Path(config_dir) / RESOURCE_CONFIG_FILE
    if path.is_file():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise batching.ManifestError(f"{path} is not valid JSON: {exc}.") from None
        return batching.host_index(document)
    if env.get("SM_CURRENT_HOST") and env.get("SM_HOSTS"):
        try:
            hosts = json.loads(env["SM_HOSTS"])
        except json.JSONDecodeError as exc:
            raise batching.ManifestError(f"SM_HOSTS is not valid JSON: {exc}.") from None
        return batching.host_index({"current_host": env["SM_CURRENT_HOST"], "hosts": hosts})
    raise batching.ManifestError(
        f"No {RESOURCE_CONFIG_FILE} in {config_dir} and no SM_CURRENT_HOST: which host is this?"
    )


class ResultWriter:
    """Puts a task's files under the batch's output: an ``s3://`` prefix or a local directory."""

    def __init__(self, output_uri: str, *, region: str | None = None) -> None:
        self.output_uri = output_uri
        self._s3 = None
        if output_uri.startswith("s3://"):
            import boto3  # in the PyTorch training container; imported only where needed

            self._s3 = boto3.client("s3", region_name=region or None)

    def put_file(self, job_id: int, name: str, source: Path) -> str:
        target = batching.task_output(self.output_uri, job_id, name)
        if self._s3 is not None:
            bucket, _, key = target.removeprefix("s3://").partition("/")
            self._s3.upload_file(str(source), bucket, key)
        else:
            _atomic_copy(source, Path(target))
        return target

    def put_bytes(self, job_id: int, name: str, content: bytes) -> str:
        target = batching.task_output(self.output_uri, job_id, name)
        if self._s3 is not None:
            bucket, _, key = target.removeprefix("s3://").partition("/")
            self._s3.put_object(Bucket=bucket, Key=key, Body=content)
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(tmp, path)
        return target


def _atomic_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def pack_model_dir(model_dir: Path, archive: Path) -> Path:
    """``model_dir``'s files at the archive's root, as SageMaker packs ``/opt/ml/model``."""
    # The fastest level: the int8 encoder barely compresses at any level (19 MB of 23 at 1 or
    # 9), and the host's time is billed.
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(Path(model_dir).rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
    return archive


def run_task(
    task: dict,
    *,
    kind: str,
    host: str,
    channel_dir: Path,
    paths: TrainingPaths,
    writer: ResultWriter,
) -> dict:
    """Train one task of the manifest and write its artifact and result; the result."""
    job_id = int(task["job"])
    task_dir = paths.output_dir / "tasks" / str(job_id)
    shutil.rmtree(task_dir, ignore_errors=True)
    task_paths = replace(
        paths,
        model_dir=task_dir / "model",
        output_data_dir=task_dir / "data",
        train_dir=channel_dir / str(job_id),
        validation_dir=channel_dir / str(job_id),
    )
    print(f"#task {job_id} started on {host}", flush=True)
    started = time.perf_counter()
    result = {"job": job_id, "host": host, "status": "failed", "reason": "", "metrics": {}}
    try:
        document = train(task_paths, {**task.get("hyperparameters", {}), "kind": kind})
        archive = pack_model_dir(task_paths.model_dir, task_dir / batching.MODEL_ARCHIVE)
        writer.put_file(job_id, batching.MODEL_ARCHIVE, archive)
        result.update(status="succeeded", metrics=document)
    except DomainError as exc:
        result["reason"] = exc.message[:_REASON_CHARS]
    except Exception as exc:  # this task's fault or ours; the host goes on with the next task
        traceback.print_exc()
        result["reason"] = f"Training failed: {type(exc).__name__}: {exc}"[:_REASON_CHARS]
    result["seconds"] = round(time.perf_counter() - started, 3)
    writer.put_bytes(
        job_id, batching.RESULT_FILE, (json.dumps(result, ensure_ascii=False) + "\n").encode()
    )
    shutil.rmtree(task_dir, ignore_errors=True)
    print(f"#task {job_id} {result['status']} {result['reason']}".rstrip(), flush=True)
    return result


def main(env: dict[str, str] | None = None) -> int:
    """Train this host's share of the batch; returns the process exit status."""
    paths = TrainingPaths.from_env(env)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # As in the single-job entry point: leave at once; tasks without a result are failed by
        # the platform with the batch's reason.
        write_failure(paths, "Training was stopped (SIGTERM).")
        print("#progress 100 stopped by SIGTERM", flush=True)
        sys.stderr.flush()
        os._exit(EXIT_TERMINATED)

    signal.signal(signal.SIGTERM, on_sigterm)
    channel_dir = batch_channel_dir(env)
    try:
        (paths.output_dir / "failure").unlink(missing_ok=True)
        index = read_host_index(paths.config_dir, env)
        try:
            document = json.loads((channel_dir / batching.MANIFEST_FILE).read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise batching.ManifestError(f"The batch manifest cannot be read: {exc}.") from None
        tasks = batching.host_tasks(document, host_index=index)
        writer = ResultWriter(document["output"], region=document.get("region"))
    except (batching.ManifestError, DomainError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        write_failure(paths, message)
        print(f"#failure {message}", file=sys.stderr, flush=True)
        return EXIT_INVALID
    host = batching.host_name(index)
    print(f"#progress 1 {host}: {len(tasks)} task(s) of batch {document.get('batch')}", flush=True)
    outcomes = {"tasks": len(tasks), "succeeded": 0, "failed": 0}
    for done, task in enumerate(tasks):
        try:
            result = run_task(
                task,
                kind=document["kind"],
                host=host,
                channel_dir=channel_dir,
                paths=paths,
                writer=writer,
            )
        except Exception as exc:  # the result itself could not be written: the platform must know
            traceback.print_exc()
            message = f"Writing the result of job {task.get('job')} failed: {exc}"
            write_failure(paths, message)
            print(f"#failure {message}", file=sys.stderr, flush=True)
            return EXIT_ERROR
        outcomes[result["status"]] += 1
        print(f"#progress {int(100 * (done + 1) / len(tasks))} {host}: {done + 1} done", flush=True)
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    (paths.output_data_dir / METRICS_FILE).write_text(json.dumps(outcomes) + "\n")
    print(
        f"#progress 100 {host}: {outcomes['succeeded']} trained, {outcomes['failed']} failed",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
