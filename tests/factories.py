"""factory_boy factories for the data model (tests build data through these or the services)."""

from __future__ import annotations

import hashlib

import factory
from django.contrib.auth import get_user_model

from deployments.models import Endpoint, Event, Instance, InstanceType, Placement
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from tenants.models import Tenant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"tickets-{n}.csv")
    format = Dataset.Format.CSV
    storage_uri = factory.LazyAttribute(lambda o: f"datasets/{o.tenant.slug}/{o.name}")
    size_bytes = 2048
    sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    rows = 300
    labels = factory.LazyFunction(lambda: {"refund": 150, "cancel": 150})


class TenantModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantModel

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"intents-{n}")
    kind = "intent-classifier"


class TrainingJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrainingJob

    model = factory.SubFactory(TenantModelFactory)
    dataset = factory.SubFactory(DatasetFactory, tenant=factory.SelfAttribute("..model.tenant"))
    idempotency_key = factory.Sequence(lambda n: f"key-{n}")


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    model = factory.SubFactory(TenantModelFactory)
    number = factory.Sequence(lambda n: n + 1)
    status = ModelVersion.Status.READY
    host_memory_mb = 111.0
    size_bytes = 23 * 1024 * 1024


class InstanceTypeFactory(factory.django.DjangoModelFactory):
    """Most tests use the seeded catalog rows; this makes extra ones."""

    class Meta:
        model = InstanceType
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"test.type{n}")
    host_memory_mb = 16384
    vcpus = 4
    usd_per_hour = "0.5000"


class EndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Endpoint

    name = factory.Sequence(lambda n: f"endpoint-{n}")
    instance_type = factory.LazyFunction(lambda: InstanceType.objects.get(name="local"))
    model_kind = "intent-classifier"
    status = Endpoint.Status.IN_SERVICE


class InstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Instance

    endpoint = factory.SubFactory(EndpointFactory)
    ordinal = factory.Sequence(lambda n: n)
    status = Instance.Status.HEALTHY
    host = "127.0.0.1"
    memory_budget_mb = 13107


class PlacementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Placement

    version = factory.SubFactory(ModelVersionFactory)
    instance = factory.SubFactory(InstanceFactory)
    endpoint = factory.SelfAttribute("instance.endpoint")
    actual_state = Placement.ActualState.LOADED
    host_memory_mb = 111.0


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    kind = "placement.loaded"
    actor = "reconciler"
    message = "Loaded a model."
