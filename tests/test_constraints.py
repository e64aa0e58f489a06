"""The database refuses impossible states even when code forgets to check."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from deployments.models import Endpoint, Instance, InstanceType, Placement
from models_registry.models import ModelVersion, TenantModel, TrainingJob
from tenants.models import Tenant
from tests.factories import (
    EndpointFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)

pytestmark = pytest.mark.django_db


def rejects(make) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make()


def test_tenant_slug_is_unique_and_tier_and_status_are_known():
    TenantFactory(slug="acme")
    rejects(lambda: Tenant.objects.create(slug="acme", name="Again"))
    rejects(lambda: Tenant.objects.create(slug="gold", name="x", tier="gold"))
    rejects(lambda: Tenant.objects.create(slug="gone", name="x", status="deleted"))


def test_model_names_are_unique_per_tenant_not_globally():
    first = TenantModelFactory(name="intents")
    rejects(lambda: TenantModel.objects.create(tenant=first.tenant, name="intents", kind="x"))
    TenantModelFactory(name="intents")  # another tenant may reuse the name


def test_version_numbers_are_unique_per_model_and_positive():
    version = ModelVersionFactory(number=1)
    rejects(lambda: ModelVersion.objects.create(model=version.model, number=1))
    rejects(lambda: ModelVersion.objects.create(model=version.model, number=0))
    rejects(lambda: ModelVersion.objects.create(model=version.model, number=5, host_memory_mb=-1))


def test_training_job_progress_is_a_percentage_and_keys_are_unique_per_model():
    job = TrainingJobFactory(idempotency_key="click-1")
    rejects(lambda: TrainingJob.objects.filter(pk=job.pk).update(progress_pct=101))
    rejects(
        lambda: TrainingJob.objects.create(
            model=job.model, dataset=job.dataset, idempotency_key="click-1"
        )
    )
    rejects(lambda: TrainingJob.objects.filter(pk=job.pk).update(status="exploded"))


def test_endpoint_bounds():
    local = InstanceType.objects.get(name="local")
    rejects(
        lambda: Endpoint.objects.create(
            name="e1", instance_type=local, min_instances=3, max_instances=2
        )
    )
    rejects(lambda: Endpoint.objects.create(name="e2", instance_type=local, mode="serverless"))
    rejects(
        lambda: Endpoint.objects.create(
            name="e3", instance_type=local, target_memory_utilization="1.50"
        )
    )


def test_instance_type_gpu_memory_must_match_gpu_count():
    rejects(
        lambda: InstanceType.objects.create(
            name="odd",
            gpu_count=1,
            memory_per_gpu_mb=0,
            host_memory_mb=1,
            vcpus=1,
            usd_per_hour="1",
        )
    )
    rejects(
        lambda: InstanceType.objects.create(
            name="neg", host_memory_mb=1, vcpus=1, usd_per_hour="-1"
        )
    )


def test_a_version_is_placed_once_per_instance_and_once_per_endpoint_without_one():
    placement = PlacementFactory()
    rejects(
        lambda: Placement.objects.create(
            version=placement.version, endpoint=placement.endpoint, instance=placement.instance
        )
    )
    endpoint = EndpointFactory(mode=Endpoint.Mode.INFERENCE_COMPONENT)
    Placement.objects.create(version=placement.version, endpoint=endpoint)
    rejects(lambda: Placement.objects.create(version=placement.version, endpoint=endpoint))
    rejects(
        lambda: Placement.objects.create(
            version=ModelVersionFactory(), endpoint=endpoint, copies=1, min_copies=2
        )
    )


def test_two_live_instances_cannot_share_a_port_but_stopped_ones_may():
    first = InstanceFactory(port=9001)
    rejects(lambda: InstanceFactory(port=9001, host=first.host))
    Instance.objects.filter(pk=first.pk).update(status=Instance.Status.STOPPED)
    InstanceFactory(port=9001, host=first.host)


def test_seeded_catalog_has_the_published_instance_types():
    rows = {t.name: t for t in InstanceType.objects.all()}
    assert {"local", "ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g5.xlarge", "ml.p4d.24xlarge"} <= set(
        rows
    )
    g4dn = rows["ml.g4dn.xlarge"]
    assert (g4dn.gpu_count, g4dn.gpu_name, g4dn.gpu_memory_mb, g4dn.host_memory_mb, g4dn.vcpus) == (
        1,
        "T4",
        16384,
        16384,
        4,
    )
    assert rows["ml.g4dn.2xlarge"].host_memory_mb == 32768
    assert rows["ml.g5.xlarge"].gpu_memory_mb == 24576
    assert rows["ml.p4d.24xlarge"].gpu_count == 8
    assert rows["ml.p4d.24xlarge"].gpu_memory_mb == 8 * 40960
    assert rows["local"].is_local and rows["local"].gpu_count == 0
