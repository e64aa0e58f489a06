"""The CloudWatch pass on moto: each live SageMaker endpoint's minutes (its inference components'
too) become time-series rows, a minute read again is overwritten, the window reaches back to
catch late datapoints and the minutes an outage missed, rows past retention go, local
endpoints are measured by the platform and read from no cloud, and the pass is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from deployments.models import BackgroundPass, CloudMetricMinute, Endpoint, InstanceType
from deployments.passes import CLOUD_METRICS
from deployments.services.cloud_metrics import MAX_CATCH_UP, read_cloud_metrics
from tests.factories import EndpointFactory, PlacementFactory

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
NOW = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(seconds=25)
THIS_MINUTE = NOW.replace(second=0)


def ago(minutes: int) -> datetime:
    return THIS_MINUTE - timedelta(minutes=minutes)


@pytest.fixture
def cloudwatch(dummy_aws_credentials, settings):
    settings.TENANTML_AWS_REGION = REGION
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def put(client, namespace, metric, dimensions, at, **value) -> None:
    client.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": at + timedelta(seconds=5),
                **value,
            }
        ],
    )


def variant(name: str) -> dict:
    return {"EndpointName": name, "VariantName": "AllTraffic"}


@pytest.fixture
def endpoints(db):
    sagemaker = InstanceType.objects.get(name="ml.m5.xlarge")
    mme = EndpointFactory(
        name="tml-mme-a", backend=Endpoint.Backend.SAGEMAKER, instance_type=sagemaker
    )
    components = EndpointFactory(
        name="tml-ic-a",
        backend=Endpoint.Backend.SAGEMAKER,
        mode=Endpoint.Mode.INFERENCE_COMPONENT,
        instance_type=InstanceType.objects.get(name="ml.g4dn.xlarge"),
    )
    PlacementFactory(endpoint=components, instance=None, external_name="tml-acme-intents")
    retired = EndpointFactory(
        name="tml-mme-old",
        backend=Endpoint.Backend.SAGEMAKER,
        instance_type=sagemaker,
        status=Endpoint.Status.RETIRED,
    )
    local = EndpointFactory(name="local-a")
    return {"mme": mme, "components": components, "retired": retired, "local": local}


def rows(endpoint) -> dict:
    return {
        (r.component, r.metric, r.statistic, r.minute): (r.value, r.unit)
        for r in CloudMetricMinute.objects.filter(endpoint=endpoint)
    }


def test_a_pass_writes_each_sagemaker_endpoints_minutes_beside_the_local_figures(
    cloudwatch, endpoints
):
    put(cloudwatch, "AWS/SageMaker", "Invocations", variant("tml-mme-a"), ago(3), Value=20.0)
    put(
        cloudwatch,
        "AWS/SageMaker",
        "ModelCacheHit",
        variant("tml-mme-a"),
        ago(3),
        StatisticValues={"SampleCount": 20, "Sum": 17, "Minimum": 0, "Maximum": 1},
    )
    put(
        cloudwatch,
        "AWS/SageMaker",
        "ModelLoadingTime",
        variant("tml-mme-a"),
        ago(3),
        StatisticValues={"SampleCount": 3, "Sum": 6_300_000, "Minimum": 2e6, "Maximum": 2.3e6},
        Unit="Microseconds",
    )
    put(
        cloudwatch,
        "/aws/sagemaker/Endpoints",
        "CPUUtilization",
        variant("tml-mme-a"),
        ago(2),
        Value=140.0,
    )
    put(
        cloudwatch,
        "/aws/sagemaker/Endpoints",
        "GPUMemoryUtilization",
        variant("tml-ic-a"),
        ago(2),
        Value=61.5,
    )
    component = {"InferenceComponentName": "tml-acme-intents"}
    put(cloudwatch, "AWS/SageMaker", "Invocations", component, ago(2), Value=7.0)
    put(
        cloudwatch,
        "/aws/sagemaker/InferenceComponents",
        "GPUMemoryUtilizationNormalized",
        component,
        ago(2),
        Value=44.0,
    )
    # A retired endpoint's figures are not read any more.
    put(cloudwatch, "AWS/SageMaker", "Invocations", variant("tml-mme-old"), ago(3), Value=5.0)

    result = read_cloud_metrics(now=NOW)

    assert rows(endpoints["mme"]) == {
        ("", "Invocations", "Sum", ago(3)): (20.0, "None"),
        ("", "ModelCacheHit", "Sum", ago(3)): (17.0, "None"),
        ("", "ModelCacheHit", "SampleCount", ago(3)): (20.0, "None"),
        ("", "ModelLoadingTime", "Sum", ago(3)): (6_300_000.0, "Microseconds"),
        ("", "ModelLoadingTime", "SampleCount", ago(3)): (3.0, "Microseconds"),
        ("", "CPUUtilization", "Average", ago(2)): (140.0, "Percent"),
    }
    assert rows(endpoints["components"]) == {
        ("", "GPUMemoryUtilization", "Average", ago(2)): (61.5, "Percent"),
        ("tml-acme-intents", "Invocations", "Sum", ago(2)): (7.0, "None"),
        ("tml-acme-intents", "GPUMemoryUtilizationNormalized", "Average", ago(2)): (
            44.0,
            "Percent",
        ),
    }
    assert not CloudMetricMinute.objects.filter(
        endpoint__in=[endpoints["retired"], endpoints["local"]]
    )
    assert result.read_from == ago(10) and result.read_to == THIS_MINUTE
    assert result.points == 9 and result.errors == {}
    record = BackgroundPass.objects.get(job=CLOUD_METRICS)
    assert record.succeeded and record.items == 3 and record.errors == 0
    assert record.summary["points"] == 9 and record.summary["read_to"] == THIS_MINUTE.isoformat()


def test_a_minute_read_again_is_overwritten_with_what_came_late(cloudwatch, endpoints):
    put(cloudwatch, "AWS/SageMaker", "Invocations", variant("tml-mme-a"), ago(2), Value=4.0)
    read_cloud_metrics(now=NOW)
    # The rest of that minute's requests reach CloudWatch after the first pass read it.
    put(cloudwatch, "AWS/SageMaker", "Invocations", variant("tml-mme-a"), ago(2), Value=6.0)

    read_cloud_metrics(now=NOW + timedelta(minutes=1))

    minute = CloudMetricMinute.objects.get(endpoint=endpoints["mme"], metric="Invocations")
    assert (minute.minute, minute.value) == (ago(2), 10.0)
    assert BackgroundPass.objects.get(job=CLOUD_METRICS).passes == 2


def test_after_an_outage_the_pass_reads_back_to_where_the_last_one_stopped(
    cloudwatch, endpoints, settings
):
    settings.TENANTML_CLOUD_METRICS_LOOKBACK_MINUTES = 5
    put(cloudwatch, "AWS/SageMaker", "Invocations", variant("tml-mme-a"), ago(50), Value=3.0)
    first = read_cloud_metrics(now=NOW - timedelta(minutes=60))
    assert first.read_from == ago(65)

    after_an_hour = read_cloud_metrics(now=NOW)
    after_a_day = read_cloud_metrics(now=NOW + timedelta(days=1))

    assert after_an_hour.read_from == ago(60 + 5)
    assert CloudMetricMinute.objects.get(endpoint=endpoints["mme"]).minute == ago(50)
    # Never further back than MAX_CATCH_UP.
    assert after_a_day.read_from == THIS_MINUTE + timedelta(days=1) - MAX_CATCH_UP


def test_rows_past_retention_are_deleted(cloudwatch, endpoints, settings):
    settings.TENANTML_CLOUD_METRICS_RETENTION_DAYS = 2
    for days in (3, 1):
        CloudMetricMinute.objects.create(
            endpoint=endpoints["mme"],
            metric="Invocations",
            statistic="Sum",
            minute=THIS_MINUTE - timedelta(days=days),
            value=1.0,
        )

    result = read_cloud_metrics(now=NOW)

    assert result.pruned == 1
    assert list(CloudMetricMinute.objects.values_list("minute", flat=True)) == [
        THIS_MINUTE - timedelta(days=1)
    ]


def test_a_pass_with_no_sagemaker_endpoint_calls_no_aws(db):
    # No credentials and no moto: a call to AWS would fail the pass.
    EndpointFactory(name="local-only")

    result = read_cloud_metrics(now=NOW)

    assert (result.endpoints, result.calls, result.points, result.errors) == (1, 0, 0, {})
