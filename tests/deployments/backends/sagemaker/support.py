"""What the SageMaker backend's tests share besides fixtures: the fake account's names, what
Triton on an endpoint answers (queued in moto's runtime) and an API client for a tenant."""

from __future__ import annotations

import json

from moto.sagemakerruntime.models import sagemakerruntime_backends

from tenants.services import issue_token

BUCKET = "tenantml-test"
ROLE = "arn:aws:iam::123456789012:role/tenantml-serving"
REGION = "us-east-1"
INTENT_ANSWER = {
    "outputs": [
        {"name": "LABEL", "shape": [1, 1], "datatype": "BYTES", "data": ["refund"]},
        {"name": "SCORES", "shape": [1, 3], "datatype": "FP32", "data": [0.9, 0.06, 0.04]},
        {
            "name": "LABELS",
            "shape": [1, 3],
            "datatype": "BYTES",
            "data": ["refund", "account_access", "shipping"],
        },
    ]
}


def answers_from_the_runtime(count: int) -> None:
    """What Triton on the endpoint answers, queued in moto's runtime (AWS is what is faked)."""
    runtime = sagemakerruntime_backends["123456789012"][REGION]
    for _ in range(count):
        runtime.results_queue.append(
            (json.dumps(INTENT_ANSWER), "application/json", "AllTraffic", "")
        )


def api(tenant):
    from rest_framework.test import APIClient

    client = APIClient()
    secret = issue_token(tenant=tenant, name="t", actor="test").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client
