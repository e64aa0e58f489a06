"""Retiring on SageMaker (moto plays AWS): DELETE of a deployment deletes what served it and
the endpoint left empty, a superseded version's resources go once the rollback window has
passed, and nothing the platform created is left behind billing."""

from __future__ import annotations

import boto3
import pytest

from deployments.models import Deployment, Endpoint, Event, Placement
from deployments.services import reconciler
from models_registry.models import ModelVersion
from tests.deployments.backends.sagemaker.support import (
    BUCKET,
    REGION,
    answers_from_the_runtime,
    api,
)
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def deploy(client, mode: str = "mme", capture=None, **extra):
    with capture(execute=True):
        response = client.post(
            "/api/v1/tenants/acme/models/intents/deployments/",
            {"mode": mode, **extra},
            format="json",
        )
    assert response.status_code == 202, response.content
    return response


def account_resources() -> dict:
    """Everything in the fake account that could bill or be billed for."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    scaling = boto3.client("application-autoscaling", region_name=REGION)
    return {
        "endpoints": sorted(e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]),
        "configs": sorted(
            c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
        ),
        "models": sorted(m["ModelName"] for m in sagemaker.list_models()["Models"]),
        "endpoint_objects": sorted(
            o["Key"]
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="platform/endpoints/").get(
                "Contents", []
            )
        ),
        "scalable_targets": sorted(
            t["ResourceId"]
            for t in scaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
                "ScalableTargets"
            ]
        ),
    }


def second_version(first: ModelVersion) -> ModelVersion:
    return ModelVersionFactory(
        model=first.model,
        number=2,
        status=ModelVersion.Status.READY,
        package_uri=first.package_uri,
        sha256="1" * 64,
        host_memory_mb=first.host_memory_mb,
        image_package_uri=first.image_package_uri,
        image_uri=first.image_uri,
        image_python=first.image_python,
    )


def test_deleting_a_multi_model_deployment_leaves_nothing_in_the_account(
    deployed_version, django_capture_on_commit_callbacks
):
    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(1)
    deploy(client, capture=django_capture_on_commit_callbacks)
    endpoint = Endpoint.objects.get(name="tml-intent-classifier-mme")
    assert account_resources()["endpoint_objects"] == [
        "platform/endpoints/tml-intent-classifier-mme/acme/intents/v1.tar.gz"
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete("/api/v1/tenants/acme/models/intents/deployments/")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "retired"
    assert account_resources() == {
        "endpoints": [],
        "configs": [],
        "models": [],
        "endpoint_objects": [],
        "scalable_targets": [],
    }
    endpoint.refresh_from_db()
    assert endpoint.status == Endpoint.Status.RETIRED
    placement = Placement.objects.get(version=deployed_version)
    assert placement.desired_state == Placement.DesiredState.UNLOADED
    assert placement.actual_state == Placement.ActualState.UNLOADED
    deleted = Event.objects.filter(kind="sagemaker.resource_deleted")
    assert {e.data["resource"] for e in deleted} >= {"S3 object", "endpoint", "endpoint config"}
    invoke = client.post(
        "/api/v1/tenants/acme/models/intents/invoke", {"inputs": ["refund?"]}, format="json"
    )
    assert invoke.status_code == 409, invoke.content


def test_retiring_one_model_keeps_the_shared_endpoint_for_the_others(
    deployed_version, django_capture_on_commit_callbacks
):
    from tests.factories import TenantModelFactory

    other_model = TenantModelFactory(tenant=deployed_version.model.tenant, name="other")
    other = ModelVersionFactory(
        model=other_model,
        number=1,
        status=ModelVersion.Status.READY,
        package_uri=deployed_version.package_uri,
        sha256="2" * 64,
        host_memory_mb=100.0,
        image_package_uri=deployed_version.image_package_uri,
        image_uri=deployed_version.image_uri,
        image_python=deployed_version.image_python,
    )
    other_model.active_version = other
    other_model.save()
    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(2)
    deploy(client, capture=django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/v1/tenants/acme/models/other/deployments/", {}, format="json")

    with django_capture_on_commit_callbacks(execute=True):
        client.delete("/api/v1/tenants/acme/models/intents/deployments/")

    left = account_resources()
    assert left["endpoints"] == ["tml-intent-classifier-mme"]
    assert left["endpoint_objects"] == [
        "platform/endpoints/tml-intent-classifier-mme/acme/other/v1.tar.gz"
    ]
    assert Endpoint.objects.get(name="tml-intent-classifier-mme").status == "in_service"


def test_a_superseded_dedicated_endpoint_is_deleted_once_the_rollback_window_has_passed(
    deployed_version, settings, django_capture_on_commit_callbacks
):
    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(2)
    deploy(client, mode="dedicated", capture=django_capture_on_commit_callbacks)
    v2 = second_version(deployed_version)
    deploy(client, mode="dedicated", version=2, capture=django_capture_on_commit_callbacks)
    deployment = Deployment.objects.get(model=deployed_version.model)
    assert deployment.live_version == v2 and deployment.previous_version == deployed_version
    # Within the window the old endpoint stays: a rollback is one row update.
    reconciler.reconcile_fleet()
    assert account_resources()["endpoints"] == [
        "tml-ded-acme-intents-v1",
        "tml-ded-acme-intents-v2",
    ]

    settings.TENANTML_SAGEMAKER_ROLLBACK_WINDOW_MINUTES = 0
    reconciler.reconcile_fleet()

    left = account_resources()
    assert left["endpoints"] == ["tml-ded-acme-intents-v2"]
    assert left["models"] == ["tml-ded-acme-intents-v2-model"]
    assert left["configs"] == ["tml-ded-acme-intents-v2-config-1"]
    assert Endpoint.objects.get(name="tml-ded-acme-intents-v1").status == "retired"
    assert Endpoint.objects.get(name="tml-ded-acme-intents-v2").status == "in_service"


def test_an_empty_endpoint_is_kept_when_the_policy_says_keep(
    deployed_version, settings, django_capture_on_commit_callbacks
):
    settings.TENANTML_SAGEMAKER_EMPTY_ENDPOINT_POLICY = "keep"
    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(1)
    deploy(client, capture=django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        client.delete("/api/v1/tenants/acme/models/intents/deployments/")

    left = account_resources()
    assert left["endpoints"] == ["tml-intent-classifier-mme"]
    assert left["endpoint_objects"] == []


def test_a_retirement_interrupted_by_a_crash_is_finished_by_the_reconciler(
    deployed_version, django_capture_on_commit_callbacks
):
    from deployments.services import retirement

    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(1)
    deploy(client, capture=django_capture_on_commit_callbacks)
    # The worker died before running the cleanup task: only the durable half happened.
    with django_capture_on_commit_callbacks(execute=False):
        retirement.retire_deployment(model=deployed_version.model, actor="test")
    assert account_resources()["endpoints"] == ["tml-intent-classifier-mme"]

    reconciler.reconcile_fleet()

    assert account_resources()["endpoints"] == []
    assert account_resources()["endpoint_objects"] == []


def test_deleting_a_deployment_that_never_existed_is_a_404_and_twice_is_harmless(
    deployed_version, django_capture_on_commit_callbacks
):
    client = api(deployed_version.model.tenant)
    assert client.delete("/api/v1/tenants/acme/models/intents/deployments/").status_code == 404
    answers_from_the_runtime(1)
    deploy(client, capture=django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        first = client.delete("/api/v1/tenants/acme/models/intents/deployments/")
        again = client.delete("/api/v1/tenants/acme/models/intents/deployments/")
    assert first.status_code == again.status_code == 202
    assert Event.objects.filter(kind="deployment.retired").count() == 1


def create_stray_endpoint(name: str) -> None:
    """An endpoint made under the platform's names by something the database never heard of."""
    from tests.deployments.backends.sagemaker.support import ROLE

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(
        ModelName=f"{name}-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "image", "ModelDataUrl": f"s3://{BUCKET}/x.tar.gz"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config-1",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config-1")
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key=f"platform/endpoints/{name}/acme/old/v1.tar.gz", Body=b"x"
    )


def test_the_reconciler_reports_resources_nobody_accounts_for_and_deletes_them_when_enabled(
    deployed_version, settings, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("deployments.backends.sagemaker.audit.GRACE_MINUTES", 0)
    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(1)
    deploy(client, capture=django_capture_on_commit_callbacks)
    create_stray_endpoint("tml-stray-mme")

    report = reconciler.reconcile_fleet()

    assert sorted(report.cloud_orphans_found) == [
        "S3 s3://tenantml-test/platform/endpoints/tml-stray-mme/acme/old/v1.tar.gz",
        "endpoint config tml-stray-mme-config-1",
        "endpoint tml-stray-mme",
        "model tml-stray-mme-model",
    ]
    assert report.cloud_orphans_deleted == []
    assert Event.objects.filter(kind="sagemaker.orphan_found").count() == 4
    assert "tml-stray-mme" in account_resources()["endpoints"]

    settings.TENANTML_SAGEMAKER_DELETE_ORPHANS = True
    report = reconciler.reconcile_fleet()

    assert len(report.cloud_orphans_deleted) == 4
    left = account_resources()
    # What the platform deployed is untouched.
    assert left["endpoints"] == ["tml-intent-classifier-mme"]
    assert left["models"] == ["tml-intent-classifier-mme-model"]
    assert left["endpoint_objects"] == [
        "platform/endpoints/tml-intent-classifier-mme/acme/intents/v1.tar.gz"
    ]
