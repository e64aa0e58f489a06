"""Tiny python-backend models for the stand-in's tests, uploaded to its S3, and waiting helpers."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.triton_support import UPPER_CASE_ECHO, build_package, output_data, text_request

BUCKET = "standin-models"
ROLE_ARN = "arn:aws:iam::123456789012:role/standin"
IMAGE = "785573368785.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
_T = TypeVar("_T")

DOUBLING_ECHO = UPPER_CASE_ECHO.replace(
    "value.decode().upper().encode()", "(value.decode() * 2).encode()"
)
# What a platform model that brings no dependencies does on SageMaker's image.
NEEDS_ONNXRUNTIME = textwrap.dedent(
    """\
    import onnxruntime  # not on SageMaker's Triton image Python

    class TritonPythonModel:
        def execute(self, requests):
            return []
    """
)


def upload_package(s3: Any, tmp_path: Path, key: str, name: str, model_py: str) -> str:
    """Build ``<name>/config.pbtxt`` + ``<name>/1/model.py`` as a tarball at ``s3://BUCKET/key``."""
    directory = tmp_path / key.replace("/", "_")
    directory.mkdir(parents=True, exist_ok=True)
    package = build_package(directory, name, model_py)
    s3.upload_file(str(package.path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def make_bucket(s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET)


def invoke_text(runtime: Any, endpoint: str, text: str, **target: str) -> str:
    """Send one text through InvokeEndpoint; the model's one output text."""
    answer = runtime.invoke_endpoint(
        EndpointName=endpoint,
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps(text_request(text)).encode(),
        **target,
    )
    return output_data(json.loads(answer["Body"].read()))[0]


def wait_for(check: Callable[[], _T], *, timeout_s: float = 60.0, what: str = "") -> _T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def wait_endpoint(sagemaker: Any, name: str, *statuses: str) -> dict:
    """DescribeEndpoint once its status is one of ``statuses`` (default InService or Failed)."""
    wanted = statuses or ("InService", "Failed")
    return wait_for(
        lambda: (
            (d := sagemaker.describe_endpoint(EndpointName=name))["EndpointStatus"] in wanted and d
        ),
        what=f"endpoint {name} to be {wanted}",
    )


def wait_component(sagemaker: Any, name: str, *statuses: str) -> dict:
    wanted = statuses or ("InService", "Failed")
    return wait_for(
        lambda: (
            (d := sagemaker.describe_inference_component(InferenceComponentName=name))[
                "InferenceComponentStatus"
            ]
            in wanted
            and d
        ),
        what=f"component {name} to be {wanted}",
    )


def create_model(
    sagemaker: Any, name: str, url: str, *, mode: str = "SingleModel", environment=None
) -> None:
    container = {"Image": IMAGE, "Mode": mode, "ModelDataUrl": url}
    if environment:
        container["Environment"] = environment
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE_ARN, PrimaryContainer=container)


def create_model_endpoint(
    sagemaker: Any, name: str, model: str, *, instance_type: str = "ml.m5.large", count: int = 1
) -> None:
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InstanceType": instance_type,
                "InitialInstanceCount": count,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def create_component_endpoint(
    sagemaker: Any,
    name: str,
    *,
    instance_type: str = "ml.m5.large",
    count: int = 1,
    max_instances: int | None = None,
) -> None:
    variant: dict[str, Any] = {
        "VariantName": "AllTraffic",
        "InstanceType": instance_type,
        "InitialInstanceCount": count,
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }
    if max_instances is not None:
        variant["ManagedInstanceScaling"] = {
            "Status": "ENABLED",
            "MinInstanceCount": count,
            "MaxInstanceCount": max_instances,
        }
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ExecutionRoleArn=ROLE_ARN,
        ProductionVariants=[variant],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


__all__ = [
    "BUCKET",
    "DOUBLING_ECHO",
    "NEEDS_ONNXRUNTIME",
    "UPPER_CASE_ECHO",
    "create_component_endpoint",
    "create_model",
    "create_model_endpoint",
    "invoke_text",
    "make_bucket",
    "upload_package",
    "wait_component",
    "wait_endpoint",
    "wait_for",
]
