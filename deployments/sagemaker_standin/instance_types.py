"""Host memory of SageMaker instance types, as the stand-in places and caches models by it.

The stand-in runs every instance on this machine, so an instance type only decides how much
model memory fits on it: how many inference-component copies (by their reserved memory) and how
many multi-model endpoint models (by the per-model estimate) an instance holds.
"""

from __future__ import annotations

__all__ = ["DEFAULT_INSTANCE_MEMORY_MB", "INSTANCE_MEMORY_MB", "instance_memory_mb"]

GIB_MB = 1024

# Host memory per instance type (AWS's published figures for the types the platform uses).
INSTANCE_MEMORY_MB: dict[str, int] = {
    "ml.t2.medium": 4 * GIB_MB,
    "ml.t2.large": 8 * GIB_MB,
    "ml.m5.large": 8 * GIB_MB,
    "ml.m5.xlarge": 16 * GIB_MB,
    "ml.m5.2xlarge": 32 * GIB_MB,
    "ml.m5.4xlarge": 64 * GIB_MB,
    "ml.c5.large": 4 * GIB_MB,
    "ml.c5.xlarge": 8 * GIB_MB,
    "ml.c5.2xlarge": 16 * GIB_MB,
    "ml.c5.4xlarge": 32 * GIB_MB,
    "ml.r5.large": 16 * GIB_MB,
    "ml.r5.xlarge": 32 * GIB_MB,
    "ml.g4dn.xlarge": 16 * GIB_MB,
    "ml.g4dn.2xlarge": 32 * GIB_MB,
    "ml.g5.xlarge": 16 * GIB_MB,
    "ml.g5.2xlarge": 32 * GIB_MB,
    "ml.g5.12xlarge": 192 * GIB_MB,
    "ml.p4d.24xlarge": 1152 * GIB_MB,
}
# An instance type missing from the table is taken for a 16 GiB host (an xlarge's size).
DEFAULT_INSTANCE_MEMORY_MB = 16 * GIB_MB


def instance_memory_mb(instance_type: str) -> int:
    """The host memory of one instance of ``instance_type`` in MiB (the default when unknown)."""
    return INSTANCE_MEMORY_MB.get(instance_type, DEFAULT_INSTANCE_MEMORY_MB)
