"""The stand-in's reads and writes of moto's in-memory AWS state.

moto keeps every resource in per-account, per-region backends in this process; the stand-in
reads models, endpoint configs, S3 objects, CloudWatch alarms and datapoints and Application Auto
Scaling targets and policies from them, and writes what moto cannot know itself (an endpoint's
real status, failure reason and instance counts, the metrics SageMaker publishes, the state of
the alarms it evaluates).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from moto.backends import get_backend
from moto.sagemaker.utils import arn_formatter

from deployments.sagemaker_standin.errors import ValidationException

__all__ = [
    "MissingS3Object",
    "MotoState",
    "teach_moto_component_scaling",
    "teach_moto_dimension_order",
    "unpack_archive",
]


class MissingS3Object(Exception):
    """The bucket or key an S3 URI names is not there."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def unpack_archive(data: bytes, destination: Path) -> Path:
    """Unpack a ``model.tar.gz`` under ``destination`` (refusing paths that climb out)."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        archive.extractall(destination, filter="data")
    return destination


class MotoState:
    """moto's backends for one account and region."""

    def __init__(self, *, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region

    @property
    def sagemaker(self) -> Any:
        return get_backend("sagemaker")[self.account_id][self.region]

    @property
    def s3(self) -> Any:
        return get_backend("s3")[self.account_id]["aws"]

    @property
    def cloudwatch(self) -> Any:
        return get_backend("cloudwatch")[self.account_id][self.region]

    @property
    def autoscaling(self) -> Any:
        return get_backend("applicationautoscaling")[self.account_id][self.region]

    def arn(self, kind: str, name: str) -> str:
        return arn_formatter(kind, name, self.account_id, self.region)

    def log_stream_arn(self, endpoint_name: str) -> str:
        return (
            f"arn:aws:logs:{self.region}:{self.account_id}:log-group:"
            f"/aws/sagemaker/Endpoints/{endpoint_name}"
        )

    # -- SageMaker ---------------------------------------------------------------------------

    def endpoint(self, name: str) -> Any | None:
        return self.sagemaker.endpoints.get(name)

    def endpoint_config(self, name: str) -> Any:
        config = self.sagemaker.endpoint_configs.get(name)
        if config is None:
            raise ValidationException(
                f"Could not find endpoint configuration '{self.arn('endpoint-config', name)}'."
            )
        return config

    def model_container(self, name: str) -> dict[str, Any]:
        """The primary container (image, mode, model data, environment) of a moto model."""
        model = self.sagemaker._models.get(name)
        if model is None:
            raise ValidationException(f"Could not find model '{self.arn('model', name)}'.")
        container = model.primary_container or (model.containers or [{}])[0]
        return dict(container or {})

    def set_endpoint_status(
        self, name: str, status: str, failure_reason: str | None = None
    ) -> None:
        endpoint = self.endpoint(name)
        if endpoint is not None:
            endpoint.endpoint_status = status
            endpoint.failure_reason = failure_reason

    def set_variant_counts(
        self, name: str, variant_name: str, *, current: int, desired: int
    ) -> None:
        endpoint = self.endpoint(name)
        if endpoint is None:
            return
        for variant in endpoint.production_variants:
            if variant.get("VariantName") == variant_name:
                variant["CurrentInstanceCount"] = current
                variant["DesiredInstanceCount"] = desired

    # -- S3 ----------------------------------------------------------------------------------

    def read_s3(self, uri: str) -> bytes:
        """The bytes of the S3 object at ``uri``; MissingS3Object when it is not there."""
        bucket, key = split_s3_uri(uri)
        try:
            found = self.s3.get_object(bucket, key)
        except Exception as error:  # moto's MissingBucket and friends share no useful base
            raise MissingS3Object(f"{uri}: {error}") from error
        if found is None:
            raise MissingS3Object(uri)
        return found.value

    # -- CloudWatch --------------------------------------------------------------------------

    def alarms_in_alarm(self, names: list[str]) -> list[str]:
        """Which of the named CloudWatch alarms are in the ALARM state now."""
        alarms = self.cloudwatch.alarms
        return [name for name in names if name in alarms and alarms[name].state_value == "ALARM"]

    def put_metric_data(self, namespace: str, metric_data: list[dict[str, Any]]) -> None:
        """Store datapoints as PutMetricData would (Timestamps are naive UTC, as moto's are)."""
        if metric_data:
            self.cloudwatch.put_metric_data(namespace, metric_data)

    def set_alarm_state(self, name: str, state: str, reason: str, reason_data: str) -> None:
        """Move an alarm to a new state, kept in its history as SetAlarmState does."""
        alarm = self.cloudwatch.alarms.get(name)
        if alarm is not None:
            alarm.update_state(reason, reason_data, state)


INFERENCE_COMPONENT_COPIES = "sagemaker:inference-component:DesiredCopyCount"


def teach_moto_component_scaling() -> None:
    """Let moto's Application Auto Scaling register inference components' copy counts.

    moto's list of scalable dimensions predates inference components, so it refuses
    ``sagemaker:inference-component:DesiredCopyCount`` (resource ``inference-component/<name>``)
    that AWS accepts; the enum it validates against is rebuilt with that dimension added.
    """
    from enum import Enum

    from moto.applicationautoscaling import models, responses

    if INFERENCE_COMPONENT_COPIES in {d.value for d in models.ScalableDimensionValueSet}:
        return
    members = {d.name: d.value for d in models.ScalableDimensionValueSet}
    members["SAGEMAKER_INFERENCE_COMPONENT_DESIRED_COPY_COUNT"] = INFERENCE_COMPONENT_COPIES
    extended = Enum("ScalableDimensionValueSet", members)
    models.ScalableDimensionValueSet = extended
    responses.ScalableDimensionValueSet = extended


def teach_moto_dimension_order() -> None:
    """Make moto's GetMetricData match dimensions whatever order a query lists them in.

    moto compares a query's dimensions with a datapoint's after sorting both, but its
    ``Dimension.__lt__`` compares a value with a name, so two lists of the same dimensions in
    different orders can sort differently and never match; CloudWatch matches them as a set.
    """
    from moto.cloudwatch import models

    def less_than(self: Any, other: Any) -> bool:
        return (self.name or "", self.value or "") < (other.name or "", other.value or "")

    models.Dimension.__lt__ = less_than  # type: ignore[method-assign]
