"""A reconciler pass over a SageMaker endpoint (moto plays AWS) costs its AWS calls and a few
queries per endpoint, never a query per placement on it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.models import Deployment, Placement
from deployments.services.reconciler import reconcile_fleet
from tests.deployments.backends.sagemaker import support
from tests.factories import ModelVersionFactory, PlacementFactory

pytestmark = pytest.mark.django_db


def steady_pass_queries() -> int:
    reconcile_fleet()
    with CaptureQueriesContext(connection) as queries:
        report = reconcile_fleet()
    assert report.errors == [] and not report.changed
    return len(queries)


def test_a_pass_over_an_endpoint_makes_as_many_queries_with_thirty_more_models_on_it(
    deployed_version, django_capture_on_commit_callbacks
):
    support.answers_from_the_runtime(1)
    with django_capture_on_commit_callbacks(execute=True):
        response = support.api(deployed_version.model.tenant).post(
            "/api/v1/tenants/acme/models/intents/deployments/", {}, format="json"
        )
    assert response.status_code == 202, response.content
    endpoint = Deployment.objects.get(model=deployed_version.model).endpoint
    one_model = steady_pass_queries()

    for _ in range(30):
        PlacementFactory(
            instance=None,
            endpoint=endpoint,
            version=ModelVersionFactory(),
            actual_state=Placement.ActualState.LOADED,
        )
    many_models = steady_pass_queries()

    assert many_models == one_model
