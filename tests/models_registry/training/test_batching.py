"""Batch planning, pure: which queued jobs train together, on which host, and how a host finds
its share of the manifest."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models_registry.training import batching
from models_registry.training.batch_entrypoint import read_host_index

LIMITS = batching.BatchLimits(min_jobs=4, max_instances=4, tasks_per_instance=4)

queued_tasks = st.lists(
    st.builds(
        batching.QueuedTask,
        job_id=st.integers(min_value=1, max_value=10_000),
        kind=st.sampled_from(["intent-classifier", "embedding"]),
        size=st.integers(min_value=1, max_value=5_000),
        hyperparameters=st.sampled_from([{}, {"epochs": 50}]),
    ),
    max_size=60,
    unique_by=lambda task: task.job_id,
)
limits = st.builds(
    batching.BatchLimits,
    min_jobs=st.sampled_from([2, 3, 4, 8]),
    max_instances=st.integers(min_value=1, max_value=6),
    tasks_per_instance=st.integers(min_value=1, max_value=5),
)


def load(host: tuple[batching.QueuedTask, ...]) -> int:
    return sum(task.size for task in host)


@settings(max_examples=200, deadline=None)
@given(tasks=queued_tasks, limits=limits)
def test_every_batch_is_one_kind_and_hyperparameters_within_its_limits(tasks, limits):
    plans = batching.plan_batches(tasks, limits=limits)

    planned = [task.job_id for plan in plans for task in plan.tasks]
    assert len(planned) == len(set(planned))  # no job in two batches
    for plan in plans:
        assert len({batching.group_key(task) for task in plan.tasks}) == 1
        assert plan.instance_count == min(
            limits.max_instances, math.ceil(len(plan.tasks) / limits.tasks_per_instance)
        )
        assert all(host for host in plan.hosts)  # no instance is paid for to do nothing
        assert len(plan.tasks) <= limits.capacity
    # A group batches whole once it reaches min_jobs, and not at all below it.
    groups: dict = {}
    for task in tasks:
        groups.setdefault(batching.group_key(task), set()).add(task.job_id)
    for members in groups.values():
        batched = members & set(planned)
        assert batched == (members if len(members) >= limits.min_jobs else set())


@settings(max_examples=200, deadline=None)
@given(tasks=queued_tasks, limits=limits)
def test_tasks_of_similar_size_share_a_batch(tasks, limits):
    plans = batching.plan_batches(tasks, limits=limits)

    by_group: dict = {}
    for plan in plans:
        by_group.setdefault(batching.group_key(plan.tasks[0]), []).append(plan)
    for group_plans in by_group.values():
        # The group's batches are consecutive size ranges: no batch mixes the largest tasks of
        # one batch with the smallest of another.
        ranges = sorted(
            ((min(t.size for t in p.tasks), max(t.size for t in p.tasks)) for p in group_plans),
            reverse=True,
        )
        for (low, _), (_, next_high) in itertools.pairwise(ranges):
            assert next_high <= low
        counts = [len(plan.tasks) for plan in group_plans]
        assert max(counts) - min(counts) <= 1  # as few batches as hold the group, evenly filled


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=8),
    hosts=st.integers(min_value=1, max_value=3),
)
def test_hosts_are_balanced_within_grahams_bound_of_the_best_split(sizes, hosts):
    tasks = [batching.QueuedTask(job_id=i, kind="k", size=size) for i, size in enumerate(sizes)]

    assigned = batching.balance(tasks, hosts=hosts)

    assert sorted(t.job_id for host in assigned for t in host) == list(range(len(tasks)))
    makespan = max(load(host) for host in assigned)
    best = min(
        max(sum(size for size, h in zip(sizes, split, strict=True) if h == i) for i in range(hosts))
        for split in itertools.product(range(hosts), repeat=len(sizes))
    )
    assert makespan <= (4 / 3 - 1 / (3 * hosts)) * best + 1e-9
    for host in assigned:  # each host trains its largest task first
        assert [t.size for t in host] == sorted((t.size for t in host), reverse=True)


def test_one_long_task_does_not_hold_up_a_cluster_of_short_ones():
    short = [batching.QueuedTask(job_id=i, kind="k", size=100) for i in range(1, 8)]
    long = batching.QueuedTask(job_id=99, kind="k", size=5_000)
    two_per_host = batching.BatchLimits(min_jobs=2, max_instances=2, tasks_per_instance=2)

    plans = batching.plan_batches([*short, long], limits=two_per_host)

    with_long, other = sorted(plans, key=lambda plan: 99 not in plan.job_ids)
    # The long task has a host to itself in the batch of the next largest; the rest train in a
    # batch of their own that ends as soon as they are done.
    assert with_long.hosts == ((long,), tuple(short[:3]))
    assert other.makespan == 200 and other.instance_count == 2


def test_too_few_jobs_of_a_kind_or_batching_off_plan_nothing():
    tasks = [batching.QueuedTask(job_id=i, kind="k", size=10) for i in range(3)]
    assert batching.plan_batches(tasks, limits=LIMITS) == []
    off = batching.BatchLimits(min_jobs=0, max_instances=4, tasks_per_instance=4)
    assert batching.plan_batches([*tasks, *tasks[:1]], limits=off) == []
    with pytest.raises(ValueError, match="min_jobs"):
        batching.BatchLimits(min_jobs=1, max_instances=4, tasks_per_instance=4)


def test_twenty_onboardings_make_two_batches_of_ten_on_three_hosts():
    tasks = [batching.QueuedTask(job_id=i, kind="k", size=40) for i in range(1, 21)]

    plans = batching.plan_batches(tasks, limits=LIMITS)

    assert [len(plan.tasks) for plan in plans] == [10, 10]
    assert [plan.instance_count for plan in plans] == [3, 3]
    assert [len(host) for host in plans[0].hosts] == [4, 3, 3]


def test_each_host_reads_its_own_tasks_from_the_manifest(tmp_path):
    tasks = [batching.QueuedTask(job_id=i, kind="embedding", size=10 * i) for i in range(1, 6)]
    plan = batching.plan_one(tasks, limits=LIMITS, kind="embedding")
    document = json.loads(
        json.dumps(batching.manifest(batch_name="b", plan=plan, output_uri="s3://bucket/out"))
    )
    # SageMaker lists hosts as strings sort them; a host finds its index all the same.
    resource_config = {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}
    (tmp_path / "resourceconfig.json").write_text(json.dumps(resource_config))

    index = read_host_index(tmp_path, env={})

    assert index == 1 and batching.host_name(index) == "algo-2"
    mine = batching.host_tasks(document, host_index=index)
    assert [task["job"] for task in mine] == [task.job_id for task in plan.hosts[1]]
    assert batching.host_index({"current_host": "algo-10", "hosts": ["algo-1", "algo-10"]}) == 1
    assert (
        batching.host_index(
            {"current_host": "algo-2", "hosts": [f"algo-{n}" for n in (1, 10, 11, 2, 3)]}
        )
        == 1
    )
    assert (
        read_host_index(
            tmp_path / "none", env={"SM_CURRENT_HOST": "algo-1", "SM_HOSTS": '["algo-1","algo-2"]'}
        )
        == 0
    )
    with pytest.raises(batching.ManifestError, match="plans 2 hosts"):
        batching.host_tasks(document, host_index=2)
    assert batching.task_output("s3://bucket/out/", 7, "result.json") == (
        "s3://bucket/out/7/result.json"
    )
