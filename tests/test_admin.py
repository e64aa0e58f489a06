"""The operator admin: every table browsable, computed columns right, actions call services."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone

from deployments.models import (
    Deployment,
    Endpoint,
    Event,
    Instance,
    InstanceType,
    InstanceUsageMinute,
    Placement,
    VersionUsageMinute,
)
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from tenants.models import ApiToken, Membership, Tenant
from tenants.services import issue_token
from tests.factories import (
    DatasetFactory,
    EndpointFactory,
    EventFactory,
    InstanceFactory,
    ModelVersionFactory,
    PlacementFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)

OUR_APPS = {"tenants", "models_registry", "deployments"}
OUR_MODELS = sorted(
    (model for model in admin.site._registry if model._meta.app_label in OUR_APPS),
    key=lambda model: model._meta.label,
)
# Rows the platform creates itself (training, scaling, deploys, the event log, usage
# sampling); the admin offers no add form for them.
NO_ADD = {
    Deployment,
    TrainingJob,
    ModelVersion,
    Instance,
    Placement,
    Event,
    InstanceUsageMinute,
    VersionUsageMinute,
}
# The whole secret, not the short prefix that names a token in lists and messages.
SECRET_PATTERN = re.compile(r"tml_[A-Za-z0-9_-]{20,}")


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
    return {
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
    }


def test_every_model_of_the_three_apps_is_registered():
    assert set(OUR_MODELS) == {
        Tenant,
        ApiToken,
        Membership,
        Dataset,
        TenantModel,
        TrainingJob,
        ModelVersion,
        InstanceType,
        Endpoint,
        Instance,
        Placement,
        Deployment,
        Event,
        InstanceUsageMinute,
        VersionUsageMinute,
    }


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda model: model._meta.label)
def test_changelist_lists_the_row(admin_client, everything, model):
    response = admin_client.get(admin_url(model, "changelist"))

    assert response.status_code == 200
    assert everything[model].pk in {row.pk for row in response.context["cl"].result_list}


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda model: model._meta.label)
def test_change_page_opens(admin_client, everything, model):
    response = admin_client.get(admin_url(model, "change", everything[model].pk))

    assert response.status_code == 200


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda model: model._meta.label)
def test_add_page_opens_only_where_operators_may_add(admin_client, db, model):
    response = admin_client.get(admin_url(model, "add"))

    assert response.status_code == (403 if model in NO_ADD else 200)


@pytest.mark.parametrize(
    "model",
    [model for model in OUR_MODELS if admin.site._registry[model].search_fields],
    ids=lambda model: model._meta.label,
)
def test_changelist_search_answers(admin_client, everything, model):
    response = admin_client.get(admin_url(model, "changelist"), {"q": "tenant"})

    assert response.status_code == 200


def test_tenant_page_links_to_its_events(admin_client, everything, other_tenant):
    tenant = everything[Tenant]
    elsewhere = EventFactory(tenant=other_tenant)

    page = admin_client.get(admin_url(Tenant, "change", tenant.pk)).content.decode()
    events = admin_client.get(admin_url(Event, "changelist"), {"tenant__id__exact": tenant.pk})

    assert f"?tenant__id__exact={tenant.pk}" in page
    assert events.status_code == 200
    listed = list(events.context["cl"].result_list)
    assert everything[Event] in listed
    assert elsewhere not in listed
    assert {event.tenant_id for event in listed} == {tenant.pk}


def test_endpoint_page_links_to_its_events(admin_client, everything):
    endpoint = everything[Endpoint]

    page = admin_client.get(admin_url(Endpoint, "change", endpoint.pk)).content.decode()

    assert f"{admin_url(Event, 'changelist')}?endpoint__id__exact={endpoint.pk}" in page


def test_instance_changelist_shows_memory_of_resident_placements(admin_client, db):
    instance = InstanceFactory(memory_budget_mb=13107)
    PlacementFactory(instance=instance, host_memory_mb=111.0)
    PlacementFactory(instance=instance, host_memory_mb=111.0)
    PlacementFactory(instance=instance, host_memory_mb=500.0, actual_state="evicted")

    response = admin_client.get(admin_url(Instance, "changelist"))

    assert "222 / 13,107 MB (2 %)" in response.content.decode()


def test_endpoint_changelist_shows_cost_of_live_instances(admin_client, db):
    endpoint = EndpointFactory()  # the seeded "local" type, 0.2300 USD per hour
    InstanceFactory(endpoint=endpoint, status=Instance.Status.HEALTHY)
    InstanceFactory(endpoint=endpoint, status=Instance.Status.STARTING)
    InstanceFactory(endpoint=endpoint, status=Instance.Status.STOPPED)

    response = admin_client.get(admin_url(Endpoint, "changelist"))

    content = response.content.decode()
    assert "$0.4600" in content
    assert "2 (min 1, max 1)" in content


def test_instance_type_shows_total_gpu_memory(admin_client, db):
    InstanceType.objects.create(
        name="test.4gpu",
        gpu_count=4,
        gpu_name="T4",
        memory_per_gpu_mb=16384,
        host_memory_mb=196608,
        vcpus=48,
        usd_per_hour="5.0000",
    )

    response = admin_client.get(admin_url(InstanceType, "changelist"), {"q": "test.4gpu"})

    assert "65,536" in response.content.decode()


def test_model_version_shows_tenant_memory_and_metrics(admin_client, everything):
    response = admin_client.get(admin_url(ModelVersion, "changelist"))

    content = response.content.decode()
    assert everything[Tenant].slug in content
    assert "111 MB host" in content
    assert "accuracy 0.9344" in content


def test_training_job_shows_progress_as_percentage(admin_client, db):
    TrainingJobFactory(status=TrainingJob.Status.RUNNING, progress_pct=42)

    response = admin_client.get(admin_url(TrainingJob, "changelist"))

    assert "42 %" in response.content.decode()


def test_suspend_action_suspends_tenant_and_records_event(admin_client, admin_user, tenant):
    response = run_action(admin_client, Tenant, "suspend_tenants", [tenant])

    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.SUSPENDED
    event = Event.objects.get(kind="tenant.suspended", tenant=tenant)
    assert event.actor == f"admin:{admin_user.username}"


def test_reactivate_action_reactivates_tenant(admin_client, db):
    tenant = TenantFactory(status=Tenant.Status.SUSPENDED)

    run_action(admin_client, Tenant, "reactivate_tenants", [tenant])

    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ACTIVE
    assert Event.objects.filter(kind="tenant.reactivated", tenant=tenant).exists()


def test_adding_a_tenant_goes_through_the_service(admin_client, db):
    response = admin_client.post(
        admin_url(Tenant, "add"), {"slug": "acme", "name": "Acme", "tier": "premium"}
    )

    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.tier == Tenant.Tier.PREMIUM
    assert Event.objects.filter(kind="tenant.created", tenant=tenant).exists()


def test_revoke_action_revokes_token(admin_client, tenant):
    token = issue_token(name="bot", tenant=tenant, actor="test").token

    run_action(admin_client, ApiToken, "revoke_tokens", [token])

    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Event.objects.filter(kind="token.revoked", tenant=tenant).exists()


def test_cancel_action_cancels_queued_job(admin_client, db):
    job = TrainingJobFactory(status=TrainingJob.Status.QUEUED)

    run_action(admin_client, TrainingJob, "cancel_jobs", [job])

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.CANCELLED


def test_cancel_action_leaves_finished_job_and_warns(admin_client, db):
    job = TrainingJobFactory(status=TrainingJob.Status.SUCCEEDED)

    response = run_action(admin_client, TrainingJob, "cancel_jobs", [job], follow=True)

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED
    assert not job.cancel_requested
    warnings = [m for m in messages_of(response) if m.level == messages.WARNING]
    assert len(warnings) == 1
    assert "succeeded" in warnings[0].message


def test_pin_action_pins_placement(admin_client, db):
    placement = PlacementFactory()

    run_action(admin_client, Placement, "pin_placements", [placement])

    placement.refresh_from_db()
    assert placement.desired_state == Placement.DesiredState.PINNED
    assert Event.objects.filter(kind="placement.desired_state_changed").exists()


def test_unpin_and_unload_actions_set_desired_state(admin_client, db):
    pinned = PlacementFactory(desired_state=Placement.DesiredState.PINNED)
    loaded = PlacementFactory()

    run_action(admin_client, Placement, "unpin_placements", [pinned])
    run_action(admin_client, Placement, "unload_placements", [loaded])

    pinned.refresh_from_db()
    loaded.refresh_from_db()
    assert pinned.desired_state == Placement.DesiredState.LOADED
    assert loaded.desired_state == Placement.DesiredState.UNLOADED


def test_adding_a_token_shows_its_secret_once(admin_client, admin_user, db):
    response = admin_client.post(
        admin_url(ApiToken, "add"),
        {"name": "ops-cli", "tenant": "", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    assert response.status_code == 200
    secrets_shown = [
        secret for m in messages_of(response) for secret in SECRET_PATTERN.findall(m.message)
    ]
    assert len(secrets_shown) == 1
    secret = secrets_shown[0]
    token = ApiToken.objects.get(name="ops-cli")
    assert token.key_digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.scope == ApiToken.Scope.PLATFORM
    assert token.created_by == admin_user
    assert Event.objects.filter(kind="token.issued").exists()

    change_page = admin_client.get(admin_url(ApiToken, "change", token.pk)).content.decode()
    changelist = admin_client.get(admin_url(ApiToken, "changelist")).content.decode()
    assert secret not in change_page
    assert secret not in changelist


def test_adding_a_tenant_token_scopes_it_to_the_tenant(admin_client, tenant):
    expires = timezone.now() + timedelta(days=30)

    admin_client.post(
        admin_url(ApiToken, "add"),
        {
            "name": "product",
            "tenant": tenant.pk,
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": expires.strftime("%H:%M:%S"),
        },
    )

    token = ApiToken.objects.get(name="product")
    assert token.tenant == tenant
    assert token.scope == ApiToken.Scope.TENANT
    assert token.expires_at is not None


def test_issued_token_cannot_be_edited(admin_client, tenant):
    token = issue_token(name="bot", tenant=tenant, actor="test").token

    response = admin_client.post(admin_url(ApiToken, "change", token.pk), {"name": "renamed"})

    assert response.status_code == 403
    token.refresh_from_db()
    assert token.name == "bot"


def test_token_changelist_never_shows_the_digest(admin_client, tenant):
    token = issue_token(name="bot", tenant=tenant, actor="test").token

    response = admin_client.get(admin_url(ApiToken, "changelist"))

    assert token.key_digest not in response.content.decode()


def test_adding_a_model_goes_through_the_service(admin_client, tenant):
    response = admin_client.post(
        admin_url(TenantModel, "add"),
        {
            "tenant": tenant.pk,
            "name": "intents",
            "kind": "intent-classifier",
            "description": "Routes tickets.",
        },
    )

    assert response.status_code == 302
    model = TenantModel.objects.get(tenant=tenant, name="intents")
    assert model.kind == "intent-classifier"
    assert Event.objects.filter(kind="model.created", tenant=tenant).exists()


def test_model_add_form_rejects_unregistered_kind(admin_client, tenant):
    response = admin_client.post(
        admin_url(TenantModel, "add"),
        {"tenant": tenant.pk, "name": "intents", "kind": "no-such-kind", "description": ""},
    )

    assert response.status_code == 200
    assert "kind" in response.context["adminform"].form.errors
    assert not TenantModel.objects.exists()


@pytest.mark.parametrize(
    "model", [Event, InstanceUsageMinute, VersionUsageMinute], ids=lambda m: m._meta.label
)
def test_platform_written_tables_cannot_be_added_changed_or_deleted(
    admin_client, everything, model
):
    obj = everything[model]

    changelist = admin_client.get(admin_url(model, "changelist"))
    add = admin_client.get(admin_url(model, "add"))
    delete = admin_client.get(admin_url(model, "delete", obj.pk))
    change = admin_client.post(admin_url(model, "change", obj.pk), {})

    assert changelist.status_code == 200
    assert changelist.context["action_form"] is None  # no actions at all, so no bulk delete
    assert add.status_code == 403
    assert delete.status_code == 403
    assert change.status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_instance_changelist_query_count_is_bounded(
    admin_client, db, django_assert_max_num_queries
):
    endpoint = EndpointFactory()
    for _ in range(10):
        PlacementFactory(instance=InstanceFactory(endpoint=endpoint))

    with django_assert_max_num_queries(15):
        response = admin_client.get(admin_url(Instance, "changelist"))

    assert response.context["cl"].result_count == 10


def test_placement_changelist_query_count_is_bounded(
    admin_client, db, django_assert_max_num_queries
):
    endpoint = EndpointFactory()
    for _ in range(10):
        PlacementFactory(instance=InstanceFactory(endpoint=endpoint))

    with django_assert_max_num_queries(15):
        response = admin_client.get(admin_url(Placement, "changelist"))

    assert response.context["cl"].result_count == 10


@pytest.mark.parametrize(
    "model", [Event, ModelVersion, TrainingJob, VersionUsageMinute], ids=lambda m: m._meta.label
)
def test_other_busy_changelists_query_count_is_bounded(
    admin_client, db, django_assert_max_num_queries, model
):
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

    with django_assert_max_num_queries(15):
        response = admin_client.get(admin_url(model, "changelist"))

    assert response.context["cl"].result_count >= 10


def test_deployment_rollback_action_without_an_earlier_version_explains_why(admin_client, db):
    version = ModelVersionFactory()
    deployment = Deployment.objects.create(
        model=version.model, live_version=version, status=Deployment.Status.LIVE
    )

    response = run_action(admin_client, Deployment, "roll_back", [deployment], follow=True)

    [message] = messages_of(response)
    assert message.level == messages.ERROR and "no earlier deployed version" in message.message
