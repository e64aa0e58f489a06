"""Request capture: the sampled share of answered requests lands as JSON Lines under the model's
own tenant and day, a full buffer drops and counts instead of waiting, a slow store never holds
the offers back, old days are deleted after the deployment's retention, a captured day becomes a
dataset through the dataset checks, and the settings' API names a bad field."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime, timedelta

import pytest

from deployments.models import BackgroundPass, Deployment
from deployments.proxy import capture
from deployments.proxy.metrics import exposition
from deployments.proxy.routing import Route
from deployments.services import capture as capture_service
from models_registry import artifacts
from models_registry.models import Dataset, ModelVersion
from tests.factories import ModelVersionFactory, TenantFactory, TenantModelFactory

pytestmark = pytest.mark.django_db(transaction=True)

LABELS = ("refund", "login", "delivery")


def deployed(
    *,
    slug: str = "acme",
    name: str = "intents",
    kind: str = "intent-classifier",
    percent: float = 100.0,
    retention_days: int = 30,
):
    model = TenantModelFactory(tenant=TenantFactory(slug=slug), name=name, kind=kind)
    version = ModelVersionFactory(model=model, number=1, status=ModelVersion.Status.READY)
    deployment = Deployment.objects.create(
        model=model,
        live_version=version,
        status=Deployment.Status.LIVE,
        capture_enabled=True,
        capture_sample_percent=percent,
        capture_retention_days=retention_days,
    )
    route = Route(
        tenant_id=model.tenant_id,
        tenant_slug=slug,
        tenant_active=True,
        model_id=model.pk,
        model_name=name,
        kind=kind,
        version_id=version.pk,
        version_number=1,
    )
    return deployment, route


def offer(route: Route, text: str, label: str = "refund") -> None:
    capture.offer(
        route=route,
        protocol="native",
        inputs=[text],
        outputs=[{"label": label, "scores": {label: 0.9}}],
        latency_ms=4.2,
        cold_start=False,
    )


def known_settings() -> None:
    """Read the settings of every model offered so far, as the writer's first pass does."""
    capture.flush_capture()


def captured(prefix: str) -> dict[str, list[dict]]:
    return {
        key: [
            json.loads(line) for line in artifacts.read_bytes(artifacts.uri_for(key)).splitlines()
        ]
        for key in artifacts.list_keys(prefix)
    }


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def test_about_the_sampled_share_lands_under_the_models_day(monkeypatch):
    deployment, route = deployed(percent=30.0)
    offer(route, "first")
    known_settings()
    monkeypatch.setattr(capture.BUFFER, "capacity", 10_000)
    requests = 2000

    for index in range(requests):
        offer(route, f"ticket {index}")
    written = capture.flush_capture()

    files = captured("capture/acme/intents")
    everything = [record for rows in files.values() for record in rows]
    records = [r for r in everything if r["inputs"] != ["first"]]
    # Binomial(2000, 0.3): mean 600, standard deviation 20.5; five deviations either side.
    spread = 5 * math.sqrt(requests * 0.3 * 0.7)
    assert 600 - spread <= len(records) <= 600 + spread
    assert written == len(records)
    assert all(key.startswith(f"capture/acme/intents/{today()}/") for key in files)
    assert all(key.endswith(".jsonl") for key in files)
    record = records[0]
    assert record["model_version"] == 1 and record["protocol"] == "native"
    assert record["cold_start"] is False and record["latency_ms"] == 4.2
    assert len(record["request_id"]) == 32 and record["timestamp"].startswith(today())
    assert record["outputs"][0]["label"] == "refund"
    assert len({r["request_id"] for r in records}) == len(records)
    deployment.refresh_from_db()
    assert deployment.capture_records_written == len(everything)


def test_two_tenants_captures_never_mix():
    _, acme = deployed(slug="acme")
    _, globex = deployed(slug="globex")
    for index in range(50):
        offer(acme, f"acme {index}")
        offer(globex, f"globex {index}")
    capture.flush_capture()

    for slug in ("acme", "globex"):
        files = captured(f"capture/{slug}")
        records = [record for rows in files.values() for record in rows]
        assert len(records) == 50
        assert all(key.startswith(f"capture/{slug}/intents/") for key in files)
        assert {r["tenant"] for r in records} == {slug}
        assert all(r["inputs"][0].startswith(f"{slug} ") for r in records)


def test_a_disabled_model_keeps_nothing_once_its_settings_are_known():
    deployment, route = deployed()
    Deployment.objects.filter(pk=deployment.pk).update(capture_enabled=False)
    offer(route, "before the settings are read")
    known_settings()
    for index in range(20):
        offer(route, f"ticket {index}")

    assert len(capture.BUFFER) == 0
    assert capture.flush_capture() == 0
    assert captured("capture/acme") == {}


def test_a_full_buffer_drops_and_counts_instead_of_waiting(monkeypatch, tenant_client):
    deployment, route = deployed(slug="capturing")
    monkeypatch.setattr(capture.BUFFER, "capacity", 5)
    before = capture.BUFFER.dropped_total.get("capturing.intents", 0)

    for index in range(20):
        offer(route, f"ticket {index}")

    assert len(capture.BUFFER) == 5
    body, _ = exposition(None)
    assert (
        f'tenantml_capture_dropped_records_total{{model="capturing.intents"}} {before + 15}.0'
        in body.decode()
    )
    capture.flush_capture()
    deployment.refresh_from_db()
    assert deployment.capture_records_dropped == 15
    assert deployment.capture_records_written == 5


def test_a_slow_store_does_not_hold_offers_back(monkeypatch, settings):
    _, route = deployed()
    real_put = artifacts.put_bytes
    entered, release = threading.Event(), threading.Event()
    writes = []

    def slow_put(key, content):
        entered.set()
        release.wait(timeout=30)
        writes.append(key)
        return real_put(key, content)

    monkeypatch.setattr(artifacts, "put_bytes", slow_put)
    settings.TENANTML_CAPTURE_FLUSH_INTERVAL_S = 0.01
    try:
        offer(route, "first")  # starts the writer
        assert entered.wait(timeout=10), "the writer never reached the store"
        for index in range(300):
            offer(route, f"ticket {index}")
        # Every offer returned while the store still held the writer's first part.
        assert not writes and len(capture.BUFFER) == 300
        release.set()
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while sum(len(rows) for rows in captured("capture/acme").values()) < 301:
            assert datetime.now(UTC) < deadline, "the captured records never landed"
            threading.Event().wait(0.05)
    finally:
        release.set()
        capture.stop_writer()


def put_day(slug: str, name: str, day: str) -> str:
    key = f"capture/{slug}/{name}/{day}/000000-part.jsonl"
    artifacts.put_bytes(key, b"{}\n")
    return key


def test_retention_deletes_captured_days_older_than_the_deployments_retention():
    deployed(slug="acme", retention_days=5)
    deployed(slug="globex", retention_days=30)
    now = datetime.now(UTC).date()
    old, recent = (now - timedelta(days=10)).isoformat(), (now - timedelta(days=3)).isoformat()
    acme_old, acme_recent = put_day("acme", "intents", old), put_day("acme", "intents", recent)
    globex_old = put_day("globex", "intents", old)

    deleted = capture_service.delete_expired_capture()

    assert deleted == 1
    assert artifacts.list_keys("capture") == sorted([acme_recent, globex_old])
    last_pass = BackgroundPass.objects.get(job="capture-retention")
    assert last_pass.succeeded and last_pass.items == 3
    assert acme_old not in artifacts.list_keys("capture")


def url(route: Route, suffix: str) -> str:
    return f"/api/v1/tenants/{route.tenant_slug}/models/{route.model_name}/{suffix}"


@pytest.fixture
def acme_client(api_client):
    from tenants.models import Tenant
    from tenants.services import issue_token

    def client_for(slug: str):
        token = issue_token(tenant=Tenant.objects.get(slug=slug), name="t", actor="test")
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.secret}")
        return api_client

    return client_for


def test_a_captured_classifier_day_becomes_a_dataset_of_predicted_labels(acme_client):
    _, route = deployed()
    for index in range(30):
        offer(route, f"ticket number {index}", LABELS[index % 3])
    capture.flush_capture()
    client = acme_client("acme")

    assert client.get(url(route, "captures/")).json() == {
        "model": route.public_name,
        "days": [today()],
    }
    response = client.post(
        url(route, f"captures/{today()}/dataset"), {"name": "captured-today"}, format="json"
    )

    assert response.status_code == 201, response.json()
    dataset = Dataset.objects.get(tenant__slug="acme", name="captured-today")
    rows = [json.loads(line) for line in artifacts.read_bytes(dataset.storage_uri).splitlines()]
    assert len(rows) == 30
    assert {row["label_source"] for row in rows} == {"predicted"}
    assert {(row["text"], row["label"]) for row in rows} == {
        (f"ticket number {index}", LABELS[index % 3]) for index in range(30)
    }


def test_a_captured_reply_day_becomes_a_dataset_of_generated_replies(acme_client):
    _, route = deployed(name="replies", kind="reply-autocomplete")
    for index in range(24):
        capture.offer(
            route=route,
            protocol="native",
            inputs=[f"Where is order {index}?"],
            outputs=[{"text": f"Order {index} ships today.", "finish_reason": "stop"}],
            latency_ms=30.0,
            cold_start=False,
        )
    capture.flush_capture()

    response = acme_client("acme").post(
        url(route, f"captures/{today()}/dataset"), {"name": "replies-today"}, format="json"
    )

    assert response.status_code == 201, response.json()
    dataset = Dataset.objects.get(tenant__slug="acme", name="replies-today")
    assert dataset.validation_report["columns"] == ["text", "reply"]
    rows = [json.loads(line) for line in artifacts.read_bytes(dataset.storage_uri).splitlines()]
    assert {(row["text"], row["reply"]) for row in rows} == {
        (f"Where is order {index}?", f"Order {index} ships today.") for index in range(24)
    }


def test_a_captured_day_that_cannot_become_a_dataset_is_refused_naming_the_field(acme_client):
    _, route = deployed()
    _, embedding = deployed(slug="globex", name="search", kind="embedding")
    offer(route, "only one ticket")
    capture.flush_capture()
    client = acme_client("acme")

    bad_day = client.post(url(route, "captures/yesterday/dataset"), {"name": "x"}, format="json")
    nothing = client.post(url(route, "captures/2020-01-01/dataset"), {"name": "x"}, format="json")
    too_few = client.post(url(route, f"captures/{today()}/dataset"), {"name": "x"}, format="json")
    other = acme_client("globex").post(
        url(embedding, f"captures/{today()}/dataset"), {"name": "x"}, format="json"
    )

    assert bad_day.status_code == 400 and bad_day.json()["error"]["field"] == "day"
    assert nothing.status_code == 404
    assert too_few.status_code == 400 and too_few.json()["error"]["field"] == "file"
    assert other.status_code == 400 and other.json()["error"]["field"] == "model"
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"capture_sample_percent": 150}, "capture_sample_percent"),
        ({"capture_sample_percent": -1}, "capture_sample_percent"),
        ({"capture_sample_percent": "50"}, "capture_sample_percent"),
        ({"capture_retention_days": 0}, "capture_retention_days"),
        ({"capture_retention_days": 2.5}, "capture_retention_days"),
        ({"capture_enabled": "yes"}, "capture_enabled"),
        ({}, "capture_enabled"),
    ],
)
def test_capture_settings_out_of_range_are_refused_naming_the_field(acme_client, body, field):
    deployment, route = deployed()

    response = acme_client("acme").patch(url(route, "deployments/"), body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert field in set(error.get("fields", {})) | {error.get("field")}
    deployment.refresh_from_db()
    assert deployment.capture_sample_percent == 100.0


def test_capture_settings_change_through_the_deployment_resource(acme_client):
    deployment, route = deployed()

    response = acme_client("acme").patch(
        url(route, "deployments/"),
        {"capture_sample_percent": 12.5, "capture_retention_days": 7},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["capture"] == {
        "enabled": True,
        "sample_percent": 12.5,
        "retention_days": 7,
        "records_written": 0,
        "records_dropped": 0,
    }
    deployment.refresh_from_db()
    assert (deployment.capture_sample_percent, deployment.capture_retention_days) == (12.5, 7)


def test_on_an_s3_store_capture_lands_under_the_prefix_and_old_days_are_deleted(
    settings, dummy_aws_credentials, acme_client
):
    import boto3
    from moto import mock_aws

    from config.env import ArtifactStore

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="tenantml-capture")
        settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root="tenantml-capture/platform")
        _, route = deployed(retention_days=5)
        for index in range(30):
            offer(route, f"ticket number {index}", LABELS[index % 3])
        capture.flush_capture()
        old = (datetime.now(UTC).date() - timedelta(days=10)).isoformat()
        put_day("acme", "intents", old)

        keys = [item["Key"] for item in s3.list_objects_v2(Bucket="tenantml-capture")["Contents"]]
        assert sum(key.startswith(f"platform/capture/acme/intents/{today()}/") for key in keys) == 1
        assert capture_service.delete_expired_capture() == 1
        keys = [item["Key"] for item in s3.list_objects_v2(Bucket="tenantml-capture")["Contents"]]
        assert not any(f"/{old}/" in key for key in keys)
        response = acme_client("acme").post(
            url(route, f"captures/{today()}/dataset"), {"name": "from-s3"}, format="json"
        )
        assert response.status_code == 201, response.json()
