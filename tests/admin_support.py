"""Shared by the admin tests of the three apps (tests/<app>/test_admin.py): URL and action
helpers, the ``everything`` fixture (one row of every model the admin shows), and the checks
every model of an app gets (:class:`AppAdminChecks`)."""

from __future__ import annotations

from typing import ClassVar

import pytest
from django.apps import apps
from django.contrib import admin, messages
from django.db.models import Model
from django.urls import reverse
from django.utils import timezone

from deployments.models import (
    BackgroundPass,
    CloudMetricMinute,
    Deployment,
    Endpoint,
    EndpointUsageMinute,
    Event,
    FleetUsageMinute,
    Instance,
    InstanceType,
    InstanceUsageMinute,
    Placement,
    ScalingPolicy,
    TenantCost,
    VersionUsageMinute,
)
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from tenants.models import ApiToken, Membership, Tenant
from tenants.services import issue_token
from tests.factories import (
    DatasetFactory,
    EventFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def run_action(client, model, action: str, objects, *, follow: bool = False):
    return client.post(
        admin_url(model, "changelist"),
        {"action": action, "_selected_action": [obj.pk for obj in objects]},
        follow=follow,
    )


def messages_of(response) -> list[messages.storage.base.Message]:
    return list(response.context["messages"])


def label(model) -> str:
    return model._meta.label


@pytest.fixture
def everything(db, admin_user) -> dict:
    """One row of every model the admin shows, linked the way the platform links them."""
    tenant = TenantFactory()
    token = issue_token(name="support-bot", tenant=tenant, actor="test", created_by=admin_user)
    membership = Membership.objects.create(user=admin_user, tenant=tenant)
    dataset = DatasetFactory(tenant=tenant)
    model = TenantModelFactory(tenant=tenant)
    job = TrainingJobFactory(model=model, dataset=dataset)
    version = ModelVersionFactory(
        model=model, training_job=job, metrics={"accuracy": 0.9344, "per_label": {"refund": 0.9}}
    )
    placement = PlacementFactory(version=version)
    instance = placement.instance
    endpoint = placement.endpoint
    event = EventFactory(tenant=tenant, endpoint=endpoint, instance=instance, version=version)
    deployment = Deployment.objects.create(
        model=model, endpoint=endpoint, live_version=version, status=Deployment.Status.LIVE
    )
    minute = timezone.now().replace(second=0, microsecond=0)
    instance_usage = InstanceUsageMinute.objects.create(
        instance=instance, minute=minute, host_memory_used_mb=111.0, models_loaded=1
    )
    version_usage = VersionUsageMinute.objects.create(
        version=version,
        endpoint=endpoint,
        tenant=tenant,
        minute=minute,
        invocations=4,
        latency_ms_sum=40.0,
        latency_ms_max=15.0,
    )
    endpoint_usage = EndpointUsageMinute.objects.create(
        endpoint=endpoint, minute=minute, invocations=4, latency_ms_sum=40.0, latency_ms_max=15.0
    )
    fleet_usage = FleetUsageMinute.objects.create(
        minute=minute, instances=1, host_memory_used_mb=111.0, models_loaded=1, usd_per_hour=0.23
    )
    background_pass = BackgroundPass.objects.create(
        job="reconcile",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        duration_s=0.5,
        items=1,
        queries=4,
        passes=1,
        summary={"tenant": tenant.slug},
    )
    scaling_policy = ScalingPolicy.objects.create(
        endpoint=endpoint,
        model=model,
        resource_id=f"inference-component/tml-{tenant.slug}-{model.name}",
        scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
        policy_name=f"tml-{tenant.slug}-{model.name}-invocations-per-copy",
        metric="SageMakerInferenceComponentInvocationsPerCopy",
        target_value=1000.0,
        min_capacity=0,
        max_capacity=4,
        basis="Measured: its warm request took 30.0 ms.",
    )
    tenant_cost = TenantCost.objects.create(
        tenant=tenant, slug=tenant.slug, usd_per_hour=0.23, rank_usd_per_hour=0.23, memory_mb=111
    )
    cloud_metric = CloudMetricMinute.objects.create(
        endpoint=endpoint,
        metric="ModelLoadingTime",
        statistic="Sum",
        minute=minute,
        value=1_250_000.0,
        unit="Microseconds",
    )
    return {
        CloudMetricMinute: cloud_metric,
        ScalingPolicy: scaling_policy,
        TenantCost: tenant_cost,
        Tenant: tenant,
        ApiToken: token.token,
        Membership: membership,
        Dataset: dataset,
        TenantModel: model,
        TrainingJob: job,
        ModelVersion: version,
        InstanceType: InstanceType.objects.get(name="local"),
        Endpoint: endpoint,
        Instance: instance,
        Placement: placement,
        Deployment: deployment,
        Event: event,
        InstanceUsageMinute: instance_usage,
        VersionUsageMinute: version_usage,
        EndpointUsageMinute: endpoint_usage,
        FleetUsageMinute: fleet_usage,
        BackgroundPass: background_pass,
    }


def make_busy_changelists() -> None:
    """Ten placements, each with a training job, an event and a usage minute: enough rows for a
    changelist that queries per row to show it."""
    for _ in range(10):
        placement = PlacementFactory()
        version = placement.version
        TrainingJobFactory(model=version.model)
        EventFactory(tenant=version.model.tenant, endpoint=placement.endpoint, version=version)
        VersionUsageMinute.objects.create(
            version=version,
            endpoint=placement.endpoint,
            tenant=version.model.tenant,
            minute=timezone.now(),
        )


class AppAdminChecks:
    """The checks every model of one app gets in the admin.

    A test module subclasses it as ``Test...`` and names the app; each test taking ``model`` then
    runs once per model of that app (``searchable_model``: once per model whose admin searches).
    The models come from the app registry, not the admin's, so one left unregistered still fails.
    """

    app_label: ClassVar[str]
    # Every model of the app, written out: a model added to the app must be added here too.
    expected_models: ClassVar[set[type[Model]]]
    # Rows the platform creates itself (training, scaling, deploys, the event log, usage
    # sampling); the admin offers no add form for them.
    no_add: ClassVar[set[type[Model]]] = set()

    @classmethod
    def app_models(cls) -> list[type[Model]]:
        return sorted(apps.get_app_config(cls.app_label).get_models(), key=label)

    def pytest_generate_tests(self, metafunc):
        models = self.app_models()
        if "model" in metafunc.fixturenames:
            metafunc.parametrize("model", models, ids=label)
        if "searchable_model" in metafunc.fixturenames:
            searchable = [
                model
                for model in models
                if model in admin.site._registry and admin.site._registry[model].search_fields
            ]
            metafunc.parametrize("searchable_model", searchable, ids=label)
        if "busy_model" in metafunc.fixturenames:
            metafunc.parametrize("busy_model", self.busy_models, ids=label)

    def test_every_model_of_the_app_is_registered(self):
        registered = {
            model for model in admin.site._registry if model._meta.app_label == self.app_label
        }

        assert registered == self.expected_models
        assert set(self.app_models()) == registered

    def test_changelist_lists_the_row(self, admin_client, everything, model):
        response = admin_client.get(admin_url(model, "changelist"))

        assert response.status_code == 200
        assert everything[model].pk in {row.pk for row in response.context["cl"].result_list}

    def test_change_page_opens(self, admin_client, everything, model):
        response = admin_client.get(admin_url(model, "change", everything[model].pk))

        assert response.status_code == 200

    def test_add_page_opens_only_where_operators_may_add(self, admin_client, db, model):
        response = admin_client.get(admin_url(model, "add"))

        assert response.status_code == (403 if model in self.no_add else 200)

    def test_changelist_search_answers(self, admin_client, everything, searchable_model):
        response = admin_client.get(admin_url(searchable_model, "changelist"), {"q": "tenant"})

        assert response.status_code == 200


class BusyChangelistChecks:
    """For an app with tables that grow with traffic: each one's changelist stays within a fixed
    query count (mixed into that app's ``AppAdminChecks`` subclass, which parametrizes it)."""

    busy_models: ClassVar[list[type[Model]]]

    def test_busy_changelist_query_count_is_bounded(
        self, admin_client, db, django_assert_max_num_queries, busy_model
    ):
        make_busy_changelists()

        with django_assert_max_num_queries(15):
            response = admin_client.get(admin_url(busy_model, "changelist"))

        assert response.context["cl"].result_count >= 10
