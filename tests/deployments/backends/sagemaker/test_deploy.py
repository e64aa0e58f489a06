"""Deploying through the API to SageMaker (moto plays AWS): a shared multi-model endpoint sized
by the placement solver, the package copied under the endpoint's prefix as the TargetModel,
autoscaling on invocations per instance, the probe through the runtime before routing switches,
invocations answered through the runtime, and a dedicated endpoint per version."""

from __future__ import annotations

import asyncio
import base64
import json

import boto3
import pytest
from moto.sagemakerruntime.models import sagemakerruntime_backends

from deployments.models import Deployment, Endpoint, Placement
from tests.deployments.backends.sagemaker.support import (
    BUCKET,
    INTENT_ANSWER,
    REGION,
    answers_from_the_runtime,
    api,
)

pytestmark = pytest.mark.django_db


def test_a_multi_model_deployment_creates_the_endpoint_copies_the_package_and_answers(
    deployed_version, django_capture_on_commit_callbacks
):
    model = deployed_version.model
    client = api(model.tenant)
    answers_from_the_runtime(2)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/tenants/acme/models/intents/deployments/", {}, format="json"
        )

    assert response.status_code == 202, response.content
    deployment = Deployment.objects.get(model=model)
    assert deployment.status == Deployment.Status.LIVE, deployment.status_reason
    endpoint = deployment.endpoint
    assert endpoint.name == "tml-intent-classifier-mme"
    assert endpoint.backend == Endpoint.Backend.SAGEMAKER
    assert endpoint.status == Endpoint.Status.IN_SERVICE and endpoint.external_arn
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    described = sagemaker.describe_endpoint(EndpointName=endpoint.name)
    assert described["EndpointStatus"] == "InService"
    container = sagemaker.describe_model(ModelName=f"{endpoint.name}-model")["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["Image"].endswith("/sagemaker-tritonserver:24.09-py3")
    prefix = f"platform/endpoints/{endpoint.name}/"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/{prefix}"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    # The solver sized it: one model of 114 MB needs one instance of the cheapest type.
    variant = config["ProductionVariants"][0]
    assert variant["InitialInstanceCount"] == 1
    assert variant["InstanceType"] == endpoint.instance_type.name
    placement = Placement.objects.get(version=deployed_version, endpoint=endpoint)
    assert placement.external_name == "acme/intents/v1.tar.gz"
    assert placement.actual_state == Placement.ActualState.LOADED
    copied = boto3.client("s3", region_name=REGION).get_object(
        Bucket=BUCKET, Key=prefix + placement.external_name
    )
    assert copied["Body"].read() == b"package"
    policies = boto3.client("application-autoscaling", region_name=REGION)
    scaling = policies.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    target = scaling[0]["TargetTrackingScalingPolicyConfiguration"]
    assert target["TargetValue"] == 225.0
    assert scaling[0]["ResourceId"] == f"endpoint/{endpoint.name}/variant/AllTraffic"

    answer = client.post(
        "/api/v1/tenants/acme/models/intents/invoke",
        {"inputs": ["Where is my refund?"]},
        format="json",
    )

    assert answer.status_code == 200, answer.content
    assert answer.json()["outputs"][0]["label"] == "refund"
    assert answer.json()["model_version"] == 1


def test_a_dedicated_deployment_gets_its_own_single_model_endpoint(
    deployed_version, django_capture_on_commit_callbacks
):
    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(1)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/tenants/acme/models/intents/deployments/",
            {"mode": "dedicated"},
            format="json",
        )

    assert response.status_code == 202, response.content
    deployment = Deployment.objects.get(model=deployed_version.model)
    assert deployment.status == Deployment.Status.LIVE, deployment.status_reason
    assert deployment.endpoint.name == "tml-ded-acme-intents-v1"
    container = boto3.client("sagemaker", region_name=REGION).describe_model(
        ModelName="tml-ded-acme-intents-v1-model"
    )["PrimaryContainer"]
    assert container["Mode"] == "SingleModel"
    assert container["ModelDataUrl"] == deployed_version.package_uri


def test_without_a_role_the_rollout_fails_saying_what_is_missing(
    deployed_version, settings, django_capture_on_commit_callbacks
):
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ""
    client = api(deployed_version.model.tenant)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/tenants/acme/models/intents/deployments/", {}, format="json"
        )

    assert response.status_code in (202, 400)
    deployment = Deployment.objects.get(model=deployed_version.model)
    assert deployment.status == Deployment.Status.FAILED
    assert "SAGEMAKER_ROLE_ARN" in deployment.status_reason


def test_inference_components_are_refused_on_the_local_backend_naming_the_field(
    deployed_version, settings
):
    settings.TENANTML_DEPLOY_BACKEND = "local"
    client = api(deployed_version.model.tenant)

    response = client.post(
        "/api/v1/tenants/acme/models/intents/deployments/",
        {"mode": "inference-component"},
        format="json",
    )

    assert response.status_code == 400
    assert "mode" in json.dumps(response.json())
    assert not Deployment.objects.exists()


def test_the_hourly_warm_up_calls_sagemaker_copies_through_the_runtime(
    deployed_version, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from deployments.services import warmups

    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(3)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/v1/tenants/acme/models/intents/deployments/", {}, format="json")
    placement = Placement.objects.get(version=deployed_version)
    Placement.objects.filter(pk=placement.pk).update(
        last_invoked_at=timezone.now() - timedelta(hours=2), last_warmed_at=None
    )

    report = warmups.warm_up_fleet(skip_recent_s=600, policy="hourly-skip-recent")

    assert report.warmed == 1 and report.failed == 0 and report.usd > 0
    placement.refresh_from_db()
    assert placement.last_warmed_at is not None


def test_the_proxy_forwards_a_request_body_to_a_sagemaker_copy_by_its_target_model(
    deployed_version, django_capture_on_commit_callbacks
):
    from deployments.proxy import core
    from deployments.proxy.routing import load_route

    client = api(deployed_version.model.tenant)
    answers_from_the_runtime(2)  # the rollout's probe, then the proxied request
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/v1/tenants/acme/models/intents/deployments/", {}, format="json")
    route = load_route(tenant_slug="acme", model_name="intents")
    [copy] = route.copies
    body = json.dumps({"inputs": [{"name": "TEXT", "data": ["Where is my refund?"]}]}).encode()

    answer = asyncio.run(core.forward(route, body, "application/json"))

    assert copy.backend == Endpoint.Backend.SAGEMAKER
    assert answer.status == 200 and answer.cold_start is False
    assert json.loads(answer.body) == INTENT_ANSWER
    received = [
        json.loads(base64.b64decode(request))
        for requests in sagemakerruntime_backends["123456789012"][REGION].results.values()
        for request in requests
    ]
    targets = [
        {key.lower(): value for key, value in request.items()}.get("x-amzn-sagemaker-target-model")
        for request in received
        if request.get("Body") == body.decode()
    ]
    assert targets == ["acme/intents/v1.tar.gz"]
