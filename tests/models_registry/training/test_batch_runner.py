"""A batch on the local runner: one real entry-point process per host, each training its share
from the manifest chosen by its resourceconfig.json, one task's failure left to that task."""

from __future__ import annotations

import json
import tarfile

from models_registry.demo.tickets import generate_tickets
from models_registry.training import batching
from models_registry.training.runner import prepare_batch_dir, process_alive, run_local_batch

ONE_LABEL = [{"text": f"Where is refund number {n}?", "label": "refund"} for n in range(12)]


def tickets(seed: int) -> tuple[list[dict], list[dict]]:
    rows = generate_tickets("zoomride", rows=24, seed=seed)
    return rows[:16], rows[16:]


def test_each_host_trains_its_share_and_a_failing_task_fails_alone(
    tmp_path, base_encoder_files, base_encoder_cache_dir
):
    queued = [
        batching.QueuedTask(job_id=11, kind="intent-classifier", size=24),
        batching.QueuedTask(job_id=12, kind="intent-classifier", size=24),
        batching.QueuedTask(job_id=13, kind="intent-classifier", size=12),
    ]
    plan = batching.plan_one(
        queued,
        kind="intent-classifier",
        limits=batching.BatchLimits(min_jobs=2, max_instances=2, tasks_per_instance=2),
    )
    assert plan.instance_count == 2
    output = tmp_path / "output"
    document = batching.manifest(batch_name="tml-batch-test", plan=plan, output_uri=str(output))
    for host in document["hosts"]:
        for task in host:
            task["hyperparameters"] = {"epochs": 50}
    prepare_batch_dir(
        batch_dir=tmp_path,
        manifest=document,
        task_rows={11: tickets(1), 12: tickets(2), 13: (ONE_LABEL[:8], ONE_LABEL[8:])},
    )
    started: list[tuple[str, int]] = []

    outcome = run_local_batch(
        batch_dir=tmp_path,
        should_cancel=lambda: False,
        timeout_s=120,
        poll_s=0.1,
        extra_env={"TENANTML_BASE_MODEL_CACHE": str(base_encoder_cache_dir)},
        on_start=lambda host, pid: started.append((host, pid)),
    )

    assert outcome.status == "succeeded", outcome.failure_reason
    assert sorted(host for host, _ in started) == ["algo-1", "algo-2"]
    assert not any(process_alive(pid) for _, pid in started)
    results = outcome.results
    assert {job: results[job]["status"] for job in results} == {
        11: "succeeded",
        12: "succeeded",
        13: "failed",
    }
    assert "at least two labels" in results[13]["reason"]
    assert not (output / "13" / batching.MODEL_ARCHIVE).exists()
    for job in (11, 12):
        # Each trained task is its own artifact, trained on the host the plan gave it.
        assert results[job]["host"] == plan.host_of(job)
        assert results[job]["metrics"]["kind"] == "intent-classifier"
        assert 0.0 <= results[job]["metrics"]["metrics"]["macro_f1"] <= 1.0
        with tarfile.open(output / str(job) / batching.MODEL_ARCHIVE) as archive:
            assert {"head.npz", "labels.json", "encoder.onnx"} <= set(archive.getnames())
    # The failing task shared its host with a trained one: the host went on after it.
    failing_host = plan.host_of(13)
    assert any(plan.host_of(job) == failing_host for job in (11, 12))
    summary = json.loads(
        (tmp_path / "hosts" / failing_host / "output" / "data" / "metrics.json").read_text()
    )
    assert summary == {"tasks": 2, "succeeded": 1, "failed": 1}
