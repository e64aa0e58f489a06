"""GPU memory in placement and eviction: a load's measured GPU memory (from Triton's
``nv_gpu_memory_used_bytes``) is what GPU instance types are packed and trimmed by."""

from __future__ import annotations

import pytest

from deployments.backends.local.client import triton_memory_metrics
from deployments.backends.local.memory import gpu_memory_by_device_mb, gpu_memory_growth_mb
from deployments.models import InstanceType
from deployments.placement.eviction import (
    CapacityExceeded,
    ResidentModel,
    plan_load,
    plan_trim,
)
from deployments.placement.rows import instance_gpu_budget_mb, instance_spec, version_spec
from deployments.placement.solver import PlacementPolicy, solve
from tests.factories import ModelVersionFactory

METRICS = """\
# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{{gpu_uuid="GPU-a"}} {a}
nv_gpu_memory_used_bytes{{gpu_uuid="GPU-b"}} {b}
nv_gpu_memory_total_bytes{{gpu_uuid="GPU-a"}} 17179869184
nv_gpu_memory_total_bytes{{gpu_uuid="GPU-b"}} 17179869184
nv_cpu_memory_used_bytes 4294967296
"""
MB = 1024 * 1024


def reading(a_mb: float, b_mb: float) -> dict[str, float] | None:
    return gpu_memory_by_device_mb(triton_memory_metrics(METRICS.format(a=a_mb * MB, b=b_mb * MB)))


def test_a_loads_gpu_memory_is_what_it_added_to_each_gpu():
    before = reading(500, 300)
    after = reading(1045, 845)

    assert before == {"GPU-a": 500.0, "GPU-b": 300.0}
    # One instance on each GPU (Triton's KIND_GPU without a gpus list): 545 MB on each.
    assert gpu_memory_growth_mb(before, after) == 1090.0
    # Another model unloading meanwhile frees memory; that is not a negative load.
    assert gpu_memory_growth_mb(before, reading(1045, 100)) == 545.0
    assert gpu_memory_growth_mb(None, after) is None
    assert gpu_memory_by_device_mb(triton_memory_metrics("nv_cpu_memory_used_bytes 1\n")) is None


def test_gpu_memory_evicts_the_least_recently_used_model_that_holds_it():
    resident = [
        ResidentModel("cpu-only", memory_mb=100, last_used=1),
        ResidentModel("old", memory_mb=100, gpu_memory_mb=5000, last_used=2),
        ResidentModel("new", memory_mb=100, gpu_memory_mb=5000, last_used=3),
    ]

    plan = plan_load(
        resident=resident,
        incoming_key="incoming",
        incoming_mb=100,
        incoming_gpu_mb=5000,
        budget_mb=4000,
        gpu_budget_mb=13107,
    )

    # Host memory has room; the GPU does not. The CPU-only model frees no GPU memory, so stays.
    assert plan.evict == ("old",)
    assert plan.fits and plan.gpu_mb_after == 10000 and plan.resident_mb_after == 300
    # Without a GPU budget (a CPU type) the same figures need no eviction.
    assert (
        plan_load(resident=resident, incoming_key="incoming", incoming_mb=100, budget_mb=4000).evict
        == ()
    )


def test_trim_brings_a_gpu_instance_back_under_its_gpu_budget():
    resident = [
        ResidentModel("a", memory_mb=100, gpu_memory_mb=6000, last_used=1),
        ResidentModel("b", memory_mb=100, gpu_memory_mb=6000, last_used=2, pinned=True),
        ResidentModel("c", memory_mb=100, gpu_memory_mb=6000, last_used=3),
    ]

    assert plan_trim(resident=resident, budget_mb=4000, gpu_budget_mb=13107, keep="c") == ("a",)
    assert plan_trim(resident=resident, budget_mb=4000) == ()


def test_a_model_larger_than_the_gpu_budget_or_behind_pinned_gpu_memory_is_refused():
    with pytest.raises(CapacityExceeded, match="14,000 MB of GPU memory but the instance's whole"):
        plan_load(
            resident=[],
            incoming_key="big",
            incoming_mb=100,
            incoming_gpu_mb=14000,
            budget_mb=4000,
            gpu_budget_mb=13107,
        )
    pinned = [ResidentModel("p", memory_mb=100, gpu_memory_mb=12000, pinned=True)]
    with pytest.raises(CapacityExceeded, match="hold 12,000 MB of the instance's 13,107 MB GPU"):
        plan_load(
            resident=pinned,
            incoming_key="x",
            incoming_mb=100,
            incoming_gpu_mb=2000,
            budget_mb=4000,
            gpu_budget_mb=13107,
        )


@pytest.mark.django_db
def test_versions_measured_on_a_gpu_are_packed_by_their_gpu_memory():
    g4dn = InstanceType.objects.get(name="ml.g4dn.xlarge")  # one T4, 16 GB
    # Forethought's figure: 12 embedding models per g4dn.xlarge at 80 % of its GPU memory.
    measured = [
        ModelVersionFactory(model__kind="embedding", host_memory_mb=900, gpu_memory_mb=1090)
        for _ in range(24)
    ]

    plan = solve(
        models=[version_spec(v) for v in measured],
        instance_types=[instance_spec(g4dn)],
        policy=PlacementPolicy(mode="mme", requests_per_hour_per_instance=None),
    )

    assert [len(i.models) for e in plan.endpoints for i in e.instances] == [12, 12]
    assert instance_gpu_budget_mb(g4dn, target_utilization=0.8) == pytest.approx(13107.2)
    assert (
        instance_gpu_budget_mb(InstanceType.objects.get(name="local"), target_utilization=0.8)
        is None
    )
