from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def local_receivers_allowed(settings):
    """The tests' receivers listen on 127.0.0.1 over plain http."""
    settings.TENANTML_WEBHOOK_ALLOW_HTTP_LOCALHOST = True


@pytest.fixture
def create_webhook(api_client):
    """POST /api/v1/webhooks/ with a token; the answer's JSON (with its one-time secret)."""

    def create(token: str, **body) -> dict:
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        response = api_client.post("/api/v1/webhooks/", body, format="json")
        assert response.status_code == 201, response.json()
        return response.json()

    return create
