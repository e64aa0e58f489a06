"""An intent classifier with out-of-scope handling served by a real Triton: the answered label is
the out-of-scope label where the head says so, and the scores stay the trained labels'."""

from __future__ import annotations

import pytest

from deployments.backends.local import runtime
from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.process import kill_triton, start_triton
from deployments.models import Endpoint
from models_registry.demo.tickets import OUT_OF_SCOPE_LABEL, generate_tickets
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion
from models_registry.services.packaging import package_version
from models_registry.triton_runtime.intent_classifier import Predictor
from tests.factories import EndpointFactory, InstanceFactory, ModelVersionFactory

TEXTS = [
    "I left my phone in the car after my ride last night.",
    "Who won the Lakers game last night?",
    "Congratulations! You have won a free cruise, claim it at win-now.example.com",
    "My driver Ahmed was extremely rude to me during the whole trip.",
]


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    process = start_triton(workdir=tmp_path_factory.mktemp("triton-out-of-scope"))
    yield process
    kill_triton(process)  # its models need no orderly unload


@pytest.fixture(scope="module")
def out_of_scope_artifact(tmp_path_factory, base_encoder_files):
    rows = generate_tickets("zoomride", rows=320, seed=21, out_of_scope_rows=80)
    train, validation = rows[64:], rows[:64]
    out_dir = tmp_path_factory.mktemp("intent-out-of-scope-artifact")
    get_kind("intent-classifier").build_artifact(
        texts=[row["text"] for row in train],
        labels=[row["label"] for row in train],
        validation_texts=[row["text"] for row in validation],
        validation_labels=[row["label"] for row in validation],
        out_dir=out_dir,
        base=base_encoder_files,
    )
    return out_dir


def test_triton_answers_out_of_scope_where_the_head_does(db, triton, out_of_scope_artifact):
    client = TritonMultiModelClient.for_process(triton)
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, model_kind="intent-classifier")
    instance = InstanceFactory(
        endpoint=endpoint,
        host=triton.host,
        port=triton.port,
        metrics_port=triton.metrics_port,
        pid=triton.pid,
        external_id=str(triton.workdir),
        memory_budget_mb=4000,
    )
    version = package_version(
        version=ModelVersionFactory(
            model__kind="intent-classifier",
            status=ModelVersion.Status.REGISTERED,
            artifact_uri=str(out_of_scope_artifact),
            host_memory_mb=None,
        ),
        actor="test",
    )
    placement = runtime.place_on_instance(version=version, instance=instance, actor="test")
    try:
        served = runtime.invoke_placement(placement=placement, inputs=TEXTS).outputs
    finally:
        for model in client.list_models():
            client.unload_model(model.name)

    predictor = Predictor(str(out_of_scope_artifact))
    expected = predictor.predict(TEXTS)
    labels = [answer["label"] for answer in served]
    assert labels == [answer["label"] for answer in expected]
    assert labels[0] == "lost_item" and labels[3] == "driver_complaint"
    assert labels[1] == labels[2] == OUT_OF_SCOPE_LABEL
    for got, want in zip(served, expected, strict=True):
        assert set(got["scores"]) == set(predictor.labels)
        for label, score in want["scores"].items():
            assert got["scores"][label] == pytest.approx(score, abs=0.02)
        assert sum(got["scores"].values()) == pytest.approx(1.0, abs=1e-4)
