"""The SageMaker serving path end to end on the SageMaker stand-in, through the platform's API:
a trained tenant model deployed in each mode, answered by a real Triton (through the proxy and
directly with boto3 ``sagemaker-runtime``), a new version switched to under concurrent traffic,
rolled back and retired; after each scenario the account holds exactly what the database says
is live. The production code is unchanged: boto3 finds the stand-in through the standard
``AWS_ENDPOINT_URL_*`` variables."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from config.env import ArtifactStore
from deployments.models import Deployment, Endpoint, Event, Placement, ScalingPolicy
from deployments.services import reconciler
from models_registry.models import ModelVersion
from models_registry.runtime_layers import running_python
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "tenantml-standin"
ROLE = "arn:aws:iam::123456789012:role/tenantml-serving"
TICKETS = ["Where is my refund?", "I cannot log in to my account"]
MODEL_URL = "/api/v1/tenants/acme/models/intents"


@pytest.fixture(scope="session")
def layer_cache(tmp_path_factory):
    """One var directory for the session, so the runtime layer is built once."""
    return tmp_path_factory.mktemp("standin-var")


@pytest.fixture
def on_standin(clean_sagemaker_standin, settings, monkeypatch, layer_cache):
    from config.celery import app

    standin = clean_sagemaker_standin
    standin.client("s3").create_bucket(Bucket=BUCKET)
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE
    settings.TENANTML_AWS_REGION = standin.region
    settings.TENANTML_DEPLOY_BACKEND = "sagemaker"
    settings.TENANTML_SAGEMAKER_IMAGE_PYTHON = running_python()
    settings.VAR_DIR = layer_cache
    monkeypatch.setattr("deployments.backends.sagemaker.deploy.WAIT_DELAY_S", 0.2)
    monkeypatch.setattr("deployments.backends.sagemaker.deploy.WAIT_MAX_ATTEMPTS", 600)
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield standin
    app.conf.task_always_eager = previous


@pytest.fixture
def intent_model(on_standin, intent_artifact):
    model = TenantModelFactory(
        tenant=TenantFactory(slug="acme"), name="intents", kind="intent-classifier"
    )
    packaged_version(model, intent_artifact, 1, promote=True)
    return model


def client_for(tenant) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {issue_token(tenant=tenant, name='t', actor='test').secret}"
    )
    return client


def deploy(client: APIClient, **body) -> dict:
    response = client.post(f"{MODEL_URL}/deployments/", body, format="json")
    assert response.status_code == 202, response.content
    deployment = client.get(f"{MODEL_URL}/deployments/").json()
    assert deployment["status"] == "live", deployment
    return deployment


def invoke(client: APIClient, texts=TICKETS[:1]) -> dict:
    response = client.post(f"{MODEL_URL}/invoke", {"inputs": texts}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def live_in_database() -> dict[str, set[str]]:
    """What the database says is live on SageMaker, in the stand-in's listing's terms."""
    from deployments.backends.sagemaker.deploy import component_name, version_model_name

    endpoints = Endpoint.objects.filter(backend="sagemaker").exclude(status="retired")
    live = {
        "endpoints": set(),
        "inference_components": set(),
        "component_models": set(),
        "endpoint_objects": set(),
    }
    for endpoint in endpoints:
        live["endpoints"].add(endpoint.name)
    wanted = Placement.objects.filter(endpoint__in=endpoints).exclude(
        desired_state=Placement.DesiredState.UNLOADED
    )
    for placement in wanted.select_related("version__model__tenant", "endpoint"):
        if placement.endpoint.mode == Endpoint.Mode.INFERENCE_COMPONENT:
            live["inference_components"].add(component_name(placement.version.model))
            live["component_models"].add(version_model_name(placement.version))
        elif placement.endpoint.mode == Endpoint.Mode.MME:
            live["endpoint_objects"].add(
                f"{BUCKET}/platform/endpoints/{placement.endpoint.name}/{placement.external_name}"
            )
    return live


def assert_account_matches_database(standin) -> dict[str, list[str]]:
    """Every SageMaker resource and endpoint object on the stand-in is one the database has."""
    resources = standin.resources()
    live = live_in_database()
    assert set(resources["endpoints"]) == live["endpoints"]
    assert set(resources["inference_components"]) == live["inference_components"]
    endpoint_objects = {
        key for key in resources["s3_objects"] if key.startswith(f"{BUCKET}/platform/endpoints/")
    }
    assert endpoint_objects == live["endpoint_objects"]
    # Each endpoint's own model and configs, each placed version's component model and each
    # component's alarm; nothing else.
    for name in resources["models"]:
        assert name in live["component_models"] or any(
            name == f"{owner}-model" for owner in live["endpoints"]
        ), f"model {name} is left over"
    for name in resources["endpoint_configs"]:
        assert any(name.startswith(f"{owner}-config-") for owner in live["endpoints"]), name
    for alarm in resources["alarms"]:
        assert any(alarm.startswith(c) for c in live["inference_components"]), alarm
    for target in resources["scalable_targets"]:
        resource_id = target.split("|")[0]
        assert any(
            resource_id in (f"endpoint/{e}/variant/AllTraffic", f"inference-component/{e}")
            for e in live["endpoints"] | live["inference_components"]
        ), f"scalable target {target} is left over"
    return resources


def scaling_policies(standin) -> list[dict]:
    """Every Application Auto Scaling policy the account holds."""
    autoscaling = standin.client("application-autoscaling")
    return autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]


def wait_until(condition, *, timeout_s: float = 60.0, every_s: float = 0.1):
    """Poll ``condition`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"still not true after {timeout_s} s: {condition.__doc__ or condition}")


def traffic_during(client_secret: str, action, *, threads: int = 2) -> tuple[list, list]:
    """Run ``action`` while ``threads`` clients invoke the model without pause; the failures
    and the versions that answered."""
    failures: list[str] = []
    versions: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        try:
            send()
        finally:
            connection.close()  # this thread's own database connection

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {client_secret}")
        while not stop.is_set():
            response = client.post(f"{MODEL_URL}/invoke", {"inputs": TICKETS[:1]}, format="json")
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.content[:300]!r}")
                continue
            body = response.json()
            if body["outputs"][0]["label"] != "refund":
                failures.append(f"wrong answer {body}")
            versions.append(body["model_version"])
            # A steady stream rather than a flood: two cores also run the rollout and Triton.
            time.sleep(0.02)

    workers = [threading.Thread(target=traffic) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        action()
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    return failures, versions


def runtime_answer(standin, endpoint: str, **target) -> dict:
    """Invoke with plain boto3 ``sagemaker-runtime``, as a product team's script would."""
    from models_registry.kinds import get_kind

    body = get_kind("intent-classifier").encode_request(TICKETS[:1])
    answer = standin.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint,
        ContentType="application/json",
        Body=json.dumps(body).encode(),
        **target,
    )
    return json.loads(answer["Body"].read())


def label_of(answer: dict) -> str:
    return next(o for o in answer["outputs"] if o["name"] == "LABEL")["data"][0]


def through_the_platforms_proxy(proxy_url: str, tenant) -> str:
    """The label the platform's proxy answers on its SageMaker-runtime route (boto3 pointed at
    the proxy with issued credentials, the tenant as the endpoint, the model as the target)."""
    import boto3
    from botocore.config import Config

    from models_registry.kinds import get_kind

    issued = issue_token(tenant=tenant, name="aws-sdk", actor="test")
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=proxy_url,
        region_name="us-east-1",
        aws_access_key_id=issued.access_key_id,
        aws_secret_access_key=issued.secret_access_key,
        config=Config(retries={"total_max_attempts": 1}),
    )
    body = get_kind("intent-classifier").encode_request(TICKETS[:1])
    answer = runtime.invoke_endpoint(
        EndpointName="acme",
        TargetModel="intents",
        ContentType="application/json",
        Body=json.dumps(body).encode(),
    )
    return label_of(json.loads(answer["Body"].read()))


def test_a_multi_model_deployment_serves_switches_rolls_back_and_retires_on_real_triton(
    on_standin, intent_model, intent_artifact, proxy_url
):
    from models_registry.services.promotion import promote_version

    standin = on_standin
    client = client_for(intent_model.tenant)

    deployment = deploy(client, mode="mme")

    assert deployment["endpoint"] == "tml-intent-classifier-mme"
    assert invoke(client)["outputs"][0]["label"] == "refund"
    assert through_the_platforms_proxy(proxy_url, intent_model.tenant) == "refund"
    answer = runtime_answer(
        standin, "tml-intent-classifier-mme", TargetModel="acme/intents/v1.tar.gz"
    )
    assert label_of(answer) == "refund"
    resources = assert_account_matches_database(standin)
    assert resources["endpoints"] == ["tml-intent-classifier-mme"]
    assert resources["models"] == ["tml-intent-classifier-mme-model"]
    # A CPU type: the variant tracks 225 invocations per instance, kept as a row.
    [policy] = scaling_policies(standin)
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert tracking["TargetValue"] == 225.0
    assert ScalingPolicy.objects.get().policy_arn == policy["PolicyARN"]

    v2 = packaged_version(intent_model, intent_artifact, 2)
    secret = issue_token(tenant=intent_model.tenant, name="load", actor="test").secret
    # Promoting the new version rolls it out to the deployment.
    failures, versions = traffic_during(secret, lambda: promote_version(version=v2, actor="test"))

    assert failures == []
    assert 1 in versions and 2 in versions and versions[-1] == 2
    assert Deployment.objects.get(model=intent_model).live_version == v2

    failures, versions = traffic_during(
        secret,
        lambda: client.post(f"{MODEL_URL}/deployments/rollback", format="json"),
    )

    assert failures == [] and versions[-1] == 1
    assert_account_matches_database(standin)

    response = client.delete(f"{MODEL_URL}/deployments/")

    assert response.status_code == 202
    left = assert_account_matches_database(standin)
    assert left["endpoints"] == left["models"] == left["endpoint_configs"] == []
    assert not [key for key in left["s3_objects"] if "/endpoints/" in key]
    assert left["scalable_targets"] == []
    assert scaling_policies(standin) == [] and not ScalingPolicy.objects.exists()
    assert standin.tritons() == []


def test_an_inference_component_rolls_to_a_new_version_in_place_and_back(
    on_standin, intent_model, intent_artifact
):
    standin = on_standin
    client = client_for(intent_model.tenant)

    deployment = deploy(client, mode="inference-component")

    assert deployment["endpoint"] == "tml-intent-classifier-ic"
    assert invoke(client)["outputs"][0]["label"] == "refund"
    answer = runtime_answer(
        standin, "tml-intent-classifier-ic", InferenceComponentName="tml-acme-intents"
    )
    assert label_of(answer) == "refund"
    resources = assert_account_matches_database(standin)
    assert resources["inference_components"] == ["tml-acme-intents"]
    assert resources["models"] == ["tml-acme-intents-v1"]

    packaged_version(intent_model, intent_artifact, 2)
    secret = issue_token(tenant=intent_model.tenant, name="load", actor="test").secret
    failures, versions = traffic_during(secret, lambda: deploy(client, version=2))

    assert failures == []
    assert versions[-1] == 2
    described = standin.client("sagemaker").describe_inference_component(
        InferenceComponentName="tml-acme-intents"
    )
    assert described["Specification"]["ModelName"] == "tml-acme-intents-v2"
    # Updated in place: still one component, the superseded version's model deleted.
    resources = assert_account_matches_database(standin)
    assert resources["inference_components"] == ["tml-acme-intents"]

    back = client.post(f"{MODEL_URL}/deployments/rollback", format="json")

    assert back.status_code == 202
    assert invoke(client)["model_version"] == 1
    described = standin.client("sagemaker").describe_inference_component(
        InferenceComponentName="tml-acme-intents"
    )
    assert described["Specification"]["ModelName"] == "tml-acme-intents-v1"

    assert client.delete(f"{MODEL_URL}/deployments/").status_code == 202

    left = assert_account_matches_database(standin)
    assert left["inference_components"] == left["endpoints"] == left["models"] == []
    assert left["alarms"] == left["scalable_targets"] == []
    assert standin.tritons() == []


def test_a_dedicated_deployment_gets_a_new_endpoint_per_version_and_the_old_one_goes(
    on_standin, intent_model, intent_artifact, settings
):
    standin = on_standin
    client = client_for(intent_model.tenant)

    deployment = deploy(client, mode="dedicated")

    assert deployment["endpoint"] == "tml-ded-acme-intents-v1"
    assert label_of(runtime_answer(standin, "tml-ded-acme-intents-v1")) == "refund"
    packaged_version(intent_model, intent_artifact, 2)
    secret = issue_token(tenant=intent_model.tenant, name="load", actor="test").secret
    failures, versions = traffic_during(secret, lambda: deploy(client, version=2))
    assert failures == [] and versions[-1] == 2
    # Within the rollback window v1's endpoint still runs: rolling back is a probe and a switch.
    failures, versions = traffic_during(
        secret, lambda: client.post(f"{MODEL_URL}/deployments/rollback", format="json")
    )
    assert failures == [] and versions[-1] == 1
    deploy(client, version=2)
    assert invoke(client)["model_version"] == 2

    settings.TENANTML_SAGEMAKER_ROLLBACK_WINDOW_MINUTES = 0
    reconciler.reconcile_fleet()

    resources = assert_account_matches_database(standin)
    assert resources["endpoints"] == ["tml-ded-acme-intents-v2"]

    client.delete(f"{MODEL_URL}/deployments/")

    left = assert_account_matches_database(standin)
    assert left["endpoints"] == left["models"] == left["endpoint_configs"] == []
    assert standin.tritons() == []


def test_a_package_without_its_runtime_layer_fails_on_the_image_with_the_reason(
    on_standin, intent_model
):
    version = intent_model.active_version
    # As if built for the image without what its Python lacks: the plain Triton package.
    ModelVersion.objects.filter(pk=version.pk).update(
        image_package_uri=version.package_uri,
        image_uri=version.image_uri or "",
        image_python=running_python(),
    )
    from deployments.backends.sagemaker.deploy import serving_image

    ModelVersion.objects.filter(pk=version.pk).update(image_uri=serving_image())
    client = client_for(intent_model.tenant)

    response = client.post(f"{MODEL_URL}/deployments/", {"mode": "dedicated"}, format="json")

    assert response.status_code == 202
    deployment = client.get(f"{MODEL_URL}/deployments/").json()
    assert deployment["status"] == "failed"
    assert "No module named 'onnxruntime'" in deployment["status_reason"]
    # The Failed endpoint is deleted with its config and model: nothing is left behind.
    left = assert_account_matches_database(on_standin)
    assert left["endpoints"] == left["models"] == left["endpoint_configs"] == []


def test_fleet_costs_count_a_multi_model_endpoint_at_the_instances_it_really_runs(
    on_standin, intent_model, platform_client
):
    from decimal import Decimal

    standin = on_standin
    deploy(client_for(intent_model.tenant), mode="mme")
    endpoint = Endpoint.objects.get(name="tml-intent-classifier-mme")
    price = Decimal(endpoint.instance_type.usd_per_hour)

    standin.client("sagemaker").update_endpoint_weights_and_capacities(
        EndpointName=endpoint.name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}],
    )
    waiter = standin.client("sagemaker").get_waiter("endpoint_in_service")
    waiter.wait(EndpointName=endpoint.name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 240})
    reconciler.reconcile_fleet()

    costs = platform_client.get("/api/v1/fleet/costs").json()
    [row] = [r for r in costs["endpoints"] if r["endpoint"] == endpoint.name]
    assert row["live_instances"] == 2
    assert Decimal(str(row["usd_per_hour"])) == 2 * price
    assert Decimal(str(costs["usd_per_hour"])) >= 2 * price
    assert len([p for p in standin.processes() if p.get("endpoint") == endpoint.name]) == 2

    client_for(intent_model.tenant).delete(f"{MODEL_URL}/deployments/")
    reconciler.reconcile_fleet()

    costs = platform_client.get("/api/v1/fleet/costs").json()
    assert not [r for r in costs["endpoints"] if r["endpoint"] == endpoint.name]
    assert_account_matches_database(standin)


def test_an_inference_component_update_whose_alarm_fires_is_rolled_back_by_sagemaker(
    on_standin, intent_model, intent_artifact
):
    standin = on_standin
    client = client_for(intent_model.tenant)
    deploy(client, mode="inference-component")
    packaged_version(intent_model, intent_artifact, 2)
    # The component's 5xx alarm is firing while v2 rolls out.
    standin.client("cloudwatch").set_alarm_state(
        AlarmName="tml-acme-intents-invocation-5xx", StateValue="ALARM", StateReason="test"
    )

    response = client.post(f"{MODEL_URL}/deployments/", {"version": 2}, format="json")

    assert response.status_code == 202
    deployment = client.get(f"{MODEL_URL}/deployments/").json()
    assert deployment["status"] == "failed"
    assert "rolled tml-acme-intents back" in deployment["status_reason"]
    assert deployment["live_version"] == 1
    assert invoke(client)["model_version"] == 1
    resources = assert_account_matches_database(standin)
    assert resources["models"] == ["tml-acme-intents-v1"]  # v2's model went with the rollback


def test_an_idle_component_scales_to_zero_and_its_next_request_brings_a_copy_back(
    on_standin, intent_model
):
    import math

    from tenants.models import Tenant

    standin = on_standin
    client = client_for(intent_model.tenant)
    deploy(client, mode="inference-component")
    autoscaling = standin.client("application-autoscaling")
    sagemaker = standin.client("sagemaker")

    def min_copies() -> int:
        [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
            "ScalableTargets"
        ]
        return target["MinCapacity"]

    def scaled_to_zero() -> bool:
        """the component at zero copies, done scaling"""
        state = sagemaker.describe_inference_component(InferenceComponentName="tml-acme-intents")
        return (
            state["RuntimeConfig"]["CurrentCopyCount"] == 0
            and state["InferenceComponentStatus"] == "InService"
        )

    assert min_copies() == 0
    assert {p.policy_name for p in ScalingPolicy.objects.all()} == {
        "tml-acme-intents-invocations-per-copy",
        "tml-acme-intents-scale-out-from-zero",
    }
    assert "tml-acme-intents-no-capacity" in standin.resources()["alarms"]

    # Idle: a few short CloudWatch minutes later the model runs no copy.
    standin.set_clock(period_s=0.3, scale_in_periods=2)
    wait_until(scaled_to_zero)
    # No second scale in while it comes back: the test reads one return, not a race.
    standin.set_clock(scale_in_periods=1000)
    reconciler.reconcile_fleet()

    placement = Placement.objects.get(version__model=intent_model, actual_state="loaded")
    assert placement.copies == 0  # the mirrored count: what the admin and dashboard show
    assert Event.objects.filter(kind="sagemaker.component_scaled_to_zero").count() == 1

    first = client.post(f"{MODEL_URL}/invoke", {"inputs": TICKETS[:1]}, format="json")

    assert first.status_code == 503, first.content
    assert first.json()["error"]["code"] == "scaling_from_zero", first.content
    # The wait is this component's measured start (its rollout's copy), not a constant.
    assert int(first["Retry-After"]) == max(1, math.ceil(placement.load_time_ms / 1000))
    waits = []

    def answered():
        """a 200 once the copy is back"""
        response = client.post(f"{MODEL_URL}/invoke", {"inputs": TICKETS[:1]}, format="json")
        if response.status_code == 200:
            return response
        waits.append((response.status_code, response.get("Retry-After")))
        return None

    answer = wait_until(answered, every_s=0.2)
    # Meanwhile every caller was told to retry, and when: never a 5xx without Retry-After.
    assert all(status == 503 and retry_after for status, retry_after in waits), waits
    assert answer.json()["outputs"][0]["label"] == "refund"
    # One copy asked for, however many requests met the component at zero.
    assert Event.objects.filter(kind="sagemaker.scale_out_requested").count() == 1
    [back] = Event.objects.filter(kind="sagemaker.component_scaled_from_zero")
    placement.refresh_from_db()
    assert placement.copies == 1
    assert placement.load_time_ms == pytest.approx(back.data["measured_s"] * 1000, abs=1)

    # The tenant goes premium and asks for two replicas: its model is pinned, and a pinned
    # model never scales to zero.
    Tenant.objects.filter(pk=intent_model.tenant_id).update(tier=Tenant.Tier.PREMIUM)
    deploy(client, mode="inference-component", replicas=2)

    assert min_copies() >= 1
    assert [p.policy_name for p in ScalingPolicy.objects.all()] == [
        "tml-acme-intents-invocations-per-copy"
    ]
    assert "tml-acme-intents-no-capacity" not in standin.resources()["alarms"]

    client.delete(f"{MODEL_URL}/deployments/")

    left = assert_account_matches_database(standin)
    assert left["alarms"] == left["scalable_targets"] == [] == scaling_policies(standin)
    assert not ScalingPolicy.objects.exists()
