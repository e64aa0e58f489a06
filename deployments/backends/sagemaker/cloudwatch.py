"""SageMaker endpoints' CloudWatch metrics, read a minute at a time with GetMetricData.

This module owns which metrics the platform reads for a SageMaker endpoint and how: the
queries are built from plain values (``EndpointSource``), batched into as few GetMetricData
calls as the API allows, and the answers come back as plain points (``CloudMetricPoint``). It is
ORM-free; the backend says which endpoints and components to read and the CloudWatch pass
(``deployments.services.cloud_metrics``) stores what comes back.

AWS facts it relies on (SageMaker developer guide, "SageMaker AI metrics in Amazon CloudWatch";
CloudWatch API reference, GetMetricData):
- ``AWS/SageMaker``, dimensions ``EndpointName`` + ``VariantName``: ``Invocations`` (Sum),
  ``ModelLatency`` (Microseconds), and on multi-model endpoints the model loading metrics
  ``ModelLoadingWaitTime``, ``ModelLoadingTime``, ``ModelDownloadingTime``,
  ``ModelUnloadingTime`` (Microseconds) and ``ModelCacheHit`` (1 per request whose model was
  loaded, 0 otherwise: its Sum over its SampleCount is the hit rate). The same invocation
  metrics with the one dimension ``InferenceComponentName`` are an inference component's.
- ``/aws/sagemaker/Endpoints``, ``EndpointName`` + ``VariantName``: ``CPUUtilization``,
  ``MemoryUtilization``, ``GPUMemoryUtilization`` (Percent, per instance, averaged over the
  variant's instances; CPU and GPU figures are summed over cores and GPUs, so 400 % on four)
  and, on multi-model endpoints, ``LoadedModelCount`` (per instance; Sum = the whole variant).
- ``/aws/sagemaker/InferenceComponents``, ``InferenceComponentName``: each component's
  ``CPUUtilizationNormalized``, ``MemoryUtilizationNormalized`` and
  ``GPUMemoryUtilizationNormalized`` (0-100 % of what its copies reserve).
- Times are kept as Sum and SampleCount rather than Average, so any window's mean is the sum of
  its Sums over the sum of its SampleCounts, exact however the minutes are grouped.
- GetMetricData takes at most 500 queries per call and answers at most 100,800 datapoints, the
  rest behind ``NextToken``; each query's ``Id`` starts with a lower-case letter and is unique in
  its call. A query that failed says so in its ``StatusCode`` (``InternalError``,
  ``Forbidden``) while the others answer. Metrics are published each minute, some minutes late,
  so a pass re-reads the last minutes it read before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from config.aws import error_code, error_message, full_jitter, is_throttling
from deployments.backends.base import CloudMetricPoint, CloudMetrics

__all__ = [
    "CATALOG",
    "MAX_QUERIES_PER_CALL",
    "EndpointSource",
    "MetricQuery",
    "MetricSpec",
    "batches",
    "queries_for",
    "read_metrics",
]

logger = logging.getLogger(__name__)

# GetMetricData's own limits.
MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_ANSWER = 100_800
PERIOD_S = 60

INVOCATIONS_NAMESPACE = "AWS/SageMaker"
ENDPOINT_NAMESPACE = "/aws/sagemaker/Endpoints"
COMPONENT_NAMESPACE = "/aws/sagemaker/InferenceComponents"

MME = "mme"
INFERENCE_COMPONENT = "inference-component"
DEDICATED = "dedicated"
EVERY_MODE = frozenset({MME, INFERENCE_COMPONENT, DEDICATED})

VARIANT = "variant"
COMPONENT = "component"

MICROSECONDS = "Microseconds"
PERCENT = "Percent"
NONE = "None"
TIME_STATISTICS = ("Sum", "SampleCount")


@dataclass(frozen=True)
class MetricSpec:
    """One CloudWatch metric the platform reads: where it lives, which statistics, which unit."""

    namespace: str
    metric: str
    statistics: tuple[str, ...]
    unit: str
    level: str = VARIANT  # VARIANT: EndpointName + VariantName; COMPONENT: InferenceComponentName
    modes: frozenset[str] = EVERY_MODE
    gpu_only: bool = False


CATALOG: tuple[MetricSpec, ...] = (
    MetricSpec(INVOCATIONS_NAMESPACE, "Invocations", ("Sum",), NONE),
    MetricSpec(INVOCATIONS_NAMESPACE, "ModelLatency", TIME_STATISTICS, MICROSECONDS),
    *(
        MetricSpec(
            INVOCATIONS_NAMESPACE, name, TIME_STATISTICS, MICROSECONDS, modes=frozenset({MME})
        )
        for name in (
            "ModelLoadingWaitTime",
            "ModelLoadingTime",
            "ModelDownloadingTime",
            "ModelUnloadingTime",
        )
    ),
    MetricSpec(
        INVOCATIONS_NAMESPACE, "ModelCacheHit", ("Sum", "SampleCount"), NONE, modes=frozenset({MME})
    ),
    MetricSpec(ENDPOINT_NAMESPACE, "LoadedModelCount", ("Sum",), NONE, modes=frozenset({MME})),
    MetricSpec(ENDPOINT_NAMESPACE, "CPUUtilization", ("Average",), PERCENT),
    MetricSpec(ENDPOINT_NAMESPACE, "MemoryUtilization", ("Average",), PERCENT),
    MetricSpec(ENDPOINT_NAMESPACE, "GPUMemoryUtilization", ("Average",), PERCENT, gpu_only=True),
    # An inference component's own figures.
    MetricSpec(INVOCATIONS_NAMESPACE, "Invocations", ("Sum",), NONE, level=COMPONENT),
    MetricSpec(
        INVOCATIONS_NAMESPACE, "ModelLatency", TIME_STATISTICS, MICROSECONDS, level=COMPONENT
    ),
    MetricSpec(
        COMPONENT_NAMESPACE, "CPUUtilizationNormalized", ("Average",), PERCENT, level=COMPONENT
    ),
    MetricSpec(
        COMPONENT_NAMESPACE, "MemoryUtilizationNormalized", ("Average",), PERCENT, level=COMPONENT
    ),
    MetricSpec(
        COMPONENT_NAMESPACE,
        "GPUMemoryUtilizationNormalized",
        ("Average",),
        PERCENT,
        level=COMPONENT,
        gpu_only=True,
    ),
)


@dataclass(frozen=True)
class EndpointSource:
    """What to read for one endpoint: its name, mode, variant, inference components and
    whether its instances have GPUs (GPU figures are read only where there are GPUs)."""

    endpoint_id: int
    endpoint_name: str
    mode: str
    variant_name: str = "AllTraffic"
    components: tuple[str, ...] = ()
    gpu: bool = False


@dataclass(frozen=True)
class MetricQuery:
    """One statistic of one metric of one endpoint variant or inference component."""

    endpoint_id: int
    component: str
    namespace: str
    metric: str
    statistic: str
    unit: str
    dimensions: tuple[tuple[str, str], ...]

    def as_request(self, query_id: str) -> dict[str, Any]:
        """The query as GetMetricData takes it (no Unit filter: AWS publishes each metric in
        one unit, and a filter would hide a datapoint sent without one)."""
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.metric,
                    "Dimensions": [
                        {"Name": name, "Value": value} for name, value in self.dimensions
                    ],
                },
                "Period": PERIOD_S,
                "Stat": self.statistic,
            },
            "ReturnData": True,
        }


def queries_for(source: EndpointSource) -> list[MetricQuery]:
    """Every query the endpoint's mode and hardware call for, its variant's then each
    component's."""
    variant = (("EndpointName", source.endpoint_name), ("VariantName", source.variant_name))
    components = source.components if source.mode == INFERENCE_COMPONENT else ()
    targets = [("", VARIANT, variant)] + [
        (name, COMPONENT, (("InferenceComponentName", name),)) for name in components
    ]
    queries = []
    for component, level, dimensions in targets:
        for spec in CATALOG:
            if spec.level != level or source.mode not in spec.modes:
                continue
            if spec.gpu_only and not source.gpu:
                continue
            queries.extend(
                MetricQuery(
                    endpoint_id=source.endpoint_id,
                    component=component,
                    namespace=spec.namespace,
                    metric=spec.metric,
                    statistic=statistic,
                    unit=spec.unit,
                    dimensions=dimensions,
                )
                for statistic in spec.statistics
            )
    return queries


def batches(
    queries: Sequence[MetricQuery], *, size: int = MAX_QUERIES_PER_CALL
) -> list[list[MetricQuery]]:
    """The queries in calls of at most ``size`` (GetMetricData's limit), in order."""
    return [list(queries[at : at + size]) for at in range(0, len(queries), size)]


@dataclass
class _Caller:
    """GetMetricData through one client, throttling retried with backoff and full jitter."""

    client: Any
    max_retries: int = 4
    base_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    calls: int = 0

    def get_metric_data(self, **params: Any) -> dict[str, Any]:
        attempt = 0
        while True:
            self.calls += 1
            try:
                return self.client.get_metric_data(**params)
            except ClientError as error:
                if not is_throttling(error) or attempt >= self.max_retries:
                    raise
            self.sleep(full_jitter(min(self.max_backoff_s, self.base_backoff_s * 2**attempt)))
            attempt += 1


@dataclass
class _Answer:
    points: list[CloudMetricPoint] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


def _minute(timestamp: datetime) -> datetime:
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return timestamp.astimezone(UTC).replace(second=0, microsecond=0)


def _why(error: ClientError | BotoCoreError) -> str:
    if isinstance(error, ClientError):
        code = error_code(error)
        return f"GetMetricData: {code + ': ' if code else ''}{error_message(error)}"[:500]
    return f"GetMetricData: {error}"[:500]


def _read_batch(
    caller: _Caller, batch: Sequence[MetricQuery], *, start: datetime, end: datetime
) -> _Answer:
    """One batch of queries, every page of its answer; raises what the call raised."""
    answer = _Answer()
    requests = [query.as_request(f"q{index}") for index, query in enumerate(batch)]
    token: str | None = None
    while True:
        page = caller.get_metric_data(
            MetricDataQueries=requests,
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
            MaxDatapoints=MAX_DATAPOINTS_PER_ANSWER,
            **({"NextToken": token} if token else {}),
        )
        for result in page.get("MetricDataResults") or []:
            query = batch[int(result["Id"][1:])]
            for timestamp, value in zip(
                result.get("Timestamps") or [], result.get("Values") or [], strict=False
            ):
                answer.points.append(
                    CloudMetricPoint(
                        endpoint_id=query.endpoint_id,
                        component=query.component,
                        metric=query.metric,
                        statistic=query.statistic,
                        minute=_minute(timestamp),
                        value=float(value),
                        unit=query.unit,
                    )
                )
            status = result.get("StatusCode", "Complete")
            if status not in ("Complete", "PartialData"):
                where = f"{query.component} " if query.component else ""
                answer.errors.setdefault(
                    query.endpoint_id,
                    f"GetMetricData: {where}{query.metric} {query.statistic}: {status}",
                )
        token = page.get("NextToken")
        if not token:
            return answer


def read_metrics(
    *,
    client: Any,
    sources: Iterable[EndpointSource],
    start: datetime,
    end: datetime,
    batch_size: int = MAX_QUERIES_PER_CALL,
    sleep: Callable[[float], None] = time.sleep,
) -> CloudMetrics:
    """Every minute from ``start`` (inclusive) to ``end`` (exclusive) of the sources' metrics.

    Queries go out in calls of at most ``batch_size``; a call AWS refuses is made again one
    endpoint at a time, so an endpoint whose queries AWS rejects is an error of its own and
    never the end of the others' reads. Throttling is retried with backoff first.
    """
    caller = _Caller(client=client, sleep=sleep)
    start, end = _minute(start), _minute(end)
    result = CloudMetrics()
    if end <= start:
        return result
    queries = [query for source in sources for query in queries_for(source)]
    for batch in batches(queries, size=batch_size):
        try:
            answer = _read_batch(caller, batch, start=start, end=end)
        except (ClientError, BotoCoreError) as error:
            endpoints = list(dict.fromkeys(query.endpoint_id for query in batch))
            if len(endpoints) == 1 or (isinstance(error, ClientError) and is_throttling(error)):
                # Throttled after every retry: the next pass reads these minutes again.
                logger.warning("Reading CloudWatch metrics failed: %s", _why(error))
                answer = _Answer(errors=dict.fromkeys(endpoints, _why(error)))
            else:
                answer = _read_one_by_one(caller, batch, endpoints, start=start, end=end)
        result.points.extend(answer.points)
        for endpoint_id, why in answer.errors.items():
            result.errors.setdefault(endpoint_id, why)
    result.calls = caller.calls
    return result


def _read_one_by_one(
    caller: _Caller,
    batch: Sequence[MetricQuery],
    endpoints: Sequence[int],
    *,
    start: datetime,
    end: datetime,
) -> _Answer:
    answer = _Answer()
    for endpoint_id in endpoints:
        own = [query for query in batch if query.endpoint_id == endpoint_id]
        try:
            read = _read_batch(caller, own, start=start, end=end)
        except (ClientError, BotoCoreError) as error:
            logger.warning("Reading CloudWatch metrics of one endpoint failed: %s", _why(error))
            answer.errors[endpoint_id] = _why(error)
            continue
        answer.points.extend(read.points)
        answer.errors.update(read.errors)
    return answer
