"""The local batch backend: a batch's hosts as processes of the worker's machine.

The batch is laid out as its SageMaker instances would see it (``runner.prepare_batch_dir``: one
batch channel, one ``/opt/ml`` per host with its ``resourceconfig.json``) and one batch entry
point process per host runs at once (``runner.run_local_batch``). ``launch_batch`` returns when
every host has ended, with each trained task's ``model.tar.gz`` stored in the artifact store. A
batch is stopped only when every job it trains was cancelled.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from django.conf import settings

from models_registry import artifacts
from models_registry.training import batching
from models_registry.training.backends.batches import (
    BatchProgress,
    BatchReport,
    BatchTask,
    TaskResult,
    task_result,
)
from models_registry.training.runner import prepare_batch_dir, run_local_batch


class LocalBatchBackend:
    """Trains a batch in the worker that launched it, one process per host."""

    name = "local"

    def configuration_problem(self) -> str:
        return ""

    def launch_batch(
        self,
        *,
        name: str,
        plan: batching.BatchPlan,
        tasks: Mapping[int, BatchTask],
        progress: BatchProgress,
    ) -> BatchReport:
        """Run every host of the batch here until all have ended; the results of its tasks."""
        batch_dir = Path(settings.VAR_DIR) / "training" / "batches" / name
        output = batch_dir / "output"
        try:
            # A previous attempt's files would mix with this one's.
            shutil.rmtree(batch_dir, ignore_errors=True)
            prepare_batch_dir(
                batch_dir=batch_dir,
                manifest=batching.manifest(batch_name=name, plan=plan, output_uri=str(output)),
                task_rows={
                    job_id: (task.train_rows, task.validation_rows)
                    for job_id, task in tasks.items()
                },
            )
        except (OSError, ValueError) as exc:
            return BatchReport(state="failed", failure_reason=f"Preparing the batch failed: {exc}")
        busiest = max(len(host) for host in plan.hosts)
        outcome = run_local_batch(
            batch_dir=batch_dir,
            should_cancel=progress.should_cancel,
            # Each host trains its tasks one after another, each within the training timeout.
            timeout_s=float(settings.TENANTML_TRAINING_TIMEOUT_S) * busiest,
            on_start=lambda host, pid: progress.on_start(host, str(pid)),
            extra_env={
                "TENANTML_BASE_MODEL_CACHE": str(Path(settings.VAR_DIR) / "cache" / "base_models")
            },
        )
        results: dict[int, TaskResult] = {}
        for job_id, document in outcome.results.items():
            archive = output / str(job_id) / batching.MODEL_ARCHIVE
            uri = ""
            if document.get("status") == "succeeded" and job_id in tasks:
                task = tasks[job_id]
                uri = artifacts.put_file(
                    f"models/{task.tenant_slug}/{task.model_name}/jobs/{job_id}/"
                    f"{batching.MODEL_ARCHIVE}",
                    archive,
                ).uri
            results[job_id] = task_result(job_id=job_id, document=document, artifact_uri=uri)
        # The archives are in the store now; the hosts' logs stay, as a local job's directory does.
        shutil.rmtree(output, ignore_errors=True)
        return BatchReport(
            state=outcome.status,
            results=results,
            failure_reason=outcome.failure_reason,
            summary=f"trained here on {plan.instance_count} processes",
        )

    def follow_batch(self, *, name: str, waiting: Sequence[int]) -> None:
        # The worker running the batch reports its outcome itself.
        return None

    def stop_batch(self, *, name: str) -> None:
        # The runner polls ``BatchProgress.should_cancel`` and stops the processes itself.
        return None
