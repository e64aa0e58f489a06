"""The shared-base mode on the SageMaker stand-in, through the platform's API: the kind's shared
encoder is the one TargetModel of a multi-model endpoint, two tenants' heads are loaded into it
through InvokeEndpoint and each tenant is answered with its own head (the REST invoke and the
proxy's SageMaker runtime route); retiring one tenant unloads only its head, retiring the last
deletes the endpoint and everything under its prefix."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest

from deployments.models import Deployment, Endpoint, Placement
from models_registry.triton_runtime.intent_classifier import Predictor as IntentPredictor
from tests.deployments.backends.sagemaker.test_standin_end_to_end import (  # noqa: F401
    BUCKET,
    MODEL_URL,
    TICKETS,
    client_for,
    intent_model,
    layer_cache,
    on_standin,
)
from tests.factories import TenantFactory, TenantModelFactory
from tests.serving_fixtures import packaged_version

pytestmark = pytest.mark.django_db(transaction=True)


def derived_artifact(source, target, *, seed: int) -> list[str]:
    """A copy of a real artifact with another valid head: random weights, its own labels."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copyfile(path, target / path.name)
    rng = np.random.default_rng(seed)
    labels = [f"t{seed}-{name}" for name in ("billing", "login", "delivery")]
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W=rng.normal(0, 1.5, (384, len(labels))).astype(np.float32),
        b=np.zeros(len(labels), dtype=np.float32),
    )
    (target / "head.npz").unlink()
    (target / "head.npz").write_bytes(buffer.getvalue())
    (target / "labels.json").unlink()
    (target / "labels.json").write_text(json.dumps(labels))
    return labels


def test_heads_of_two_tenants_share_one_encoder_target_model_on_sagemaker(
    request, intent_artifact, tmp_path
):
    # The stand-in fixtures are the end-to-end module's (imported above).
    standin = request.getfixturevalue("on_standin")
    acme_model = request.getfixturevalue("intent_model")
    acme = client_for(acme_model.tenant)
    response = acme.post(f"{MODEL_URL}/deployments/", {"mode": "shared-base"}, format="json")
    assert response.status_code == 202, response.content
    deployment = Deployment.objects.select_related("endpoint").get(model=acme_model)
    assert deployment.status == Deployment.Status.LIVE, deployment.status_reason
    endpoint = deployment.endpoint
    assert endpoint.backend == "sagemaker" and endpoint.mode == Endpoint.Mode.SHARED_BASE

    other = TenantModelFactory(tenant=TenantFactory(slug="globex"), name="intents")
    labels = derived_artifact(intent_artifact, tmp_path / "globex", seed=5)
    packaged_version(other, tmp_path / "globex", 1, promote=True)
    globex = client_for(other.tenant)
    response = globex.post(
        "/api/v1/tenants/globex/models/intents/deployments/", {"mode": "shared-base"}, format="json"
    )
    assert response.status_code == 202, response.content
    assert Deployment.objects.get(model=other).endpoint_id == endpoint.pk

    # One TargetModel under the endpoint's prefix: the shared encoder; both heads are in it.
    prefix = f"{BUCKET}/platform/endpoints/{endpoint.name}/"
    objects = [k for k in standin.resources()["s3_objects"] if k.startswith(prefix)]
    assert len(objects) == 1 and objects[0].endswith(".tar.gz"), objects
    expected = [e["label"] for e in IntentPredictor(str(intent_artifact)).predict(TICKETS)]
    answer = acme.post(f"{MODEL_URL}/invoke", {"inputs": TICKETS}, format="json").json()
    assert [o["label"] for o in answer["outputs"]] == expected
    answer = globex.post(
        "/api/v1/tenants/globex/models/intents/invoke", {"inputs": TICKETS}, format="json"
    ).json()
    assert all(o["label"] in labels for o in answer["outputs"])
    assert set(answer["outputs"][0]["scores"]) == set(labels)

    # Through the proxy too: its REST invoke forwards the body to the shared encoder with the
    # head on every row, answered in the single model's format.
    from tenants.services import issue_token
    from tests.deployments.proxy.test_proxy import call, invoke_url

    proxy_url = request.getfixturevalue("proxy_url")
    token = issue_token(tenant=other.tenant, name="proxy", actor="test").secret
    status, _, body = call(
        invoke_url(proxy_url, "globex", "intents"), token=token, body={"inputs": TICKETS}
    )
    assert status == 200, body
    assert all(o["label"] in labels for o in json.loads(body)["outputs"])

    # A reconciler pass leaves the shared encoder and its endpoint as they are.
    from deployments.services.reconciler import reconcile_fleet

    report = reconcile_fleet()
    assert not report.errors, report.errors
    assert [k for k in standin.resources()["s3_objects"] if k.startswith(prefix)] == objects

    # Retiring one tenant unloads its head only; the endpoint keeps serving the other.
    assert globex.delete("/api/v1/tenants/globex/models/intents/deployments/").status_code in (
        200,
        202,
    )
    assert Endpoint.objects.get(pk=endpoint.pk).status == Endpoint.Status.IN_SERVICE
    answer = acme.post(f"{MODEL_URL}/invoke", {"inputs": TICKETS}, format="json").json()
    assert [o["label"] for o in answer["outputs"]] == expected

    # The last tenant retired: the endpoint and its prefix go.
    assert acme.delete(f"{MODEL_URL}/deployments/").status_code in (200, 202)
    resources = standin.resources()
    assert endpoint.name not in resources["endpoints"]
    assert not [k for k in resources["s3_objects"] if k.startswith(prefix)]
    assert not Placement.objects.reachable().filter(endpoint=endpoint).exists()
