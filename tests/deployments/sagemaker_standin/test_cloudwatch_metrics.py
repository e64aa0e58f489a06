"""The stand-in publishes SageMaker's CloudWatch metrics for what it runs, read back with
GetMetricData as the platform reads them: AWS's namespaces, dimensions and units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.deployments.sagemaker_standin.helpers import (
    BUCKET,
    DOUBLING_ECHO,
    UPPER_CASE_ECHO,
    create_model,
    create_model_endpoint,
    invoke_text,
    make_bucket,
    upload_package,
    wait_endpoint,
    wait_for,
)

# Listed in the other order than the stand-in publishes them: CloudWatch matches them as a set.
VARIANT = [
    {"Name": "VariantName", "Value": "AllTraffic"},
    {"Name": "EndpointName", "Value": "mme"},
]


@pytest.fixture
def mme(clean_sagemaker_standin, tmp_path):
    """An in-service MME with two models in its S3 prefix."""
    standin = clean_sagemaker_standin
    s3, sagemaker = standin.client("s3"), standin.client("sagemaker")
    make_bucket(s3)
    upload_package(s3, tmp_path, "acme/upper.tar.gz", "upper", UPPER_CASE_ECHO)
    upload_package(s3, tmp_path, "acme/double.tar.gz", "double", DOUBLING_ECHO)
    create_model(sagemaker, "mme-model", f"s3://{BUCKET}/acme/", mode="MultiModel")
    create_model_endpoint(sagemaker, "mme", "mme-model")
    wait_endpoint(sagemaker, "mme", "InService")
    return standin, standin.client("sagemaker-runtime"), standin.client("cloudwatch")


def _query(query_id: str, namespace: str, name: str, stat: str, unit: str | None = None) -> dict:
    metric_stat = {
        "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": VARIANT},
        "Period": 3600,
        "Stat": stat,
    }
    if unit:
        metric_stat["Unit"] = unit
    return {"Id": query_id, "MetricStat": metric_stat}


QUERIES = [
    _query("invocations", "AWS/SageMaker", "Invocations", "Sum"),
    _query("per_instance", "AWS/SageMaker", "InvocationsPerInstance", "Sum"),
    _query("errors_4xx", "AWS/SageMaker", "Invocation4XXErrors", "Sum"),
    _query("latency", "AWS/SageMaker", "ModelLatency", "SampleCount", "Microseconds"),
    _query("latency_ms", "AWS/SageMaker", "ModelLatency", "SampleCount", "Milliseconds"),
    _query("overhead", "AWS/SageMaker", "OverheadLatency", "SampleCount", "Microseconds"),
    _query("hits", "AWS/SageMaker", "ModelCacheHit", "Average"),
    _query("loading", "AWS/SageMaker", "ModelLoadingTime", "SampleCount", "Microseconds"),
    _query("downloading", "AWS/SageMaker", "ModelDownloadingTime", "SampleCount", "Microseconds"),
    _query("waiting", "AWS/SageMaker", "ModelLoadingWaitTime", "Minimum", "Microseconds"),
    _query("unloading", "AWS/SageMaker", "ModelUnloadingTime", "SampleCount", "Microseconds"),
    _query("loaded", "/aws/sagemaker/Endpoints", "LoadedModelCount", "Maximum", "None"),
    _query("memory", "/aws/sagemaker/Endpoints", "MemoryUtilization", "Maximum", "Percent"),
    _query("cpu", "/aws/sagemaker/Endpoints", "CPUUtilization", "SampleCount", "Percent"),
]


def test_multi_model_endpoint_metrics_come_back_from_get_metric_data(mme):
    standin, runtime, cloudwatch = mme
    started = datetime.now(UTC)
    assert invoke_text(runtime, "mme", "a", TargetModel="upper.tar.gz") == "A"  # loads
    assert invoke_text(runtime, "mme", "b", TargetModel="upper.tar.gz") == "B"  # cache hit
    assert invoke_text(runtime, "mme", "c", TargetModel="double.tar.gz") == "cc"  # loads

    standin.set_clock(period_s=0.3)

    def figures() -> dict[str, float]:
        answer = cloudwatch.get_metric_data(
            MetricDataQueries=QUERIES,
            StartTime=started - timedelta(minutes=5),
            EndTime=datetime.now(UTC) + timedelta(minutes=5),
        )
        return {
            result["Id"]: sum(result["Values"])
            for result in answer["MetricDataResults"]
            if result["Values"]
        }

    found = wait_for(
        lambda: (f := figures()).get("invocations") == 3 and f.get("cpu") and f,
        what="the period's metrics",
    )
    assert found["per_instance"] == 3.0  # one instance: each invocation counts 1/1
    assert found["errors_4xx"] == 0.0
    assert found["latency"] == found["overhead"] == 3
    assert "latency_ms" not in found  # published in microseconds, not milliseconds
    assert found["hits"] == pytest.approx(1 / 3)
    assert found["loading"] == found["downloading"] == 2
    assert found["waiting"] > 0
    # Nothing was unloaded (an unload takes Triton seconds): no datapoint rather than a 0.
    assert "unloading" not in found
    assert found["loaded"] == 2
    assert 0 < found["memory"] < 100
