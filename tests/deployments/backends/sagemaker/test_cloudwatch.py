"""Reading SageMaker endpoints' CloudWatch metrics with GetMetricData: AWS's namespaces,
dimensions and statistics for each mode, calls of at most 500 queries, every page of an
answer, throttling retried, and one endpoint's refused queries never the end of the others'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from deployments.backends.sagemaker.cloudwatch import (
    MAX_QUERIES_PER_CALL,
    EndpointSource,
    batches,
    queries_for,
    read_metrics,
)

REGION = "us-east-1"


def minute_ago(minutes: int) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


def mme(endpoint_id: int, name: str, *, gpu: bool = False) -> EndpointSource:
    return EndpointSource(endpoint_id=endpoint_id, endpoint_name=name, mode="mme", gpu=gpu)


def test_a_multi_model_endpoint_is_read_with_aws_namespaces_dimensions_and_statistics():
    queries = queries_for(mme(1, "tml-mme-a"))

    read = {(q.namespace, q.metric, q.statistic, q.unit) for q in queries}
    assert read == {
        ("AWS/SageMaker", "Invocations", "Sum", "None"),
        ("AWS/SageMaker", "ModelLatency", "Sum", "Microseconds"),
        ("AWS/SageMaker", "ModelLatency", "SampleCount", "Microseconds"),
        ("AWS/SageMaker", "ModelLoadingWaitTime", "Sum", "Microseconds"),
        ("AWS/SageMaker", "ModelLoadingWaitTime", "SampleCount", "Microseconds"),
        ("AWS/SageMaker", "ModelLoadingTime", "Sum", "Microseconds"),
        ("AWS/SageMaker", "ModelLoadingTime", "SampleCount", "Microseconds"),
        ("AWS/SageMaker", "ModelDownloadingTime", "Sum", "Microseconds"),
        ("AWS/SageMaker", "ModelDownloadingTime", "SampleCount", "Microseconds"),
        ("AWS/SageMaker", "ModelUnloadingTime", "Sum", "Microseconds"),
        ("AWS/SageMaker", "ModelUnloadingTime", "SampleCount", "Microseconds"),
        ("AWS/SageMaker", "ModelCacheHit", "Sum", "None"),
        ("AWS/SageMaker", "ModelCacheHit", "SampleCount", "None"),
        ("/aws/sagemaker/Endpoints", "LoadedModelCount", "Sum", "None"),
        ("/aws/sagemaker/Endpoints", "CPUUtilization", "Average", "Percent"),
        ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average", "Percent"),
    }
    assert {q.dimensions for q in queries} == {
        (("EndpointName", "tml-mme-a"), ("VariantName", "AllTraffic"))
    }
    assert {q.component for q in queries} == {""}
    request = queries[0].as_request("q0")
    assert request["MetricStat"]["Period"] == 60
    assert request["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "EndpointName", "Value": "tml-mme-a"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]


def test_inference_components_are_read_by_their_own_name_and_gpu_figures_only_on_gpus():
    source = EndpointSource(
        endpoint_id=2,
        endpoint_name="tml-ic",
        mode="inference-component",
        components=("tml-acme-intents", "tml-globex-routing"),
        gpu=True,
    )

    queries = queries_for(source)

    variant = {(q.namespace, q.metric) for q in queries if not q.component}
    assert variant == {
        ("AWS/SageMaker", "Invocations"),
        ("AWS/SageMaker", "ModelLatency"),
        ("/aws/sagemaker/Endpoints", "CPUUtilization"),
        ("/aws/sagemaker/Endpoints", "MemoryUtilization"),
        ("/aws/sagemaker/Endpoints", "GPUMemoryUtilization"),
    }
    acme = [q for q in queries if q.component == "tml-acme-intents"]
    assert {(q.namespace, q.metric) for q in acme} == {
        ("AWS/SageMaker", "Invocations"),
        ("AWS/SageMaker", "ModelLatency"),
        ("/aws/sagemaker/InferenceComponents", "CPUUtilizationNormalized"),
        ("/aws/sagemaker/InferenceComponents", "MemoryUtilizationNormalized"),
        ("/aws/sagemaker/InferenceComponents", "GPUMemoryUtilizationNormalized"),
    }
    assert {q.dimensions for q in acme} == {(("InferenceComponentName", "tml-acme-intents"),)}
    # A dedicated endpoint on CPUs: traffic and utilization, no model loading, no GPU.
    dedicated = queries_for(EndpointSource(endpoint_id=3, endpoint_name="ded-x", mode="dedicated"))
    assert {q.metric for q in dedicated} == {
        "Invocations",
        "ModelLatency",
        "CPUUtilization",
        "MemoryUtilization",
    }


@pytest.fixture
def cloudwatch(dummy_aws_credentials):
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def put(client, namespace: str, metric: str, dimensions: dict, at: datetime, **value) -> None:
    client.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": at + timedelta(seconds=10),
                **value,
            }
        ],
    )


def test_the_minutes_put_into_cloudwatch_come_back_as_points(cloudwatch):
    variant = {"EndpointName": "tml-mme-a", "VariantName": "AllTraffic"}
    for back, hits in ((3, 8), (2, 9)):
        put(cloudwatch, "AWS/SageMaker", "Invocations", variant, minute_ago(back), Value=10.0)
        put(
            cloudwatch,
            "AWS/SageMaker",
            "ModelCacheHit",
            variant,
            minute_ago(back),
            StatisticValues={"SampleCount": 10, "Sum": hits, "Minimum": 0, "Maximum": 1},
        )
    put(
        cloudwatch,
        "AWS/SageMaker",
        "ModelLoadingWaitTime",
        variant,
        minute_ago(3),
        StatisticValues={"SampleCount": 2, "Sum": 5_000_000, "Minimum": 2e6, "Maximum": 3e6},
        Unit="Microseconds",
    )
    put(
        cloudwatch, "/aws/sagemaker/Endpoints", "LoadedModelCount", variant, minute_ago(2), Value=12
    )

    read = read_metrics(
        client=cloudwatch,
        sources=[mme(7, "tml-mme-a"), mme(8, "tml-mme-quiet")],
        start=minute_ago(10),
        end=minute_ago(0),
    )

    got = {(p.endpoint_id, p.metric, p.statistic, p.minute): (p.value, p.unit) for p in read.points}
    assert got == {
        (7, "Invocations", "Sum", minute_ago(3)): (10.0, "None"),
        (7, "Invocations", "Sum", minute_ago(2)): (10.0, "None"),
        (7, "ModelCacheHit", "Sum", minute_ago(3)): (8.0, "None"),
        (7, "ModelCacheHit", "SampleCount", minute_ago(3)): (10.0, "None"),
        (7, "ModelCacheHit", "Sum", minute_ago(2)): (9.0, "None"),
        (7, "ModelCacheHit", "SampleCount", minute_ago(2)): (10.0, "None"),
        (7, "ModelLoadingWaitTime", "Sum", minute_ago(3)): (5_000_000.0, "Microseconds"),
        (7, "ModelLoadingWaitTime", "SampleCount", minute_ago(3)): (2.0, "Microseconds"),
        (7, "LoadedModelCount", "Sum", minute_ago(2)): (12.0, "None"),
    }
    assert read.errors == {} and read.calls == 1


class CountingClient:
    """A real (moto) CloudWatch client that remembers the size of each GetMetricData call."""

    def __init__(self, client) -> None:
        self.client = client
        self.calls: list[int] = []

    def get_metric_data(self, **params):
        self.calls.append(len(params["MetricDataQueries"]))
        return self.client.get_metric_data(**params)


def test_more_than_500_queries_are_split_into_calls_of_at_most_500(cloudwatch):
    sources = [mme(number, f"tml-mme-{number}") for number in range(40)]
    assert sum(len(queries_for(s)) for s in sources) == 640
    for number in (0, 39):  # one endpoint in the first call, one in the second
        put(
            cloudwatch,
            "AWS/SageMaker",
            "Invocations",
            {"EndpointName": f"tml-mme-{number}", "VariantName": "AllTraffic"},
            minute_ago(2),
            Value=float(number + 1),
        )
    counting = CountingClient(cloudwatch)

    read = read_metrics(client=counting, sources=sources, start=minute_ago(5), end=minute_ago(0))

    assert counting.calls == [MAX_QUERIES_PER_CALL, 140]
    assert read.calls == 2
    assert {(p.endpoint_id, p.value) for p in read.points} == {(0, 1.0), (39, 40.0)}
    assert [len(b) for b in batches(list(range(1001)), size=500)] == [500, 500, 1]


def stubbed():
    client = boto3.client(
        "cloudwatch",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client, Stubber(client)


def answer(*results, token: str | None = None) -> dict:
    body = {"MetricDataResults": list(results), "Messages": []}
    if token:
        body["NextToken"] = token
    return body


def result(query_id: str, *values: tuple[datetime, float], status: str = "Complete") -> dict:
    return {
        "Id": query_id,
        "Label": query_id,
        "Timestamps": [at for at, _ in values],
        "Values": [value for _, value in values],
        "StatusCode": status,
    }


DEDICATED = EndpointSource(endpoint_id=1, endpoint_name="ded-one", mode="dedicated")
OTHER = EndpointSource(endpoint_id=2, endpoint_name="ded-two", mode="dedicated")
PER_DEDICATED = len(queries_for(DEDICATED))


def test_every_page_of_an_answer_is_read_and_throttling_is_retried():
    client, stub = stubbed()
    first = {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY}
    stub.add_client_error("get_metric_data", "Throttling", "Rate exceeded", 400)
    stub.add_response(
        "get_metric_data",
        answer(result("q0", (minute_ago(3), 4.0)), token="more"),
        {**first, "ScanBy": "TimestampAscending", "MaxDatapoints": 100_800},
    )
    stub.add_response(
        "get_metric_data",
        answer(result("q0", (minute_ago(2), 6.0))),
        {**first, "ScanBy": "TimestampAscending", "MaxDatapoints": 100_800, "NextToken": "more"},
    )
    pauses: list[float] = []

    with stub:
        read = read_metrics(
            client=client,
            sources=[DEDICATED],
            start=minute_ago(5),
            end=minute_ago(0),
            sleep=pauses.append,
        )
        stub.assert_no_pending_responses()

    assert [(p.minute, p.value) for p in read.points] == [
        (minute_ago(3), 4.0),
        (minute_ago(2), 6.0),
    ]
    assert read.calls == 3 and len(pauses) == 1 and read.errors == {}


def test_one_endpoints_refused_queries_never_stop_the_others_reads():
    client, stub = stubbed()
    # The shared call is refused: each endpoint is read on its own, and only one fails.
    stub.add_client_error(
        "get_metric_data", "InvalidParameterValue", "The value for dimension is invalid", 400
    )
    stub.add_client_error(
        "get_metric_data", "InvalidParameterValue", "The value for dimension is invalid", 400
    )
    stub.add_response("get_metric_data", answer(result("q0", (minute_ago(2), 3.0))))
    # A query AWS could not answer within a call names its endpoint; the others' points stay.
    stub.add_response(
        "get_metric_data",
        answer(
            result("q0", (minute_ago(2), 1.0)),
            result(f"q{PER_DEDICATED}", status="Forbidden"),
        ),
    )

    with stub:
        refused = read_metrics(
            client=client, sources=[DEDICATED, OTHER], start=minute_ago(5), end=minute_ago(0)
        )
        partial = read_metrics(
            client=client, sources=[DEDICATED, OTHER], start=minute_ago(5), end=minute_ago(0)
        )

    assert [(p.endpoint_id, p.value) for p in refused.points] == [(2, 3.0)]
    assert set(refused.errors) == {1}
    assert "InvalidParameterValue" in refused.errors[1]
    assert [(p.endpoint_id, p.value) for p in partial.points] == [(1, 1.0)]
    assert set(partial.errors) == {2} and "Forbidden" in partial.errors[2]
