"""CloudWatch figures on the SageMaker stand-in, end to end: a multi-model endpoint's figures put
into the stand-in's CloudWatch with plain boto3 (as SageMaker publishes them), read by the
CloudWatch task into the time series, and shown on the endpoint's page. The production code is
unchanged: boto3 finds the stand-in through the standard ``AWS_ENDPOINT_URL_*`` variables.

The endpoint is the row a multi-model rollout leaves; running its Triton would add nothing the
read depends on (the rollout has its own end-to-end tests) and would make the stand-in add its
own figures for it to the ones the page is checked against."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments.models import CloudMetricMinute, Endpoint, InstanceType
from deployments.tasks import read_cloud_metrics
from tests.factories import EndpointFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINT = "tml-intent-classifier-mme"


def test_cloudwatch_figures_put_into_the_standin_reach_the_time_series_and_the_endpoint_page(
    clean_sagemaker_standin, settings
):
    standin = clean_sagemaker_standin
    settings.TENANTML_AWS_REGION = standin.region
    endpoint = EndpointFactory(
        name=ENDPOINT,
        backend=Endpoint.Backend.SAGEMAKER,
        mode=Endpoint.Mode.MME,
        instance_type=InstanceType.objects.get(name="ml.m5.xlarge"),
    )
    now = timezone.now().replace(second=0, microsecond=0)
    three, two = now - timedelta(minutes=3), now - timedelta(minutes=2)
    variant = [
        {"Name": "EndpointName", "Value": ENDPOINT},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    cloudwatch = standin.client("cloudwatch")

    def put(namespace: str, metric: str, at, **value) -> None:
        cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": variant,
                    "Timestamp": at + timedelta(seconds=20),
                    **value,
                }
            ],
        )

    for at, requests, hits in ((three, 12, 10), (two, 18, 15)):
        put("AWS/SageMaker", "Invocations", at, Value=requests, Unit="None")
        put(
            "AWS/SageMaker",
            "ModelCacheHit",
            at,
            StatisticValues={"SampleCount": requests, "Sum": hits, "Minimum": 0, "Maximum": 1},
            Unit="None",
        )
    put(
        "AWS/SageMaker",
        "ModelLoadingWaitTime",
        three,
        StatisticValues={"SampleCount": 2, "Sum": 4_000_000, "Minimum": 1.5e6, "Maximum": 2.5e6},
        Unit="Microseconds",
    )
    put("/aws/sagemaker/Endpoints", "LoadedModelCount", two, Value=7, Unit="None")
    put("/aws/sagemaker/Endpoints", "CPUUtilization", two, Value=135.0, Unit="Percent")

    summary = read_cloud_metrics()

    assert (summary["endpoints"], summary["calls"], summary["errors"]) == (1, 1, {})
    series = {
        (row.metric, row.statistic, row.minute): row.value
        for row in CloudMetricMinute.objects.filter(endpoint=endpoint)
    }
    assert series == {
        ("Invocations", "Sum", three): 12.0,
        ("Invocations", "Sum", two): 18.0,
        ("ModelCacheHit", "Sum", three): 10.0,
        ("ModelCacheHit", "SampleCount", three): 12.0,
        ("ModelCacheHit", "Sum", two): 15.0,
        ("ModelCacheHit", "SampleCount", two): 18.0,
        ("ModelLoadingWaitTime", "Sum", three): 4_000_000.0,
        ("ModelLoadingWaitTime", "SampleCount", three): 2.0,
        ("LoadedModelCount", "Sum", two): 7.0,
        ("CPUUtilization", "Average", two): 135.0,
    }

    operator = Client()
    operator.force_login(UserFactory(username="operator", is_staff=True))
    page = operator.get(reverse("dashboard:endpoint", args=[ENDPOINT]))

    body = page.content.decode()
    assert page.status_code == 200 and 'data-testid="endpoint-cloud-metrics"' in body
    shown = {
        testid: body.split(f'data-testid="{testid}" data-value="', 1)[1].split('"', 1)[0]
        for testid in (
            "cloud-invocations",
            "cloud-cache-hit-rate",
            "cloud-cache-misses",
            "cloud-loading-wait",
            "cloud-loaded-models",
            "cloud-cpu-utilization",
        )
    }
    assert shown == {
        "cloud-invocations": "30",
        "cloud-cache-hit-rate": "0.8333",
        "cloud-cache-misses": "5",
        "cloud-loading-wait": "2000.0",
        "cloud-loaded-models": "7.0",
        "cloud-cpu-utilization": "1.35",
    }
    assert "83.3 %" in body and "2,000 ms" in body and "135 %" in body
    assert 'data-testid="figure-cloud-traffic"' in body
