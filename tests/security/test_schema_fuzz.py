"""Every operation of the platform's own OpenAPI schema, fuzzed in-process with schemathesis.

Valid and deliberately invalid requests (wrong types, missing fields, out-of-range numbers,
odd strings), with a platform token and with a tenant token, against real path parameters (an
existing tenant, model, version, training job, token and instance) and made-up ones. The only
assertion is the one that matters here: no answer is a 5xx. A 500 is a bug to fix where the
input is parsed, not a status to accept.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from config.wsgi import application
from deployments.models import Instance
from tenants.models import ApiToken
from tenants.services import issue_token
from tests.factories import (
    DatasetFactory,
    InstanceFactory,
    ModelVersionFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(600)]

EXAMPLES_PER_OPERATION = 25


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


@pytest.fixture
def world(db):
    """A tenant with a dataset, a model with a ready version, a training job and a token, and an
    instance; the fuzzer points half of its requests at these so it gets past the 404s."""
    tenant = TenantFactory(slug="acme")
    model = TenantModelFactory(tenant=tenant, name="intents")
    dataset = DatasetFactory(tenant=tenant, name="tickets.csv")
    ModelVersionFactory(model=model, number=1)
    job = TrainingJobFactory(model=model, dataset=dataset)
    token = issue_token(name="spare", tenant=tenant, actor="test").token
    instance = InstanceFactory()
    return {
        "tenant": tenant,
        "path_parameters": {
            "slug": tenant.slug,
            "name": model.name,
            "number": 1,
            "job_id": job.pk,
            "token_id": token.pk,
            "instance_id": instance.pk,
        },
    }


def _operations():
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
    return schema, [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, *, headers: dict[str, str], path_parameters: dict) -> list[str]:
    """Run one operation's examples; return the 5xx answers seen (empty when none)."""
    own = {k: v for k, v in path_parameters.items() if k in _path_names(operation)}
    strategies = [
        operation.as_strategy(mode, path_parameters=params)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for params in ([own, None] if own else [None])
    ]
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case):
        response = case.call(headers=headers)
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        except Exception:
            failures.append(
                f"{operation.label}: {response.status_code} for path={case.path_parameters} "
                f"query={case.query} body={case.body!r:.300}"
            )

    run()
    return failures


def _path_names(operation) -> set[str]:
    return {parameter.name for parameter in operation.path_parameters}


@pytest.mark.parametrize("scope", ["platform", "tenant"])
def test_no_operation_answers_a_server_error(scope, world, wsgi_in_test_transaction):
    tenant = world["tenant"] if scope == "tenant" else None
    secret = issue_token(name=f"fuzz-{scope}", tenant=tenant, actor="test").secret
    headers = {"Authorization": f"Bearer {secret}"}
    _schema, operations = _operations()
    assert len(operations) >= 15, "the schema lost operations; the fuzzer would miss them"

    failures: list[str] = []
    for operation in operations:
        failures += _fuzz(operation, headers=headers, path_parameters=world["path_parameters"])

    assert not failures, "server errors:\n" + "\n".join(failures[:40])
    # The tokens the fuzzer used still work: nothing it sent broke authentication state.
    assert ApiToken.objects.filter(revoked_at__isnull=True).exists()
    assert Instance.objects.exists()
