"""The instance catalog the platform ships with (SageMaker real-time inference, us-east-1,
on-demand list prices); operators edit rows in the admin and a re-seed never overwrites them."""

from __future__ import annotations

GIB = 1024

INSTANCE_CATALOG: list[dict] = [
    # name, GPUs, GPU name, memory per GPU (MB), host memory (MB), vCPUs, USD per hour
    {
        "name": "local",
        "gpu_count": 0,
        "gpu_name": "",
        "memory_per_gpu_mb": 0,
        "host_memory_mb": 16 * GIB,
        "vcpus": 2,
        "usd_per_hour": "0.2300",
        "is_local": True,
        "notes": "This machine's Triton instances; priced as ml.m5.xlarge for comparisons.",
    },
    {
        "name": "ml.c5.xlarge",
        "gpu_count": 0,
        "gpu_name": "",
        "memory_per_gpu_mb": 0,
        "host_memory_mb": 8 * GIB,
        "vcpus": 4,
        "usd_per_hour": "0.2040",
    },
    {
        "name": "ml.m5.xlarge",
        "gpu_count": 0,
        "gpu_name": "",
        "memory_per_gpu_mb": 0,
        "host_memory_mb": 16 * GIB,
        "vcpus": 4,
        "usd_per_hour": "0.2300",
    },
    {
        "name": "ml.m5.2xlarge",
        "gpu_count": 0,
        "gpu_name": "",
        "memory_per_gpu_mb": 0,
        "host_memory_mb": 32 * GIB,
        "vcpus": 8,
        "usd_per_hour": "0.4610",
    },
    {
        "name": "ml.g4dn.xlarge",
        "gpu_count": 1,
        "gpu_name": "T4",
        "memory_per_gpu_mb": 16 * GIB,
        "host_memory_mb": 16 * GIB,
        "vcpus": 4,
        "usd_per_hour": "0.7364",
    },
    {
        "name": "ml.g4dn.2xlarge",
        "gpu_count": 1,
        "gpu_name": "T4",
        "memory_per_gpu_mb": 16 * GIB,
        "host_memory_mb": 32 * GIB,
        "vcpus": 8,
        "usd_per_hour": "0.9400",
    },
    {
        "name": "ml.g4dn.12xlarge",
        "gpu_count": 4,
        "gpu_name": "T4",
        "memory_per_gpu_mb": 16 * GIB,
        "host_memory_mb": 192 * GIB,
        "vcpus": 48,
        "usd_per_hour": "4.8900",
    },
    {
        "name": "ml.g5.xlarge",
        "gpu_count": 1,
        "gpu_name": "A10G",
        "memory_per_gpu_mb": 24 * GIB,
        "host_memory_mb": 16 * GIB,
        "vcpus": 4,
        "usd_per_hour": "1.4080",
    },
    {
        "name": "ml.g5.2xlarge",
        "gpu_count": 1,
        "gpu_name": "A10G",
        "memory_per_gpu_mb": 24 * GIB,
        "host_memory_mb": 32 * GIB,
        "vcpus": 8,
        "usd_per_hour": "1.5150",
    },
    {
        "name": "ml.g5.12xlarge",
        "gpu_count": 4,
        "gpu_name": "A10G",
        "memory_per_gpu_mb": 24 * GIB,
        "host_memory_mb": 192 * GIB,
        "vcpus": 48,
        "usd_per_hour": "7.0900",
    },
    {
        "name": "ml.g5.48xlarge",
        "gpu_count": 8,
        "gpu_name": "A10G",
        "memory_per_gpu_mb": 24 * GIB,
        "host_memory_mb": 768 * GIB,
        "vcpus": 192,
        "usd_per_hour": "20.3600",
    },
    {
        "name": "ml.p4d.24xlarge",
        "gpu_count": 8,
        "gpu_name": "A100",
        "memory_per_gpu_mb": 40 * GIB,
        "host_memory_mb": 1152 * GIB,
        "vcpus": 96,
        "usd_per_hour": "37.6880",
    },
]


def seed_instance_catalog(instance_type_model) -> int:
    """Insert catalog rows that are missing (by name); returns how many were added."""
    added = 0
    for row in INSTANCE_CATALOG:
        fields = dict(row)
        name = fields.pop("name")
        _, created = instance_type_model.objects.get_or_create(name=name, defaults=fields)
        added += int(created)
    return added
