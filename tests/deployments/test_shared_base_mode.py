"""The shared-base deployment mode on real Triton: one loaded encoder per instance answers every
tenant's head. A real trained intent classifier is deployed through the API and answered on the
REST invoke, the Open Inference Protocol (``tritonclient``) and the SageMaker runtime (boto3);
hundreds of tenants' versions, registered through the registry from real artifacts whose head is
replaced by another valid one, share one instance and are each answered with their own head;
heads are evicted under a small budget and come back as cold starts; a Triton restart loses the
encoder and every head, and they come back."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from deployments.backends import backend_for
from deployments.backends.local import runtime, shared_base
from deployments.backends.shared_heads import list_heads_body, parse_heads_answer
from deployments.models import Deployment, Endpoint, Event, Instance, Placement
from deployments.proxy import core
from deployments.proxy.routing import ROUTES
from models_registry.kinds import get_kind, kind_names
from models_registry.services.registry import register_version
from models_registry.triton_runtime.intent_classifier import Predictor as IntentPredictor
from models_registry.triton_runtime.tenantml_encoder import Encoder
from models_registry.triton_runtime.tenantml_head import Head
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

TICKETS = ["Where is my refund?", "I can't log in to my account.", "My parcel never arrived."]
KIND = "intent-classifier"


@pytest.fixture(autouse=True)
def shared_base_var(local_rollouts, settings, base_encoder_cache_dir):
    """The test's VAR_DIR sees the session's exported base encoder (the shared model's files)."""
    cache = Path(settings.VAR_DIR) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.symlink(base_encoder_cache_dir, cache / "base_models")
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()
    shared_base._ENCODERS_READY.clear()


def deploy_shared(client, model) -> Deployment:
    response = client.post(
        f"/api/v1/tenants/{model.tenant.slug}/models/{model.name}/deployments/",
        {"mode": "shared-base"},
        format="json",
    )
    assert response.status_code == 202, response.content
    return Deployment.objects.select_related("endpoint").get(model=model)


def derived_artifact(source: Path, target: Path, *, seed: int) -> tuple[Path, list[str]]:
    """A copy of a real artifact with another valid head: random weights, its own label names."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copyfile(path, target / path.name)
    rng = np.random.default_rng(seed)
    labels = [f"t{seed}-{name}" for name in ("billing", "login", "delivery", "other")]
    (target / "head.npz").unlink()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W=rng.normal(0, 1.5, (384, len(labels))).astype(np.float32),
        b=rng.normal(0, 0.1, len(labels)).astype(np.float32),
    )
    (target / "head.npz").write_bytes(buffer.getvalue())
    (target / "labels.json").unlink()
    (target / "labels.json").write_text(json.dumps(labels))
    return target, labels


def offline_answer(artifact: Path, embeddings: np.ndarray) -> list[dict]:
    head = Head.from_dir(str(artifact))
    probabilities = head.probabilities(embeddings)
    return [
        {"label": label, "scores": dict(zip(head.labels, map(float, row), strict=True))}
        for label, row in zip(head.decide(probabilities), probabilities, strict=True)
    ]


def resident_heads(instance: Instance) -> dict[str, int]:
    client = runtime.client_for(instance)
    return parse_heads_answer(client.invoke(shared_base.encoder_name(KIND), list_heads_body()))


def test_shared_base_is_refused_for_a_kind_without_a_shared_base(tenant_client, tenant):
    plain = next((k for k in kind_names() if get_kind(k).shared_base is None), None)
    assert plain is not None, "every kind has a shared base now: pick another refusal"
    model = TenantModelFactory(tenant=tenant, kind=plain)
    packaged = model.versions.create(number=1, status="ready", package_uri="/x", sha256="0" * 64)
    model.active_version = packaged
    model.save(update_fields=["active_version"])

    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/{model.name}/deployments/",
        {"mode": "shared-base"},
        format="json",
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "mode"
    assert "shared base" in error["message"]
    assert not Deployment.objects.filter(model=model).exists()


def test_a_trained_classifier_deployed_shared_base_answers_on_all_three_protocols(
    tenant_client, tenant, proxy_url, intent_artifact
):
    import boto3
    import tritonclient.http as httpclient
    from botocore.config import Config

    from tests.deployments.proxy.test_proxy import call, invoke_url, kserve_request

    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)

    deployment = deploy_shared(tenant_client, model)

    assert deployment.status == Deployment.Status.LIVE, deployment.status_reason
    assert deployment.mode == "shared-base"
    assert deployment.endpoint.mode == Endpoint.Mode.SHARED_BASE
    placement = Placement.objects.select_related("instance").get(version__model=model)
    head_bytes = sum((intent_artifact / n).stat().st_size for n in ("head.npz", "labels.json"))
    # The copy weighs its head (a few KB, as the serving model holds it), not an encoder.
    assert 0 < placement.host_memory_mb * 1024 * 1024 <= head_bytes
    assert placement.actual_state == Placement.ActualState.LOADED
    assert placement.instance.shared_base_memory_mb is not None
    assert placement.instance.shared_base_memory_mb > 20
    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    token = issue_token(tenant=tenant, name="product", actor="test")

    # REST invoke.
    status, headers, body = call(
        invoke_url(proxy_url, tenant.slug, "intents"), token=token.secret, body={"inputs": TICKETS}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model_version"] == 1 and answer["cold_start"] is False
    assert [o["label"] for o in answer["outputs"]] == [e["label"] for e in expected]
    for got, want in zip(answer["outputs"], expected, strict=True):
        assert set(got["scores"]) == set(want["scores"])
        for label, score in want["scores"].items():
            assert got["scores"][label] == pytest.approx(score, abs=0.02)

    # Open Inference Protocol: tritonclient unchanged, JSON and binary tensors.
    client = httpclient.InferenceServerClient(url=proxy_url.removeprefix("http://"))
    auth = {"Authorization": f"Bearer {token.secret}"}
    public = f"{tenant.slug}.intents"
    for binary in (True, False):
        text = httpclient.InferInput("TEXT", [len(TICKETS), 1], "BYTES")
        text.set_data_from_numpy(
            np.array([[t.encode()] for t in TICKETS], dtype=object), binary_data=binary
        )
        outputs = [
            httpclient.InferRequestedOutput("LABEL", binary_data=binary),
            httpclient.InferRequestedOutput("SCORES", binary_data=binary),
            httpclient.InferRequestedOutput("LABELS", binary_data=binary),
        ]
        result = client.infer(public, [text], outputs=outputs, headers=dict(auth))
        labels = [
            value.decode() if isinstance(value, bytes) else value
            for value in result.as_numpy("LABEL").reshape(-1)
        ]
        assert labels == [e["label"] for e in expected], binary
        assert result.as_numpy("SCORES").shape == (3, 3)
        response = result.get_response()
        assert response["model_name"] == public
        assert {o["name"] for o in response["outputs"]} == {"LABEL", "SCORES", "LABELS"}

    # SageMaker runtime: boto3 with the platform's issued credentials and a TargetModel.
    sagemaker = boto3.client(
        "sagemaker-runtime",
        endpoint_url=proxy_url,
        region_name="us-east-1",
        aws_access_key_id=token.access_key_id,
        aws_secret_access_key=token.secret_access_key,
        config=Config(retries={"total_max_attempts": 1}),
    )
    response = sagemaker.invoke_endpoint(
        EndpointName=tenant.slug,
        TargetModel="intents",
        ContentType="application/json",
        Body=kserve_request(TICKETS),
    )
    answer = json.loads(response["Body"].read())
    assert {o["name"] for o in answer["outputs"]} == {"LABEL", "SCORES", "LABELS"}
    label = next(o for o in answer["outputs"] if o["name"] == "LABEL")
    assert label["data"] == [e["label"] for e in expected]


def test_three_hundred_tenants_on_one_instance_are_each_answered_with_their_own_head(
    tenant_client, tenant, intent_artifact, tmp_path
):
    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    deployment = deploy_shared(tenant_client, model)
    instance = Placement.objects.select_related("endpoint").get(version__model=model).instance
    embeddings = Encoder(str(intent_artifact)).embed(TICKETS)

    placements, offline = [], {}
    for number in range(300):
        other = TenantModelFactory(
            tenant=TenantFactory(slug=f"tenant-{number:03d}"), name="intents", kind=KIND
        )
        artifact, _ = derived_artifact(intent_artifact, tmp_path / f"a{number}", seed=number)
        version = register_version(model=other, actor="test", artifact_uri=str(artifact))
        placements.append(shared_base.place_head(version=version, instance=instance, actor="test"))
        offline[version.pk] = offline_answer(artifact, embeddings)
    serving = backend_for(deployment.endpoint)

    started = time.perf_counter()
    answers = {}
    for placement in Placement.objects.filter(pk__in=[p.pk for p in placements]).select_related(
        "version__model__tenant", "instance", "endpoint"
    ):
        answers[placement.version_id] = serving.invoke(placement=placement, inputs=TICKETS)
    elapsed = time.perf_counter() - started

    for version_id, result in answers.items():
        assert result.cold_start is True
        want = offline[version_id]
        assert [o["label"] for o in result.outputs] == [w["label"] for w in want]
        for got, expected in zip(result.outputs, want, strict=True):
            assert got["scores"] == pytest.approx(expected["scores"], abs=1e-4)
    # Every head is resident in the one encoder, and the encoder loaded once.
    assert len(resident_heads(instance)) == 301
    assert Event.objects.filter(kind="shared_base.loaded", instance=instance).count() == 1
    listed = runtime.client_for(instance).list_models()
    assert [m.name for m in listed] == [shared_base.encoder_name(KIND)]
    # A second request per tenant is warm.
    again = Placement.objects.select_related("version__model__tenant", "instance", "endpoint").get(
        pk=placements[123].pk
    )
    assert serving.invoke(placement=again, inputs=TICKETS[:1]).cold_start is False
    print(f"300 cold heads loaded and answered in {elapsed:.1f} s")


def test_heads_are_evicted_under_a_small_budget_and_come_back_cold(
    tenant_client, tenant, intent_artifact, tmp_path, settings
):
    settings.TENANTML_SHARED_BASE_HEAD_BUDGET_MB = 0.05  # about eight 6 KB heads
    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    deployment = deploy_shared(tenant_client, model)
    instance = Placement.objects.get(version__model=model).instance
    embeddings = Encoder(str(intent_artifact)).embed(TICKETS)
    serving = backend_for(deployment.endpoint)
    placements, offline = [], {}
    for number in range(20):
        other = TenantModelFactory(
            tenant=TenantFactory(slug=f"small-{number:02d}"), name="intents", kind=KIND
        )
        artifact, _ = derived_artifact(intent_artifact, tmp_path / f"a{number}", seed=number)
        version = register_version(model=other, actor="test", artifact_uri=str(artifact))
        placements.append(shared_base.place_head(version=version, instance=instance, actor="test"))
        offline[version.pk] = offline_answer(artifact, embeddings)

    def fresh(placement):
        return Placement.objects.select_related(
            "version__model__tenant", "instance", "endpoint"
        ).get(pk=placement.pk)

    for placement in placements:
        result = serving.invoke(placement=fresh(placement), inputs=TICKETS)
        assert [o["label"] for o in result.outputs] == [
            w["label"] for w in offline[placement.version_id]
        ]
        resident = Placement.objects.filter(
            instance=instance, actual_state=Placement.ActualState.LOADED
        )
        assert sum(p.host_memory_mb for p in resident) <= 0.05
    held = resident_heads(instance)
    assert 2 <= len(held) < 21
    assert sum(held.values()) <= 0.05 * 1024 * 1024
    evicted = Event.objects.filter(kind="placement.evicted", instance=instance)
    assert evicted.count() >= 20 + 1 - len(held)
    # The encoder is never unloaded to make room: evictions are of heads only.
    assert [m.name for m in runtime.client_for(instance).list_models()] == [
        shared_base.encoder_name(KIND)
    ]
    # The first tenant's head was evicted: its next request loads it again, a cold start.
    first = fresh(placements[0])
    assert first.actual_state == Placement.ActualState.EVICTED
    result = serving.invoke(placement=first, inputs=TICKETS)
    assert result.cold_start is True
    assert [o["label"] for o in result.outputs] == [
        w["label"] for w in offline[placements[0].version_id]
    ]
    # Unloading a head is a call into the serving process: milliseconds, no Triton unload.
    started = time.perf_counter()
    serving.unload(placement=fresh(placements[0]), actor="test", reason="test")
    assert time.perf_counter() - started < 0.5
    assert shared_base.head_id(placements[0].version) not in resident_heads(instance)


def test_concurrent_requests_for_a_cold_head_load_it_once(
    tenant_client, tenant, intent_artifact, tmp_path
):
    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    deployment = deploy_shared(tenant_client, model)
    instance = Placement.objects.get(version__model=model).instance
    other = TenantModelFactory(tenant=TenantFactory(slug="burst"), name="intents", kind=KIND)
    artifact, labels = derived_artifact(intent_artifact, tmp_path / "burst", seed=7)
    version = register_version(model=other, actor="test", artifact_uri=str(artifact))
    placement = shared_base.place_head(version=version, instance=instance, actor="test")
    serving = backend_for(deployment.endpoint)
    results, errors = [], []

    def ask():
        from django.db import connection

        try:
            copy = Placement.objects.select_related(
                "version__model__tenant", "instance", "endpoint"
            ).get(pk=placement.pk)
            results.append(serving.invoke(placement=copy, inputs=TICKETS[:1]))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors
    assert len(results) == 8 and all(r.outputs[0]["label"] in labels for r in results)
    loads = Event.objects.filter(kind="placement.loaded", version=version)
    assert loads.count() == 1
    assert any(r.cold_start for r in results)
    # The usage figures count the eight requests and the cold start(s) among them.
    from deployments.models import VersionUsageMinute
    from deployments.usage import flush_usage

    flush_usage()
    minutes = VersionUsageMinute.objects.filter(version=version)
    assert sum(m.invocations for m in minutes) == 8
    assert sum(m.cold_starts for m in minutes) == sum(r.cold_start for r in results) >= 1


def test_a_triton_restart_loses_encoder_and_heads_and_they_come_back(
    tenant_client, tenant, intent_artifact, proxy_url
):
    from deployments.services.reconciler import reconcile_fleet
    from tests.deployments.proxy.test_proxy import call, invoke_url

    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    deploy_shared(tenant_client, model)
    placement = Placement.objects.select_related("instance").get(version__model=model)
    token = issue_token(tenant=tenant, name="product", actor="test").secret
    status, _, body = call(
        invoke_url(proxy_url, tenant.slug, "intents"), token=token, body={"inputs": TICKETS}
    )
    assert status == 200 and json.loads(body)["cold_start"] is False

    os.killpg(placement.instance.pid, signal.SIGKILL)
    report = reconcile_fleet()

    assert report.instances_restarted, report
    instance = Instance.objects.get(pk=placement.instance_id)
    # The head was invoked within the hot window: the reconciler brought encoder and head back.
    assert shared_base.head_id(placement.version) in resident_heads(instance)
    ROUTES.invalidate(None)
    status, _, body = call(
        invoke_url(proxy_url, tenant.slug, "intents"), token=token, body={"inputs": TICKETS}
    )
    assert status == 200, body
    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    assert [o["label"] for o in json.loads(body)["outputs"]] == [e["label"] for e in expected]


def test_the_encoder_instances_follow_the_request_rate(
    tenant_client, tenant, intent_artifact, tmp_path
):
    from datetime import timedelta

    from django.utils import timezone

    from deployments.models import EndpointUsageMinute
    from deployments.services.reconciler import reconcile_fleet

    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    deployment = deploy_shared(tenant_client, model)
    endpoint = deployment.endpoint
    first = Placement.objects.get(version__model=model).instance
    other = TenantModelFactory(tenant=TenantFactory(slug="busy"), name="intents", kind=KIND)
    artifact, labels = derived_artifact(intent_artifact, tmp_path / "busy", seed=3)
    version = register_version(model=other, actor="test", artifact_uri=str(artifact))
    shared_base.place_head(version=version, instance=first, actor="test")
    # Five minutes at 40 requests/s of 30 ms: 1.2 encoders busy, more than one can take.
    now = timezone.now().replace(second=0, microsecond=0)
    for minute in range(5):
        EndpointUsageMinute.objects.create(
            endpoint=endpoint,
            minute=now - timedelta(minutes=minute),
            invocations=2_400,
            latency_ms_sum=2_400 * 30.0,
        )

    report = reconcile_fleet()

    live = list(endpoint.instances.exclude(status=Instance.Status.STOPPED).order_by("ordinal"))
    assert len(live) == 2, report
    second = live[1]
    copies = Placement.objects.filter(instance=second).select_related(
        "version__model__tenant", "instance", "endpoint"
    )
    assert {p.version_id for p in copies} == {deployment.live_version_id, version.pk}
    assert Event.objects.filter(kind="endpoint.scaled_out", endpoint=endpoint).exists()
    copy = next(p for p in copies if p.version_id == version.pk)
    result = backend_for(endpoint).invoke(placement=copy, inputs=TICKETS)
    assert result.cold_start is True and result.outputs[0]["label"] in labels
    assert len(resident_heads(second)) == 1

    # The traffic stops: one instance is enough again, and every head is still served.
    EndpointUsageMinute.objects.filter(endpoint=endpoint).delete()
    reconcile_fleet()

    live = list(endpoint.instances.exclude(status=Instance.Status.STOPPED))
    assert live == [first]
    assert Event.objects.filter(kind="endpoint.scaled_in", endpoint=endpoint).exists()
    served = Placement.objects.reachable().filter(endpoint=endpoint)
    assert {p.version_id for p in served} == {deployment.live_version_id, version.pk}


def test_a_model_moved_from_mme_to_shared_base_is_served_by_its_head_only(
    tenant_client, tenant, intent_artifact, proxy_url
):
    from tests.deployments.proxy.test_proxy import call, invoke_url

    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/intents/deployments/", {}, format="json"
    )
    assert response.status_code == 202, response.content
    mme_copy = Placement.objects.select_related("endpoint").get(version__model=model)
    assert mme_copy.endpoint.mode == Endpoint.Mode.MME

    deployment = deploy_shared(tenant_client, model)

    assert deployment.status == Deployment.Status.LIVE and deployment.mode == "shared-base"
    mme_copy.refresh_from_db()
    assert mme_copy.desired_state == Placement.DesiredState.UNLOADED
    assert mme_copy.actual_state == Placement.ActualState.UNLOADED
    served = Placement.objects.reachable().filter(version__model=model).select_related("endpoint")
    assert [p.endpoint.mode for p in served] == [Endpoint.Mode.SHARED_BASE]
    token = issue_token(tenant=tenant, name="product", actor="test").secret
    ROUTES.invalidate(None)
    status, _, body = call(
        invoke_url(proxy_url, tenant.slug, "intents"), token=token, body={"inputs": TICKETS}
    )
    assert status == 200, body
    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    assert [o["label"] for o in json.loads(body)["outputs"]] == [e["label"] for e in expected]


def test_rollback_drain_and_retirement_work_for_heads(
    tenant_client, tenant, intent_artifact, tmp_path
):
    from deployments.services import draining

    model = TenantModelFactory(tenant=tenant, name="intents", kind=KIND)
    packaged_version(model, intent_artifact, 1, promote=True)
    deploy_shared(tenant_client, model)
    artifact, labels = derived_artifact(intent_artifact, tmp_path / "v2", seed=11)
    packaged_version(model, artifact, 2, promote=True)  # the promotion rolls it out
    deployment = Deployment.objects.get(model=model)
    assert deployment.live_version.number == 2 and deployment.previous_version.number == 1
    v2 = Placement.objects.select_related("version__model__tenant", "instance", "endpoint").get(
        version=deployment.live_version
    )
    serving = backend_for(v2.endpoint)
    assert serving.invoke(placement=v2, inputs=TICKETS).outputs[0]["label"] in labels

    response = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/models/intents/deployments/rollback", format="json"
    )
    assert response.status_code in (200, 202), response.content
    deployment.refresh_from_db()
    assert deployment.live_version.number == 1

    # Draining the only instance starts another and moves the heads there, loaded, first.
    first = v2.instance
    drained = draining.drain_instance(instance=first, actor="test")
    assert drained.status == Instance.Status.STOPPED
    moved = (
        Placement.objects.reachable()
        .filter(version__model=model)
        .select_related("version__model__tenant", "instance", "endpoint")
    )
    assert moved and all(p.instance_id != first.pk for p in moved)
    live_copy = next(p for p in moved if p.version_id == deployment.live_version_id)
    assert live_copy.actual_state == Placement.ActualState.LOADED
    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    result = serving.invoke(placement=live_copy, inputs=TICKETS)
    assert [o["label"] for o in result.outputs] == [e["label"] for e in expected]

    response = tenant_client.delete(f"/api/v1/tenants/{tenant.slug}/models/intents/deployments/")
    assert response.status_code in (200, 202, 204), response.content
    assert not Placement.objects.reachable().filter(version__model=model).exists()
    assert resident_heads(live_copy.instance) == {}
