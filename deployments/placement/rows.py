"""The one adapter from database rows to the solver's inputs, and the memory a copy is counted at.

The solver and the eviction policy take plain dataclasses; this is where instance types, versions
and placements become them, so the SageMaker rollout, the fleet figures, the what-if and the
local runtime all count a model's memory the same way. (It reads rows and writes nothing: the
only module of ``placement`` that knows the ORM.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployments.placement.solver import InstanceSpec, ModelSpec
from models_registry.kinds import get_kind

if TYPE_CHECKING:
    from deployments.models import InstanceType, Placement
    from models_registry.models import ModelVersion

# What a model of an unmeasured kind is assumed to need before its first load; the measurement
# then replaces it and the instance is trimmed back under budget if it was more.
DEFAULT_EXPECTED_MEMORY_MB = 200.0


def instance_spec(instance_type: InstanceType) -> InstanceSpec:
    """An instance type of the catalog as the solver sees it."""
    return InstanceSpec(
        name=instance_type.name,
        gpu_count=instance_type.gpu_count,
        memory_per_gpu_mb=float(instance_type.memory_per_gpu_mb),
        host_memory_mb=float(instance_type.host_memory_mb),
        vcpus=instance_type.vcpus,
        usd_per_hour=float(instance_type.usd_per_hour),
    )


def expected_memory_mb(version: ModelVersion) -> float:
    """A version's host memory: measured, else its kind's expected figure, else the default."""
    return copy_memory_mb(copy_mb=None, version_mb=version.host_memory_mb, kind=version.model.kind)


def copy_memory_mb(*, copy_mb: float | None, version_mb: float | None, kind: str) -> float:
    """The memory a copy needs, from plain figures: measured on its instance, else on its
    version, else its kind's expected figure, else the default."""
    for figure in (copy_mb, version_mb):
        if figure is not None:
            return float(figure)
    expected = getattr(get_kind(kind), "expected_memory_mb", 0) or 0
    return float(expected) or DEFAULT_EXPECTED_MEMORY_MB


def memory_of(placement: Placement) -> float:
    """The memory a copy needs: measured on its instance, else on its version, else the kind's
    expected figure."""
    if placement.host_memory_mb is not None:
        return float(placement.host_memory_mb)
    return expected_memory_mb(placement.version)


def held_memory_mb(placement: Placement) -> float:
    """Measured memory a copy holds: on its instance, else on its version, else 0."""
    for figure in (placement.host_memory_mb, placement.version.host_memory_mb):
        if figure is not None:
            return float(figure)
    return 0.0


def held_gpu_memory_mb(placement: Placement) -> float:
    """Measured GPU memory a copy holds: on its instance, else on its version, else 0.

    Only a load on a GPU measures it (Triton's ``nv_gpu_memory_used_bytes`` before and after),
    never a guess: a version not yet loaded on a GPU counts 0 here, its first load is admitted
    on host memory, and its instance is trimmed back under the GPU budget once it is measured.
    """
    for figure in (placement.gpu_memory_mb, placement.version.gpu_memory_mb):
        if figure is not None:
            return float(figure)
    return 0.0


def instance_gpu_budget_mb(
    instance_type: InstanceType, *, target_utilization: float
) -> float | None:
    """The GPU memory models may hold on one instance of ``instance_type`` at the target: all
    its GPUs together (Triton puts a ``KIND_GPU`` model on every GPU it sees, so a measured
    figure is summed over them too); None for a type without GPUs."""
    if instance_type.gpu_count <= 0 or instance_type.memory_per_gpu_mb <= 0:
        return None
    total = instance_type.gpu_count * instance_type.memory_per_gpu_mb
    return float(target_utilization) * float(total)


def version_spec(version: ModelVersion, *, replicas: int = 1) -> ModelSpec:
    """A version about to be placed, as the solver sees it (expected memory until measured)."""
    return ModelSpec(
        key=str(version.pk),
        kind=version.model.kind,
        host_memory_mb=expected_memory_mb(version),
        gpu_memory_mb=float(version.gpu_memory_mb or 0),
        pinned=version.model.tenant.models_pinned,
        replicas=replicas,
    )


def placed_spec(
    placement: Placement, *, pinned: bool, replicas: int, requests_per_hour: float = 0.0
) -> ModelSpec:
    """A placed version as the solver sees it (the memory its copies were measured to hold)."""
    return ModelSpec(
        key=placement.version.triton_model_name,
        kind=placement.version.model.kind,
        host_memory_mb=held_memory_mb(placement),
        gpu_memory_mb=held_gpu_memory_mb(placement),
        requests_per_hour=requests_per_hour,
        pinned=pinned,
        replicas=replicas,
    )
