"""Every operation of the platform's own OpenAPI schema, fuzzed in-process with schemathesis and
every one of its checks.

Schemathesis runs its examples, coverage and fuzzing phases against each operation, with a
platform token and with a tenant token: valid requests, deliberately invalid ones (wrong types,
missing fields, out-of-range numbers, odd strings, unexpected methods and media types), against
the path parameters of a real tenant, model, version, training job, token and instance. Each
answer passes all its checks: no server error, a documented status code, content type and
headers, a body matching the documented schema (the error envelope on every error), invalid
requests refused and valid ones accepted. A failure is fixed in the schema or in the validation,
not accepted here.

Valid requests are steered where the schema cannot speak: a schema says what a request looks
like, not which datasets exist, what time it is or what a CSV file holds, and OpenAPI 3.0 cannot
constrain an object's property names. So a valid request that names a dataset names the
tenant's, a token's expiry lies in the future, an uploaded dataset file is a real CSV of
labelled texts, and a hyperparameter's name is not empty, holds no NUL and is not "kind" (which
the model's kind fixes).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from config.wsgi import application
from deployments.models import Instance
from models_registry.demo.tickets import generate_tickets, to_csv
from tenants.models import ApiToken
from tenants.services import issue_token
from tests.config.test_openapi import OPERATION_IDS
from tests.factories import (
    DatasetFactory,
    InstanceFactory,
    ModelVersionFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)
from webhooks.models import Webhook, WebhookDelivery
from webhooks.services import create_webhook, new_event_id

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(600)]

EXAMPLES_PER_OPERATION = 15
# Rows of the world the fuzzer's path parameters name, at ids no other row of a test takes.
IDS = {
    "job_id": 900_001,
    "token_id": 900_002,
    "instance_id": 900_003,
    "webhook_id": 900_004,
    "delivery_id": 900_005,
}
DATASET = "tickets.csv"
VALID_DATASET_FILE = to_csv(generate_tickets("banking", rows=60, seed=1))

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
schema.config.update(parameters={"slug": "acme", "name": "intents", "number": 1, **IDS})


@schema.hook
def map_case(context, case):
    """Valid requests name what exists, and when: the tenant's dataset, hyperparameters the
    model's kind takes, a future expiry, a real dataset file (the schema states none of these)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    if not isinstance(case.body, dict):
        return case
    operation = context.operation.definition.raw.get("operationId")
    if operation == "createTrainingJob":
        case.body["dataset"] = DATASET
        if "hyperparameters" in case.body:
            # Which names and values a kind takes is the kind's (the intent classifier refuses
            # any other up front, 400 naming it); the schema states only their JSON shape.
            case.body["hyperparameters"] = {}
    elif operation == "issueToken" and case.body.get("expires_at") is not None:
        case.body["expires_at"] = (timezone.now() + timedelta(days=30)).isoformat()
    elif operation == "uploadDataset" and "file" in case.body:
        case.body["file"] = VALID_DATASET_FILE
    elif operation in ("createWebhook", "updateWebhook"):
        # A webhook posts to an https:// URL, and a tenant token registers its own tenant's.
        if "url" in case.body:
            case.body["url"] = "https://hooks.example.com/tenantml"
        if "tenant" in case.body:
            case.body["tenant"] = "acme"
    return case


@pytest.fixture
def wsgi_in_test_transaction():
    """Let the WSGI app share the test's transaction, as Django's test client does.

    The WSGI handler closes "old" connections at the start and end of each request; inside a
    test's atomic block that would mark the transaction broken for the next request.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(params=["platform", "tenant"])
def authorization(request, db, wsgi_in_test_transaction, settings):
    """A tenant with a dataset, a model with a ready version, a training job and a spare token,
    and an instance; the caller's token (platform or the tenant's) as headers."""
    # Every example in one throttle window would soon be a 429; the throttle has its own tests.
    settings.TENANTML_API_THROTTLE_TENANT_RATE = None
    settings.TENANTML_API_THROTTLE_PLATFORM_RATE = None
    tenant = TenantFactory(slug="acme")
    model = TenantModelFactory(tenant=tenant, name="intents")
    dataset = DatasetFactory(tenant=tenant, name=DATASET)
    ModelVersionFactory(model=model, number=1)
    TrainingJobFactory(model=model, dataset=dataset, id=IDS["job_id"])
    spare = issue_token(name="spare", tenant=tenant, actor="test").token
    ApiToken.objects.filter(pk=spare.pk).update(id=IDS["token_id"])
    InstanceFactory(id=IDS["instance_id"])
    webhook, _ = create_webhook(
        tenant=tenant, url="https://hooks.example.com/acme", event_types=["training."], actor="t"
    )
    Webhook.objects.filter(pk=webhook.pk).update(id=IDS["webhook_id"])
    WebhookDelivery.objects.create(
        id=IDS["delivery_id"],
        webhook_id=IDS["webhook_id"],
        event_id=new_event_id(),
        event_type="training.succeeded",
        body="{}",
        status=WebhookDelivery.Status.SUCCEEDED,
        retry_window_started_at=timezone.now(),
    )
    owner = tenant if request.param == "tenant" else None
    secret = issue_token(name=f"fuzz-{request.param}", tenant=owner, actor="test").secret
    yield {"Authorization": f"Bearer {secret}"}
    # Nothing the fuzzer sent broke the caller's own credentials or removed the instance.
    assert ApiToken.objects.filter(name=f"fuzz-{request.param}", revoked_at__isnull=True).exists()
    assert Instance.objects.filter(pk=IDS["instance_id"]).exists()


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_passes_every_check(case, authorization):
    case.call_and_validate(headers=authorization)


def test_the_fuzzer_sees_every_operation():
    """Every operation of the API is fuzzed: the schema it reads lost none."""
    fuzzed = {result.ok().definition.raw["operationId"] for result in schema.get_all_operations()}

    assert fuzzed == OPERATION_IDS
