"""Every answer under /api/ is JSON, errors in the one envelope: a path no route matches, a body
Django refuses before any view reads it, a validation error naming its fields, and OPTIONS."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_a_path_no_route_matches_is_a_json_404_under_api_only(platform_client):
    api = platform_client.get("/api/v1/tenants/a b/")
    page = Client().get("/no-such-page/")

    assert api.status_code == 404 and api["Content-Type"] == "application/json"
    assert api.json() == {
        "error": {"code": "not_found", "message": "No API route matches this path."}
    }
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_form_body_too_large_is_a_json_413(platform_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = platform_client.post(
        "/api/v1/tenants/", {"slug": "acme", "name": "x" * 5000}, format="multipart"
    )

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "too_large",
        "message": "The request body is over 1000 bytes.",
    }


def test_a_form_body_with_too_many_fields_is_a_json_400(platform_client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"field{index}": "x" for index in range(20)}

    response = platform_client.post("/api/v1/tenants/", fields, format="multipart")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body has too many fields."


def test_a_validation_error_names_its_first_field_and_every_field(platform_client):
    response = platform_client.post("/api/v1/tenants/", {"tier": "gold"}, format="json")

    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid"
    assert error["field"] == "slug" and error["message"].startswith("slug: ")
    assert set(error["fields"]) == {"slug", "name", "tier"}
    assert "gold" not in response.content.decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "acme", "name": 7}, "name"),
        ({"slug": 12, "name": "Acme"}, "slug"),
        ({"slug": "Not A Slug", "name": "Acme"}, "slug"),
        ({"slug": "acme", "name": "   "}, "name"),
        ({"slug": "acme", "name": "nul\x00"}, "name"),
    ],
)
def test_text_fields_take_only_the_strings_the_schema_describes(platform_client, body, field):
    response = platform_client.post("/api/v1/tenants/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize("path", ["/api/v1/tenants/", "/api/v1/events/", "/api/v1/fleet/costs"])
def test_options_describes_the_operation_without_building_its_serializer(platform_client, path):
    response = platform_client.options(path)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"name", "description", "renders", "parses"}
    assert "GET" in response["Allow"]
