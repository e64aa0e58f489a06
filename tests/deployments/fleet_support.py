"""A mixed fleet for the figure and scale tests: local endpoints (one instance stopped), a
SageMaker endpoint whose hosts the platform does not measure and whose copies it places itself,
a GPU endpoint, copies in every state, pinned and replicated models, memory measured on the copy,
on the version or nowhere, and an hour of traffic recorded the way serving records it."""

from __future__ import annotations

import random
from datetime import timedelta

from django.utils import timezone

from deployments.models import Endpoint, Instance, InstanceType, Placement
from deployments.usage import UsageCounters, flush_usage
from tests.factories import (
    EndpointFactory,
    InstanceFactory,
    InstanceTypeFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
)

STATES = [
    Placement.ActualState.LOADED,
    Placement.ActualState.LOADED,
    Placement.ActualState.LOADING,
    Placement.ActualState.EVICTING,
    Placement.ActualState.EVICTED,
    Placement.ActualState.FAILED,
    Placement.ActualState.PENDING,
]


def build_mixed_fleet(*, tenants: int, seed: int = 7, with_traffic: bool = True) -> list:
    """``tenants`` tenants with one or two models each over the fleet described above; returns
    the tenants."""
    rng = random.Random(seed)
    now = timezone.now()
    local = InstanceType.objects.get(name="local")
    gpu_type = InstanceTypeFactory(
        name="test.gpu", gpu_count=2, memory_per_gpu_mb=16384, usd_per_hour="1.2000"
    )
    sagemaker_type = InstanceType.objects.get(name="ml.m5.xlarge")
    run = f"{seed}-{tenants}"
    holders: list[tuple[Endpoint, Instance | None]] = []
    for number in range(2):
        endpoint = EndpointFactory(name=f"local-{run}-{number}", instance_type=local)
        for ordinal in range(3):
            instance = InstanceFactory(
                endpoint=endpoint,
                ordinal=ordinal,
                port=20000 + number * 10 + ordinal + tenants * 100,
                memory_budget_mb=rng.choice([4000, 13107]),
                status=Instance.Status.STOPPED if ordinal == 2 else Instance.Status.HEALTHY,
            )
            holders.append((endpoint, instance))
    gpu_endpoint = EndpointFactory(
        name=f"gpu-{run}", instance_type=gpu_type, target_memory_utilization="0.75"
    )
    holders.append((gpu_endpoint, InstanceFactory(endpoint=gpu_endpoint, ordinal=0)))
    sagemaker = EndpointFactory(
        name=f"tml-mme-{run}",
        backend=Endpoint.Backend.SAGEMAKER,
        instance_type=sagemaker_type,
    )
    hosts = [  # mirrored hosts: cost, no measured memory
        InstanceFactory(endpoint=sagemaker, ordinal=ordinal, host="", external_id=f"host-{ordinal}")
        for ordinal in range(2)
    ]
    holders.append((sagemaker, None))
    holders.append((sagemaker, hosts[0]))
    # Copies whose memory nobody measured: their holder's price is split equally.
    unmeasured = EndpointFactory(name=f"unmeasured-{run}", instance_type=local)
    unmeasured_instance = InstanceFactory(endpoint=unmeasured, ordinal=0, port=29000 + tenants)
    counters = UsageCounters()
    made = []
    for index in range(tenants):
        tenant = TenantFactory(slug=f"t{run}-{index:03d}")
        made.append(tenant)
        for model_number in range(rng.choice([1, 1, 2])):
            model = TenantModelFactory(tenant=tenant, name=f"m{model_number}")
            version = ModelVersionFactory(
                model=model,
                number=1,
                host_memory_mb=rng.choice([None, 90.0, 111.0, 140.5, 600.0, 9000.0]),
                gpu_memory_mb=rng.choice([None, None, 800.0]),
            )
            copies = rng.choice([1, 1, 1, 2])
            for endpoint, instance in rng.sample(holders, copies):
                placement = PlacementFactory(
                    version=version,
                    endpoint=endpoint,
                    instance=instance,
                    actual_state=rng.choice(STATES),
                    desired_state=rng.choice(
                        [
                            Placement.DesiredState.LOADED,
                            Placement.DesiredState.LOADED,
                            Placement.DesiredState.PINNED,
                            Placement.DesiredState.UNLOADED,
                        ]
                    ),
                    host_memory_mb=rng.choice([None, None, 100.0, 111.0, 123.4, 7000.0]),
                    gpu_memory_mb=rng.choice([None, 700.0]) if instance is None else None,
                    copies=rng.choice([1, 1, 2]),
                )
                if with_traffic and rng.random() < 0.5:
                    for minute in rng.sample(range(1, 80), 3):
                        for _ in range(rng.randint(1, 4)):
                            counters.record(
                                version_id=version.pk,
                                endpoint_id=endpoint.pk,
                                tenant_id=tenant.pk,
                                latency_ms=rng.choice([3.0, 8.0, 40.0, 300.0, 20000.0]),
                                cold_start=rng.random() < 0.1,
                                error=rng.random() < 0.05,
                                placement_id=placement.pk,
                                now=now - timedelta(minutes=minute),
                            )
    for tenant in made[:3]:
        model = TenantModelFactory(tenant=tenant, name="unmeasured")
        PlacementFactory(
            version=ModelVersionFactory(model=model, number=1, host_memory_mb=None),
            endpoint=unmeasured,
            instance=unmeasured_instance,
            host_memory_mb=None,
        )
    flush_usage(counters=counters)
    return made
