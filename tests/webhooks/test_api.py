"""The webhooks API: the secret shown once, validation answers that name the field without
repeating it, and each tenant seeing only its own webhooks."""

from __future__ import annotations

import json

import pytest

from tenants.services import issue_token
from webhooks import signing
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/tenantml"


def test_the_secret_is_shown_once_and_stored_encrypted(tenant_client, tenant):
    created = tenant_client.post(
        "/api/v1/webhooks/", {"url": URL, "event_types": ["training."]}, format="json"
    )
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and created.json()["tenant"] == tenant.slug
    webhook_id = created.json()["id"]

    for path in (
        "/api/v1/webhooks/",
        f"/api/v1/webhooks/{webhook_id}/",
        f"/api/v1/webhooks/{webhook_id}/deliveries/",
    ):
        answer = tenant_client.get(path)
        assert answer.status_code == 200
        assert secret not in answer.content.decode() and "secret" not in answer.json()
    stored = Webhook.objects.get(pk=webhook_id)
    assert secret not in stored.secret_encrypted
    assert signing.decrypt_secret(stored.secret_encrypted) == secret

    rotated = tenant_client.post(f"/api/v1/webhooks/{webhook_id}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (secret, "")
    assert (
        rotated.json()["secret"]
        not in tenant_client.get(f"/api/v1/webhooks/{webhook_id}/").content.decode()
    )


def test_a_secret_stored_under_another_secret_key_is_reported_unreadable(settings):
    stored = signing.encrypt_secret("whsec_abc")
    settings.SECRET_KEY = "another-key-entirely-" + "x" * 40
    with pytest.raises(signing.UnreadableSecret):
        signing.decrypt_secret(stored)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"event_types": ["training."]}, "url"),
        ({"url": "http://hooks.example.com/x", "event_types": ["training."]}, "url"),
        ({"url": "ftp://hooks.example.com/secret-path-9", "event_types": ["training."]}, "url"),
        ({"url": "https://user:pw-9@hooks.example.com/", "event_types": ["training."]}, "url"),
        ({"url": "not a url at all 9", "event_types": ["training."]}, "url"),
        ({"url": "https://[::1/", "event_types": ["training."]}, "url"),
        ({"url": "https://10.0.0.9/hook", "event_types": ["training."]}, "url"),
        ({"url": "https://169.254.169.254/9", "event_types": ["training."]}, "url"),
        ({"url": "https://localhost:9443/hook-9", "event_types": ["training."]}, "url"),
        ({"url": URL, "event_types": []}, "event_types"),
        ({"url": URL, "event_types": ["placement.loaded-9"]}, "event_types"),
        ({"url": URL, "event_types": "training."}, "event_types"),
        ({"url": URL, "event_types": ["training."], "enabled": "yes-9"}, "enabled"),
        ({"url": URL, "event_types": ["training."], "tenant": "someone-else-9"}, "tenant"),
    ],
)
def test_invalid_fields_answer_400_naming_the_field_without_echoing_it(
    tenant_client, settings, body, field
):
    settings.TENANTML_WEBHOOK_ALLOW_HTTP_LOCALHOST = False
    response = tenant_client.post("/api/v1/webhooks/", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"].startswith(field)
    text = json.dumps(error)
    for value in body.values():
        for part in value if isinstance(value, list) else [value]:
            if isinstance(part, str) and "9" in part:
                assert part not in text
    assert not Webhook.objects.exists()


def test_plain_http_goes_only_to_localhost_and_only_when_allowed(tenant_client, settings):
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["training."]}
    assert tenant_client.post("/api/v1/webhooks/", body, format="json").status_code == 201
    settings.TENANTML_WEBHOOK_ALLOW_HTTP_LOCALHOST = False
    refused = tenant_client.post("/api/v1/webhooks/", body, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "url"


def test_a_tenant_sees_only_its_own_webhooks_and_the_platform_all(
    api_client, tenant, other_tenant, create_webhook
):
    mine = create_webhook(
        issue_token(name="a", tenant=tenant, actor="t").secret, url=URL, event_types=["version."]
    )
    theirs_token = issue_token(name="b", tenant=other_tenant, actor="t").secret
    theirs = create_webhook(theirs_token, url=URL, event_types=["version."])
    platform_token = issue_token(name="ops", tenant=None, actor="t").secret
    platform = create_webhook(platform_token, url=URL, event_types=["deployment."])
    assert platform["tenant"] is None

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {theirs_token}")
    listed = [row["id"] for row in api_client.get("/api/v1/webhooks/").json()["results"]]
    assert listed == [theirs["id"]]
    for path in (
        f"/api/v1/webhooks/{mine['id']}/",
        f"/api/v1/webhooks/{mine['id']}/deliveries/",
        f"/api/v1/webhooks/{platform['id']}/",
    ):
        assert api_client.get(path).status_code == 404
    assert api_client.delete(f"/api/v1/webhooks/{mine['id']}/").status_code == 404
    assert api_client.post(f"/api/v1/webhooks/{mine['id']}/rotate-secret").status_code == 404

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {platform_token}")
    listed = {row["id"] for row in api_client.get("/api/v1/webhooks/").json()["results"]}
    assert listed == {mine["id"], theirs["id"], platform["id"]}
    for_tenant = create_webhook(
        platform_token, url=URL, event_types=["training."], tenant=tenant.slug
    )
    assert for_tenant["tenant"] == tenant.slug


def test_update_and_delete(tenant_client, tenant_token, create_webhook):
    webhook = create_webhook(tenant_token, url=URL, event_types=["training."])
    path = f"/api/v1/webhooks/{webhook['id']}/"

    changed = tenant_client.patch(
        path,
        {"enabled": False, "event_types": ["deployment.live", "deployment.live"]},
        format="json",
    )
    assert changed.status_code == 200
    assert changed.json()["enabled"] is False
    assert changed.json()["event_types"] == ["deployment.live"]
    bad = tenant_client.patch(path, {"url": "http://example.com/9"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "url"
    assert tenant_client.post(f"{path}test").status_code == 409  # disabled

    assert tenant_client.delete(path).status_code == 204
    assert tenant_client.get(path).status_code == 404
