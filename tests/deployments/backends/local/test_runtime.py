"""Serving tenant models on a real Triton in multi-model mode, through the platform's services.

Every test packages real model versions (the int8 MiniLM encoder with a trained head, or the
embedding encoder), loads them into a real tritonserver and checks what a user would notice: the
answers equal running the artifact directly, cold starts and cache hits, least-recently-used
eviction within the memory budget, pinned models staying, one load for many concurrent requests,
and clear failures (never a hung instance) for corrupt packages and broken model code.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pytest

from deployments.backends.local import runtime
from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.process import kill_triton, start_triton
from deployments.exceptions import InstanceUnavailable, ModelBusy, ModelLoadFailed
from deployments.models import Endpoint, Event, Instance, InstanceType, Placement
from deployments.placement.eviction import CapacityExceeded
from models_registry.exceptions import PackageChecksumMismatch
from models_registry.models import ModelVersion
from models_registry.services.packaging import package_version
from models_registry.triton_runtime.embedding import Predictor as EmbeddingPredictor
from models_registry.triton_runtime.intent_classifier import Predictor as IntentPredictor
from tests.factories import EndpointFactory, InstanceFactory, ModelVersionFactory, PlacementFactory

TICKETS = [
    "Where is my refund? I sent the parcel back a month ago.",
    "I can't sign in, the password reset link is broken.",
    "My package was delivered to the wrong address.",
]


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """One real Triton server for the module; each test gets its own instance row on it."""
    process = start_triton(workdir=tmp_path_factory.mktemp("triton-serving"))
    yield process
    kill_triton(process)  # its models need no orderly unload


@pytest.fixture
def triton_client(triton):
    return TritonMultiModelClient.for_process(triton)


@pytest.fixture
def instance(db, triton, triton_client):
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, model_kind="intent-classifier")
    row = InstanceFactory(
        endpoint=endpoint,
        host=triton.host,
        port=triton.port,
        metrics_port=triton.metrics_port,
        pid=triton.pid,
        external_id=str(triton.workdir),
        memory_budget_mb=4000,
    )
    yield row
    for model in triton_client.list_models():  # leave the shared server empty for the next test
        triton_client.unload_model(model.name)


def packaged(artifact_dir: Path, *, kind: str = "intent-classifier") -> ModelVersion:
    version = ModelVersionFactory(
        model__kind=kind,
        status=ModelVersion.Status.REGISTERED,
        artifact_uri=str(artifact_dir),
        host_memory_mb=None,
    )
    return package_version(version=version, actor="test")


def loaded_names(client) -> set[str]:
    return {model.name for model in client.list_models()}


def test_packaging_stores_the_tarball_with_its_digest(db, intent_artifact):
    version = packaged(intent_artifact)

    assert version.status == ModelVersion.Status.READY
    package = Path(version.package_uri)
    assert package.name == "model.tar.gz" and package.stat().st_size == version.size_bytes
    import hashlib

    assert hashlib.sha256(package.read_bytes()).hexdigest() == version.sha256
    assert Event.objects.filter(kind="version.packaged", version=version).exists()


def test_intent_classifier_answers_like_its_artifact_run_directly(
    instance, intent_artifact, triton_client
):
    version = packaged(intent_artifact)
    placement = runtime.place_on_instance(version=version, instance=instance, actor="test")

    first = runtime.invoke_placement(placement=placement, inputs=TICKETS)
    second = runtime.invoke_placement(placement=placement, inputs=TICKETS[:1])

    expected = IntentPredictor(str(intent_artifact)).predict(TICKETS)
    assert [o["label"] for o in first.outputs] == [e["label"] for e in expected]
    assert [o["label"] for o in first.outputs] == ["refund", "account_access", "shipping"]
    for got, want in zip(first.outputs, expected, strict=True):
        for label, score in want["scores"].items():
            assert got["scores"][label] == pytest.approx(score, abs=0.02)
    assert first.cold_start is True and second.cold_start is False
    assert first.model_version == version.number
    assert version.triton_model_name in loaded_names(triton_client)
    placement.refresh_from_db()
    version.refresh_from_db()
    assert placement.actual_state == Placement.ActualState.LOADED
    assert 30 < placement.host_memory_mb < 400  # measured from the model's own stub process
    assert version.host_memory_mb == placement.host_memory_mb
    assert placement.load_time_ms > 0
    assert placement.gpu_memory_mb in (None, 0.0)  # a CPU model holds no GPU memory
    assert Event.objects.filter(kind="placement.loaded", version=version).count() == 1


def test_embedding_answers_like_its_artifact_and_unloads(
    instance, embedding_artifact, triton_client
):
    version = packaged(embedding_artifact, kind="embedding")
    placement = runtime.place_on_instance(version=version, instance=instance, actor="test")

    result = runtime.invoke_placement(placement=placement, inputs=TICKETS[:2])

    expected = EmbeddingPredictor(str(embedding_artifact)).predict(TICKETS[:2])
    got = np.asarray(result.outputs, dtype=np.float32)
    assert got.shape == (2, 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    cosine = (got * np.asarray(expected)).sum(axis=1)
    assert cosine.min() > 0.98  # int8 answers shift slightly with what Triton batches together

    runtime.unload_placement(placement=placement, actor="test", reason="test done")

    assert version.triton_model_name not in loaded_names(triton_client)
    placement.refresh_from_db()
    assert placement.actual_state == Placement.ActualState.UNLOADED


@pytest.fixture
def gpu_instance(instance):
    """The test's instance, its endpoint of a GPU instance type (one T4: 13,107 MB at 80 %)."""
    Endpoint.objects.filter(pk=instance.endpoint_id).update(
        instance_type=InstanceType.objects.get(name="ml.g4dn.xlarge")
    )
    instance.refresh_from_db()
    return instance


def test_a_gpu_instance_type_on_a_machine_without_gpus_serves_from_the_cpu_package(
    gpu_instance, intent_artifact, triton
):
    version = packaged(intent_artifact)
    placement = runtime.place_on_instance(version=version, instance=gpu_instance, actor="test")

    result = runtime.invoke_placement(placement=placement, inputs=TICKETS[:1])

    # Triton refuses KIND_GPU where it sees no GPU, so the CPU package is the one loaded.
    assert result.cold_start is True and result.outputs[0]["label"] == "refund"
    loaded = Event.objects.get(kind="placement.loaded", version=version)
    assert loaded.data["device"] == "cpu"
    assert "CPU package: ml.g4dn.xlarge has GPUs but this Triton sees none" in loaded.message
    placement.refresh_from_db()
    version.refresh_from_db()
    # No GPU load, no GPU figure: none is guessed for the placement or the version.
    assert placement.gpu_memory_mb is None and version.gpu_memory_mb is None
    log = (Path(triton.workdir) / "triton.log").read_text()
    assert f"{version.triton_model_name}: encoder encoder.onnx on CPUExecutionProvider" in log


def test_measured_gpu_memory_trims_a_gpu_instance_to_its_gpu_budget(gpu_instance, settings):
    # Recency alone orders these victims (this process's request counts belong to other tests).
    settings.TENANTML_EVICTION_POLICY = "lru"
    # Three models loaded on the GPU, each measured at 5,000 MB: 15,000 MB of a 13,107 MB budget.
    now = time.time()
    placements = []
    for age_s in (30, 20, 10):
        version = ModelVersionFactory(host_memory_mb=120, gpu_memory_mb=5000)
        placements.append(
            Placement.objects.create(
                version=version,
                endpoint=gpu_instance.endpoint,
                instance=gpu_instance,
                actual_state=Placement.ActualState.LOADED,
                host_memory_mb=120,
                gpu_memory_mb=5000,
                last_invoked_at=datetime.fromtimestamp(now - age_s, tz=UTC),
            )
        )

    evicted = runtime.trim_to_budget(instance=gpu_instance, actor="test")

    # Host memory (360 of 4,000 MB) had room; the GPU did not: the least recently used goes.
    assert evicted == [placements[0].version.triton_model_name]
    states = dict(Placement.objects.values_list("pk", "actual_state"))
    assert [states[p.pk] for p in placements] == ["evicted", "loaded", "loaded"]
    # On a type without GPUs the same figures take no GPU budget: nothing more is evicted.
    Endpoint.objects.filter(pk=gpu_instance.endpoint_id).update(
        instance_type=InstanceType.objects.get(name="local")
    )
    Placement.objects.filter(pk=placements[0].pk).update(actual_state="loaded")
    assert runtime.trim_to_budget(instance=gpu_instance, actor="test") == []


def three_versions(intent_artifact) -> list[ModelVersion]:
    return [packaged(intent_artifact) for _ in range(3)]


def room_for_one(instance, intent_artifact):
    """Two versions placed on the instance, the first loaded, and a budget that holds one."""
    first, second = packaged(intent_artifact), packaged(intent_artifact)
    victim = runtime.place_on_instance(version=first, instance=instance, actor="test")
    incoming = runtime.place_on_instance(version=second, instance=instance, actor="test")
    runtime.invoke_placement(placement=victim, inputs=TICKETS[:1])
    measured = Placement.objects.get(pk=victim.pk).host_memory_mb
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=int(measured * 1.5))
    return first, second, victim, incoming


def test_least_recently_used_model_is_evicted_to_stay_within_budget(
    instance, intent_artifact, triton_client
):
    first, second, third = three_versions(intent_artifact)
    placements = [
        runtime.place_on_instance(version=v, instance=instance, actor="test")
        for v in (first, second, third)
    ]
    runtime.invoke_placement(placement=placements[0], inputs=TICKETS[:1])
    measured = Placement.objects.get(pk=placements[0].pk).host_memory_mb
    # Room for two models of this size, not three.
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=int(measured * 2.5))
    runtime.invoke_placement(placement=placements[1], inputs=TICKETS[:1])
    runtime.invoke_placement(placement=placements[0], inputs=TICKETS[:1])  # first is now recent

    result = runtime.invoke_placement(placement=placements[2], inputs=TICKETS[:1])

    assert result.cold_start is True
    names = loaded_names(triton_client)
    assert second.triton_model_name not in names
    assert {first.triton_model_name, third.triton_model_name} <= names
    evicted = Event.objects.get(kind="placement.evicted")
    assert evicted.version == second
    states = dict(Placement.objects.values_list("version_id", "actual_state"))
    assert states[second.pk] == Placement.ActualState.EVICTED
    resident = Placement.objects.filter(instance=instance, actual_state="loaded")
    assert sum(p.host_memory_mb for p in resident) <= measured * 2.5


def test_pinned_models_are_never_evicted_and_a_model_that_cannot_fit_is_refused(
    instance, intent_artifact, triton_client
):
    first, second, third = three_versions(intent_artifact)
    pinned = [
        runtime.place_on_instance(version=v, instance=instance, actor="test", pinned=True)
        for v in (first, second)
    ]
    for placement in pinned:
        runtime.invoke_placement(placement=placement, inputs=TICKETS[:1])
    measured = max(Placement.objects.filter(instance=instance).values_list("host_memory_mb"))[0]
    Instance.objects.filter(pk=instance.pk).update(memory_budget_mb=int(measured * 2.5))
    extra = runtime.place_on_instance(version=third, instance=instance, actor="test")

    with pytest.raises(CapacityExceeded, match="pinned models and models being loaded"):
        runtime.invoke_placement(placement=extra, inputs=TICKETS[:1])

    assert {first.triton_model_name, second.triton_model_name} <= loaded_names(triton_client)
    assert third.triton_model_name not in loaded_names(triton_client)
    assert not Event.objects.filter(kind="placement.evicted").exists()


@pytest.mark.django_db(transaction=True)  # the request in flight runs on its own connection
def test_an_eviction_waits_for_the_victims_request_in_flight_and_marks_it_evicting(
    triton, triton_client, intent_artifact
):
    instance = InstanceFactory(
        endpoint=EndpointFactory(backend=Endpoint.Backend.LOCAL),
        port=triton.port,
        metrics_port=triton.metrics_port,
        pid=triton.pid,
        external_id=str(triton.workdir),
        memory_budget_mb=4000,
    )
    first, second, victim, incoming = room_for_one(instance, intent_artifact)
    gates = runtime.gates_for(instance.host, instance.port)
    seen = []

    def request_in_flight():
        # A request on the victim (as a proxy process would hold it) that finishes only once
        # the eviction is under way: the eviction must wait for it, not unload under it.
        from django.db import connection

        gates.enter(first.triton_model_name)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = Placement.objects.get(pk=victim.pk).actual_state
                if state != Placement.ActualState.LOADED:
                    seen.append(state)
                    break
                time.sleep(0.02)
            time.sleep(0.5)
            seen.append(first.triton_model_name in loaded_names(triton_client))
        finally:
            gates.leave(first.triton_model_name)
            connection.close()

    holder = threading.Thread(target=request_in_flight)
    holder.start()
    try:
        result = runtime.invoke_placement(placement=incoming, inputs=TICKETS[:1])
        holder.join(timeout=30)

        assert result.cold_start is True
        # While the request was in flight the victim was "evicting" and still loaded.
        assert seen == [Placement.ActualState.EVICTING, True]
        assert Placement.objects.get(pk=victim.pk).actual_state == Placement.ActualState.EVICTED
        assert loaded_names(triton_client) == {second.triton_model_name}
    finally:
        holder.join(timeout=30)
        for model in triton_client.list_models():
            triton_client.unload_model(model.name)


def test_a_victim_still_answering_after_the_drain_stays_loaded_and_the_load_can_retry(
    instance, intent_artifact, triton_client, monkeypatch
):
    first, second, victim, incoming = room_for_one(instance, intent_artifact)
    monkeypatch.setattr(runtime.client_for(instance), "drain_timeout_s", 0.3)
    gates = runtime.gates_for(instance.host, instance.port)

    gates.enter(first.triton_model_name)  # a request in flight that outlasts the drain
    try:
        with pytest.raises(ModelBusy, match="still had requests in flight"):
            runtime.invoke_placement(placement=incoming, inputs=TICKETS[:1])
        states = dict(Placement.objects.values_list("pk", "actual_state"))
        assert states[victim.pk] == Placement.ActualState.LOADED
        assert states[incoming.pk] == Placement.ActualState.PENDING  # as it was, not failed
        assert loaded_names(triton_client) == {first.triton_model_name}
    finally:
        gates.leave(first.triton_model_name)

    assert runtime.invoke_placement(placement=incoming, inputs=TICKETS[:1]).cold_start is True
    assert loaded_names(triton_client) == {second.triton_model_name}


@pytest.mark.django_db(transaction=True)  # the requests run on threads with their own connections
def test_concurrent_requests_for_a_cold_model_cause_one_load(
    triton, triton_client, intent_artifact
):
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL)
    instance = InstanceFactory(
        endpoint=endpoint,
        port=triton.port,
        metrics_port=triton.metrics_port,
        pid=triton.pid,
        external_id=str(triton.workdir),
        memory_budget_mb=4000,
    )
    version = packaged(intent_artifact)
    placement = runtime.place_on_instance(version=version, instance=instance, actor="test")
    results, errors = [], []

    def call():
        from django.db import connection

        try:
            results.append(runtime.invoke_placement(placement=placement, inputs=TICKETS[:1]))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert errors == []
        assert len(results) == 8
        assert {r.outputs[0]["label"] for r in results} == {"refund"}
        assert Event.objects.filter(kind="placement.loaded", version=version).count() == 1
    finally:
        for model in triton_client.list_models():
            triton_client.unload_model(model.name)


def test_a_corrupted_package_fails_clearly_and_the_instance_keeps_serving(
    instance, intent_artifact, triton_client
):
    corrupt, healthy = three_versions(intent_artifact)[:2]
    package = Path(corrupt.package_uri)
    data = bytearray(package.read_bytes())
    data[len(data) // 2] ^= 0xFF
    package.write_bytes(bytes(data))
    bad = runtime.place_on_instance(version=corrupt, instance=instance, actor="test")
    good = runtime.place_on_instance(version=healthy, instance=instance, actor="test")

    with pytest.raises(PackageChecksumMismatch, match=corrupt.sha256):
        runtime.invoke_placement(placement=bad, inputs=TICKETS[:1])

    bad.refresh_from_db()
    corrupt.refresh_from_db()
    assert bad.actual_state == Placement.ActualState.FAILED
    assert corrupt.sha256 in bad.failure_reason
    assert "Load on" in corrupt.status_reason
    assert Event.objects.filter(kind="placement.load_failed", version=corrupt).exists()
    assert runtime.invoke_placement(placement=good, inputs=TICKETS[:1]).outputs


def with_model_py(version: ModelVersion, source: str, scratch: Path) -> ModelVersion:
    """Rewrite a packaged version's ``model.py`` (as a bad release would) with a valid digest."""
    import hashlib
    import tarfile

    unpacked = scratch / "unpacked"
    with tarfile.open(version.package_uri) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / version.triton_model_name / "1" / "model.py").write_text(source)
    package = scratch / "model.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        tar.add(unpacked / version.triton_model_name, arcname=version.triton_model_name)
    version.package_uri = str(package)
    version.sha256 = hashlib.sha256(package.read_bytes()).hexdigest()
    version.save()
    return version


def test_a_broken_model_py_fails_the_load_with_its_error_and_the_instance_keeps_serving(
    instance, intent_artifact, triton_client, tmp_path
):
    broken = with_model_py(
        packaged(intent_artifact),
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('head weights missing from this release')\n",
        tmp_path,
    )
    healthy = packaged(intent_artifact)
    bad = runtime.place_on_instance(version=broken, instance=instance, actor="test")
    good = runtime.place_on_instance(version=healthy, instance=instance, actor="test")

    with pytest.raises(ModelLoadFailed, match="head weights missing from this release"):
        runtime.invoke_placement(placement=bad, inputs=TICKETS[:1])

    bad.refresh_from_db()
    assert bad.actual_state == Placement.ActualState.FAILED
    assert "head weights missing" in bad.failure_reason
    event = Event.objects.get(kind="placement.load_failed", version=broken)
    assert event.severity == "error"
    assert runtime.check_instance_health(instance=instance)
    assert runtime.invoke_placement(placement=good, inputs=TICKETS[:1]).outputs


def test_packaging_an_invalid_artifact_fails_the_version_with_the_reason(
    db, intent_artifact, tmp_path
):
    broken_artifact = tmp_path / "broken"
    shutil.copytree(intent_artifact, broken_artifact)
    (broken_artifact / "labels.json").write_text("not json")
    version = ModelVersionFactory(
        status=ModelVersion.Status.REGISTERED, artifact_uri=str(broken_artifact)
    )

    with pytest.raises(ValueError):
        package_version(version=version, actor="test")

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.FAILED
    assert version.status_reason.startswith("Packaging failed:")
    assert Event.objects.filter(kind="version.packaging_failed", version=version).exists()


def test_a_local_instance_starts_serves_and_stops_without_leftovers(db, intent_artifact):
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, status=Endpoint.Status.CREATING)
    instance = runtime.start_local_instance(endpoint=endpoint, actor="test")
    pid = instance.pid
    try:
        assert instance.status == Instance.Status.HEALTHY and instance.pid
        # Its share of this machine's memory (tests/deployments/backends/local/
        # test_machine_budgets.py has the arithmetic), never more than the machine has.
        assert 0 < instance.memory_budget_mb < psutil.virtual_memory().total / 2**20
        endpoint.refresh_from_db()
        assert endpoint.status == Endpoint.Status.IN_SERVICE
        placement = runtime.place_on_instance(
            version=packaged(intent_artifact), instance=instance, actor="test"
        )
        assert runtime.invoke_placement(placement=placement, inputs=TICKETS[:1]).cold_start
    finally:
        runtime.stop_local_instance(instance=instance, actor="test", reason="test done")

    instance.refresh_from_db()
    assert instance.status == Instance.Status.STOPPED
    placement.refresh_from_db()
    assert placement.actual_state == Placement.ActualState.UNLOADED
    assert not runtime.check_instance_health(instance=instance)
    assert instance.pid is None
    assert not psutil.pid_exists(pid)


def test_an_instance_that_does_not_finish_an_unload_is_restarted_at_once(
    db, intent_artifact, monkeypatch, settings, tmp_path
):
    settings.VAR_DIR = tmp_path / "var"
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, status=Endpoint.Status.CREATING)
    instance = runtime.start_local_instance(endpoint=endpoint, actor="test")
    old_pid = instance.pid
    try:
        _, _, _, incoming = room_for_one(instance, intent_artifact)
        # A real unload takes about 2 s: with a limit far below it, Triton "does not finish".
        monkeypatch.setattr(runtime, "UNLOAD_TIMEOUT_S", 0.05)

        with pytest.raises(InstanceUnavailable, match="was restarted"):
            runtime.invoke_placement(placement=incoming, inputs=TICKETS[:1])

        instance.refresh_from_db()
        assert instance.status == Instance.Status.HEALTHY and instance.pid != old_pid
        assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"
        assert Event.objects.filter(kind="instance.restarted", instance=instance).exists()
        states = set(Placement.objects.values_list("actual_state", flat=True))
        assert states == {Placement.ActualState.UNLOADED}  # a fresh process holds nothing
        monkeypatch.undo()
        assert runtime.invoke_placement(placement=incoming, inputs=TICKETS[:1]).cold_start
    finally:
        instance.refresh_from_db()
        runtime.stop_local_instance(instance=instance, actor="test", reason="test done")


def test_start_up_marks_instances_whose_triton_is_gone_and_starts_fresh_ones(db):
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, min_instances=1)
    stale = InstanceFactory(endpoint=endpoint, port=1, pid=2**22 + 1, external_id="")
    placement = runtime.Placement.objects.create(
        version=ModelVersionFactory(), endpoint=endpoint, instance=stale, actual_state="loaded"
    )

    started = runtime.start_local_endpoints(actor="test")
    try:
        stale.refresh_from_db()
        placement.refresh_from_db()
        assert stale.status == Instance.Status.STOPPED
        assert "gone at start-up" in stale.status_reason
        assert placement.actual_state == Placement.ActualState.UNLOADED
        assert [instance.endpoint for instance in started] == [endpoint]
        assert runtime.check_instance_health(instance=started[0])
        assert runtime.start_local_endpoints(actor="test") == []  # already at its minimum
    finally:
        for instance in started:
            runtime.stop_local_instance(instance=instance, actor="test")


def test_default_local_endpoints_are_created_once_one_per_kind(db):
    created = runtime.ensure_default_local_endpoints(actor="test")

    assert sorted(e.model_kind for e in created) == [
        "embedding",
        "intent-classifier",
        "reply-autocomplete",
    ]
    assert all(e.backend == "local" and e.instance_type.is_local for e in created)
    assert runtime.ensure_default_local_endpoints(actor="test") == []


def test_a_new_server_on_a_port_an_old_one_held_gets_its_own_client(db, tmp_path):
    """A port a killed server held may be taken by a new one with another model-control port: the
    client the old one left cached must not be handed to the new one."""
    from deployments.backends.local.process import HTTP_PORT_FILE

    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    (new_dir / HTTP_PORT_FILE).write_text("45001\n")
    endpoint = EndpointFactory(backend=Endpoint.Backend.LOCAL, model_kind="intent-classifier")
    old = InstanceFactory(endpoint=endpoint, port=45000, pid=101, external_id=str(old_dir))
    old_client = runtime.client_for(old)
    old.status = Instance.Status.STOPPED
    old.port = None
    old.save()
    new = InstanceFactory(endpoint=endpoint, port=45000, pid=202, external_id=str(new_dir))

    new_client = runtime.client_for(new)

    assert old_client.http_port is None
    assert new_client is not old_client
    assert new_client.http_port == 45001
    assert runtime.client_for(new) is new_client


def test_a_load_whose_worker_died_is_not_waited_for_even_while_its_process_is_a_zombie(db):
    """A killed worker's pool process stays a zombie where nothing reaps orphans: the model it
    was loading must be taken over at once, not after the foreign-load wait."""
    import socket
    import subprocess
    import sys

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(exited.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        placement = PlacementFactory(
            actual_state=Placement.ActualState.LOADING,
            loading_by=f"{socket.gethostname()}:{exited.pid}",
        )
        alive = PlacementFactory(
            actual_state=Placement.ActualState.LOADING,
            loading_by=f"{socket.gethostname()}:{os.getppid()}",
        )

        assert runtime._loader_gone(placement) is True
        assert runtime._loader_gone(alive) is False
    finally:
        exited.wait()
