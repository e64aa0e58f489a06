"""Batch training, the pure part: which queued jobs train together, on which host, and the
manifest the hosts read.

SageMaker accepts about one CreateTrainingJob a second per account. When onboarding queues more
jobs than that, queued jobs of one kind are packed into one multi-instance training job: ``K``
instances (``InstanceCount``), each training its share of the tasks one after another.

The rules, all here and all pure (no Django, no ORM; the training container imports this module
to read its manifest):

- Only jobs of the same kind and the same hyperparameters batch together (``group_key``): every
  task of a batch then trains the same way, so a task's size (its dataset's rows) compares like
  with like. A group batches only when at least ``min_jobs`` of its jobs wait.
- A group is sorted by size, largest first, and cut into the fewest batches that hold it
  (``max_instances × tasks_per_instance`` tasks each), of near-equal counts and consecutive in
  that order: tasks of similar size share a batch, so one long task never keeps a cluster of
  short ones up.
- A batch has ``K = min(max_instances, ceil(tasks / tasks_per_instance))`` hosts, and its tasks are
  spread over them longest-processing-time first (each task, largest first, to the host with
  the least work so far): the busiest host, which decides when the job ends, carries at most
  4/3 of the best possible load (Graham's bound).
- Hosts are SageMaker's ``algo-1`` … ``algo-K``; a host finds its index in
  ``/opt/ml/input/config/resourceconfig.json`` (``hosts.index(current_host)``) and trains the
  manifest's ``hosts[index]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
RESULT_FILE = "result.json"
MODEL_ARCHIVE = "model.tar.gz"
# Each task's inputs sit in the batch channel under ``<job id>/``, beside the manifest.
TASK_FILES = ("train.jsonl", "validation.jsonl")


@dataclass(frozen=True)
class QueuedTask:
    """One queued training job as the grouping sees it: its kind, hyperparameters and size."""

    job_id: int
    kind: str
    size: int  # the dataset's rows: training time grows with them
    hyperparameters: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class BatchLimits:
    """How batches are cut: batching starts at ``min_jobs`` waiting jobs of a group (0: never)."""

    min_jobs: int
    max_instances: int
    tasks_per_instance: int

    def __post_init__(self) -> None:
        if self.min_jobs != 0 and self.min_jobs < 2:
            raise ValueError(f"min_jobs must be 0 (off) or at least 2, not {self.min_jobs}.")
        if self.max_instances < 1 or self.tasks_per_instance < 1:
            raise ValueError("max_instances and tasks_per_instance must be at least 1.")

    @property
    def enabled(self) -> bool:
        return self.min_jobs >= 2

    @property
    def capacity(self) -> int:
        """The most tasks one batch holds."""
        return self.max_instances * self.tasks_per_instance


@dataclass(frozen=True)
class BatchPlan:
    """One multi-instance training job: the tasks each host trains, in order."""

    kind: str
    hyperparameters: Mapping
    hosts: tuple[tuple[QueuedTask, ...], ...]

    @property
    def instance_count(self) -> int:
        return len(self.hosts)

    @property
    def tasks(self) -> tuple[QueuedTask, ...]:
        return tuple(task for host in self.hosts for task in host)

    @property
    def job_ids(self) -> tuple[int, ...]:
        return tuple(sorted(task.job_id for task in self.tasks))

    def host_of(self, job_id: int) -> str:
        """The host (``algo-N``) that trains ``job_id``."""
        for index, host in enumerate(self.hosts):
            if any(task.job_id == job_id for task in host):
                return host_name(index)
        raise KeyError(job_id)

    @property
    def makespan(self) -> int:
        """The busiest host's load, in rows: what the whole cluster waits for."""
        return max((sum(task.size for task in host) for host in self.hosts), default=0)


def host_name(index: int) -> str:
    """SageMaker's name for the host at ``index`` of ``resourceconfig.json``'s hosts."""
    return f"algo-{index + 1}"


def group_key(task: QueuedTask) -> tuple[str, str]:
    """What must be equal for two tasks to share a batch: the kind and the hyperparameters."""
    return task.kind, json.dumps(dict(task.hyperparameters), sort_keys=True, default=str)


def balance(tasks: Iterable[QueuedTask], *, hosts: int) -> tuple[tuple[QueuedTask, ...], ...]:
    """Spread ``tasks`` over ``hosts`` hosts, longest-processing-time first; each host's tasks
    largest first. Ties go to the lowest host index and the lowest job id, so a plan is
    reproducible."""
    if hosts < 1:
        raise ValueError("A batch needs at least one host.")
    loads = [0] * hosts
    assigned: list[list[QueuedTask]] = [[] for _ in range(hosts)]
    for task in sorted(tasks, key=lambda task: (-task.size, task.job_id)):
        index = min(range(hosts), key=lambda i: (loads[i], i))
        assigned[index].append(task)
        loads[index] += task.size
    return tuple(tuple(host) for host in assigned)


def plan_batches(tasks: Iterable[QueuedTask], *, limits: BatchLimits) -> list[BatchPlan]:
    """The batches to launch for these queued tasks (each task in at most one); a group with
    fewer than ``limits.min_jobs`` tasks is left to launch job by job."""
    if not limits.enabled:
        return []
    groups: dict[tuple[str, str], list[QueuedTask]] = {}
    for task in tasks:
        groups.setdefault(group_key(task), []).append(task)
    plans: list[BatchPlan] = []
    for (kind, _), group in sorted(groups.items()):
        if len(group) < limits.min_jobs:
            continue
        ordered = sorted(group, key=lambda task: (-task.size, task.job_id))
        for chunk in _near_equal_chunks(ordered, parts=math.ceil(len(ordered) / limits.capacity)):
            plans.append(plan_one(chunk, limits=limits, kind=kind))
    return plans


def plan_one(tasks: Sequence[QueuedTask], *, limits: BatchLimits, kind: str) -> BatchPlan:
    """One batch of exactly ``tasks`` (at most ``limits.capacity``), on as few hosts as hold them
    at ``tasks_per_instance`` each, up to ``max_instances``."""
    if not tasks:
        raise ValueError("A batch needs at least one task.")
    if len(tasks) > limits.capacity:
        raise ValueError(f"{len(tasks)} tasks exceed a batch's {limits.capacity}.")
    hosts = min(limits.max_instances, math.ceil(len(tasks) / limits.tasks_per_instance))
    return BatchPlan(
        kind=kind, hyperparameters=dict(tasks[0].hyperparameters), hosts=balance(tasks, hosts=hosts)
    )


def _near_equal_chunks(items: list[QueuedTask], *, parts: int) -> list[list[QueuedTask]]:
    # Consecutive slices whose lengths differ by at most one (the first ones take the extra).
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


# ---------------------------------------------------------------------------------------------
# The manifest: what the batch's hosts read (the batch channel's manifest.json)
# ---------------------------------------------------------------------------------------------


def manifest(*, batch_name: str, plan: BatchPlan, output_uri: str) -> dict:
    """The manifest document: the kind, where results go, and each host's tasks in order.

    ``output_uri`` is an ``s3://`` prefix or a local directory; a task's artifact goes to
    ``<output>/<job id>/model.tar.gz`` and its result to ``<output>/<job id>/result.json``.
    """
    return {
        "version": MANIFEST_VERSION,
        "batch": batch_name,
        "kind": plan.kind,
        "output": output_uri,
        "hosts": [
            [{"job": task.job_id, "hyperparameters": dict(task.hyperparameters)} for task in host]
            for host in plan.hosts
        ],
    }


class ManifestError(ValueError):
    """The batch manifest cannot be read; the message says what is wrong with it."""


def host_tasks(document: object, *, host_index: int) -> list[dict]:
    """The tasks (``{"job", "hyperparameters"}``) the host at ``host_index`` trains, checked."""
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise ManifestError(f"The batch manifest must be a version {MANIFEST_VERSION} object.")
    if not isinstance(document.get("kind"), str) or not document["kind"]:
        raise ManifestError("The batch manifest names no kind.")
    if not isinstance(document.get("output"), str) or not document["output"]:
        raise ManifestError("The batch manifest names no output location.")
    hosts = document.get("hosts")
    if not isinstance(hosts, list) or not all(isinstance(host, list) for host in hosts):
        raise ManifestError("The batch manifest's hosts must be a list of task lists.")
    if not 0 <= host_index < len(hosts):
        raise ManifestError(
            f"The batch manifest plans {len(hosts)} hosts; this is host {host_index + 1}."
        )
    tasks = hosts[host_index]
    for task in tasks:
        if (
            not isinstance(task, dict)
            or not isinstance(task.get("job"), int)
            or not isinstance(task.get("hyperparameters", {}), dict)
        ):
            raise ManifestError(f"A task of host {host_index + 1} is malformed: {task!r}.")
    return tasks


def host_index(resource_config: object) -> int:
    """This host's index from ``resourceconfig.json`` (``hosts.index(current_host)``)."""
    if not isinstance(resource_config, dict):
        raise ManifestError("resourceconfig.json must hold a JSON object.")
    current, hosts = resource_config.get("current_host"), resource_config.get("hosts")
    if not isinstance(hosts, list) or current not in hosts:
        raise ManifestError(
            f"resourceconfig.json's current_host {current!r} is not among its hosts {hosts!r}."
        )
    # SageMaker lists the hosts sorted (algo-1, algo-2, …); sort anyway so every host agrees.
    return sorted(hosts, key=_host_order).index(current)


def _host_order(name: object) -> tuple[str, int, str]:
    # algo-2 before algo-10: by prefix, then number.
    prefix, _, number = str(name).rpartition("-")
    return (prefix, int(number), "") if number.isdigit() else (str(name), -1, str(name))


def task_output(output_uri: str, job_id: int, name: str) -> str:
    """Where a task's ``name`` (model.tar.gz or result.json) goes under the batch's output."""
    return f"{output_uri.rstrip('/')}/{job_id}/{name}"
