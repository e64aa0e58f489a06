"""The OpenAPI schema at /api/schema/ is the product teams' contract: every operation with a
summary, a description, one resource tag and a stable operationId; every error it can answer
documented with the error envelope; every list paginated; the lists' filters as query parameters
with their enums."""

from __future__ import annotations

import jsonschema
import pytest
from rest_framework.test import APIClient

from config.openapi_tags import API_TAGS
from config.pagination import MAX_LIMIT
from deployments.models import Event
from models_registry.models import ModelVersion, TrainingJob
from tenants.services import issue_token
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

# The operationIds clients are generated against: renaming one breaks them, so they are listed
# here, not derived from the paths.
OPERATION_IDS = {
    "listTenants",
    "createTenant",
    "getTenant",
    "listTokens",
    "issueToken",
    "revokeToken",
    "listDatasets",
    "uploadDataset",
    "listModels",
    "createModel",
    "getModel",
    "rollbackModel",
    "listVersions",
    "promoteVersion",
    "listTrainingJobs",
    "createTrainingJob",
    "getTrainingJob",
    "cancelTrainingJob",
    "getDeployment",
    "createDeployment",
    "deleteDeployment",
    "rollbackDeployment",
    "startCandidateRollout",
    "getCandidateRollout",
    "promoteCandidateRollout",
    "abortCandidateRollout",
    "setRolloutStrategy",
    "updateDeploymentCapture",
    "getCapturedDays",
    "createDatasetFromCapture",
    "invokeModel",
    "listEvents",
    "listTenantEvents",
    "getFleetUtilization",
    "getFleetCosts",
    "getRebalance",
    "rebalanceFleet",
    "listTenantCosts",
    "listEndpointCosts",
    "drainInstance",
    "listWebhooks",
    "createWebhook",
    "getWebhook",
    "updateWebhook",
    "deleteWebhook",
    "rotateWebhookSecret",
    "sendWebhookTestEvent",
    "listWebhookDeliveries",
    "redeliverWebhookDelivery",
}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict) -> dict[str, tuple[str, str, dict]]:
    """Every operation by its operationId: (method, path, operation)."""
    found = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                found[operation["operationId"]] = (method, path, operation)
    return found


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_every_operation_has_its_stable_operation_id(schema):
    assert set(operations(schema)) == OPERATION_IDS


def test_every_operation_has_a_summary_a_description_and_one_resource_tag(schema):
    tag_names = {tag["name"] for tag in API_TAGS}
    for operation_id, (_method, _path, operation) in operations(schema).items():
        assert operation.get("summary"), operation_id
        assert len(operation.get("description", "")) > len(operation["summary"]), operation_id
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tag_names, operation_id


def test_every_tag_is_described_and_used(schema):
    used = {operation["tags"][0] for _m, _p, operation in operations(schema).values()}

    assert [tag["name"] for tag in schema["tags"]] == [tag["name"] for tag in API_TAGS]
    assert all(tag["description"] for tag in schema["tags"])
    assert used == {tag["name"] for tag in schema["tags"]}


def test_every_error_answer_is_documented_with_the_error_envelope(schema):
    for operation_id, (_method, _path, operation) in operations(schema).items():
        responses = operation["responses"]
        errors = {status for status in responses if status >= "400"}
        # Any operation can meet a missing token, an Accept header it cannot satisfy and (the
        # management API's throttle, or the proxy's rate limit for invoke) too many requests.
        assert {"401", "406", "429"} <= errors, operation_id
        for status in errors:
            body = responses[status]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/Error"}, (operation_id, status)
            assert responses[status]["description"], (operation_id, status)
        retry_after = responses["429"]["headers"]["Retry-After"]
        assert retry_after["required"] is True and retry_after["schema"]["type"] == "integer"


@pytest.mark.parametrize(
    ("operation_id", "documented", "not_documented"),
    [
        ("getFleetUtilization", {"200"}, {"400", "403", "404", "415"}),
        ("getTenant", {"200", "404"}, {"400", "415"}),
        ("listTenants", {"200", "400"}, {"404", "415"}),
        ("createTenant", {"201", "400", "403", "409", "413", "415"}, {"404"}),
        ("revokeToken", {"200", "403", "404"}, {"204", "400"}),
        ("uploadDataset", {"201", "400", "404", "409", "413", "415"}, set()),
        ("promoteVersion", {"200", "400", "403", "404", "409"}, set()),
        ("createTrainingJob", {"202", "400", "404", "409"}, {"201"}),
        ("cancelTrainingJob", {"202", "404", "409"}, {"400", "415"}),
        ("createDeployment", {"202", "400", "404", "409"}, set()),
        ("deleteDeployment", {"202", "403", "404"}, {"204", "400"}),
        ("rollbackDeployment", {"202", "404", "409"}, {"400"}),
        ("startCandidateRollout", {"202", "400", "404", "409"}, set()),
        ("promoteCandidateRollout", {"200", "404", "409"}, {"400"}),
        ("invokeModel", {"200", "400", "404", "409", "413", "502", "503"}, set()),
        ("listEvents", {"200", "400", "403"}, {"404"}),
        ("listTenantEvents", {"200", "400", "404"}, set()),
        ("listEndpointCosts", {"200", "400", "403"}, {"404"}),
        ("drainInstance", {"200", "403", "404", "503"}, set()),
    ],
)
def test_an_operation_documents_the_answers_it_can_give_and_no_others(
    schema, operation_id, documented, not_documented
):
    statuses = set(operations(schema)[operation_id][2]["responses"])

    assert documented <= statuses
    assert not (not_documented & statuses)


def test_the_undeploy_follows_the_conventions(schema):
    method, path, operation = operations(schema)["deleteDeployment"]

    assert (method, path) == ("delete", "/api/v1/tenants/{slug}/models/{name}/deployments/")
    assert operation["tags"] == ["Deployments"] and operation["summary"] == "Undeploy a model"
    body = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Deployment"}


def test_every_list_answers_a_page_with_limit_and_offset(schema):
    lists = {
        operation_id: operation
        for operation_id, (method, _path, operation) in operations(schema).items()
        if operation_id.startswith("list")
    }
    assert len(lists) == 12
    for operation_id, operation in lists.items():
        page = resolve(
            schema, operation["responses"]["200"]["content"]["application/json"]["schema"]
        )
        assert set(page["required"]) == {"count", "next", "previous", "results"}, operation_id
        assert page["properties"]["results"]["type"] == "array", operation_id
        parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert parameters["limit"]["schema"]["minimum"] == 1, operation_id
        assert str(MAX_LIMIT) in parameters["limit"]["description"], operation_id
        assert parameters["offset"]["schema"]["minimum"] == 0, operation_id


def test_no_answer_is_an_unbounded_array(schema):
    for operation_id, (_method, _path, operation) in operations(schema).items():
        for response in operation["responses"].values():
            for media in response.get("content", {}).values():
                assert resolve(schema, media["schema"]).get("type") != "array", operation_id


def query_parameter(schema: dict, operation_id: str, name: str) -> dict:
    operation = operations(schema)[operation_id][2]
    (parameter,) = [p for p in operation["parameters"] if p["in"] == "query" and p["name"] == name]
    return parameter


@pytest.mark.parametrize(
    ("operation_id", "statuses"),
    [("listTrainingJobs", TrainingJob.Status.values), ("listVersions", ModelVersion.Status.values)],
)
def test_status_filters_are_documented_with_every_status(schema, operation_id, statuses):
    parameter = query_parameter(schema, operation_id, "status")

    assert parameter["schema"]["enum"] == list(statuses)
    assert not parameter.get("required", False)


@pytest.mark.parametrize("operation_id", ["listEvents", "listTenantEvents"])
def test_event_filters_are_documented(schema, operation_id):
    event_type = query_parameter(schema, operation_id, "type")["schema"]
    severity = query_parameter(schema, operation_id, "severity")["schema"]

    assert event_type["pattern"] and event_type["maxLength"] == 64
    assert severity["enum"] == list(Event.Severity.values)
    for name in ("since", "until"):
        assert query_parameter(schema, operation_id, name)["schema"]["format"] == "date-time"


def test_request_bodies_are_documented_as_json_and_uploads_as_multipart(schema):
    for operation_id, (_method, _path, operation) in operations(schema).items():
        if "requestBody" not in operation:
            continue
        expected = (
            ["multipart/form-data"] if operation_id == "uploadDataset" else ["application/json"]
        )
        assert list(operation["requestBody"]["content"]) == expected, operation_id


@pytest.fixture
def tenant_and_clients(db):
    tenant = TenantFactory(slug="acme")
    clients = {}
    for scope, owner in (("platform", None), ("tenant", tenant)):
        client = APIClient()
        secret = issue_token(name=scope, tenant=owner, actor="test").secret
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        clients[scope] = client
    return tenant, clients


def test_the_error_component_describes_every_error_the_api_answers(schema, tenant_and_clients):
    tenant, clients = tenant_and_clients
    validator = jsonschema.Draft4Validator(
        {"$ref": "#/components/schemas/Error", "components": schema["components"]}
    )
    answers = {
        # A validation error naming several fields.
        400: clients["platform"].post("/api/v1/tenants/", {"tier": "gold"}, format="json"),
        401: APIClient().get("/api/v1/tenants/"),
        403: clients["tenant"].get("/api/v1/events/"),
        # A domain error naming its field, a missing resource, and a path no route matches.
        409: clients["platform"].post(
            "/api/v1/tenants/", {"slug": tenant.slug, "name": "Again"}, format="json"
        ),
        404: clients["tenant"].get("/api/v1/tenants/someone-else/"),
        4040: clients["tenant"].get("/api/v1/no-such-route/"),
        415: clients["tenant"].generic(
            "POST", f"/api/v1/tenants/{tenant.slug}/models/", "name", "text/plain"
        ),
    }

    for status, response in answers.items():
        assert response.status_code == int(str(status)[:3]), response.content
        assert response["Content-Type"] == "application/json"
        validator.validate(response.json())
    several = answers[400].json()["error"]
    assert several["field"] == "slug" and set(several["fields"]) == {"slug", "name", "tier"}
    assert answers[409].json()["error"]["field"] == "slug"
