"""The stand-in's ``sagemaker-runtime``: InvokeEndpoint routed to the Tritons the fleet runs.

A multi-model endpoint loads the TargetModel (``<ModelDataUrl><TargetModel>`` from S3) on the
instance a stable hash picks, unloading the least recently used model when that instance is at
its limit, then calls ``/models/<name>/invoke``; a dedicated endpoint and an inference
component's copy (the one with the fewest outstanding requests) answer at ``/invocations``.
Errors are the ones SageMaker gives: ValidationError before a model is reached, ModelError with
the container's status and message after. Each invocation is counted in the fleet's ``usage``
(``usage.py``) for the period's CloudWatch metrics and autoscaling: its latencies, its model's
status, on MMEs whether its model was loaded already and what loading it took, and for a
component with no copies a no-capacity failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass

from deployments.backends.local.process import TritonProcess
from deployments.sagemaker_standin.errors import ModelError, ValidationError
from deployments.sagemaker_standin.fleet import (
    DEDICATED,
    INFERENCE_COMPONENT,
    MAX_MODELS_ENV,
    MME,
    Component,
    Deployment,
    Endpoint,
    Fleet,
    Instance,
    stable_index,
    triton_model_name,
)
from deployments.sagemaker_standin.moto_state import MissingS3Object, unpack_archive
from deployments.sagemaker_standin.triton_image import TritonAnswer
from deployments.sagemaker_standin.usage import Trace

__all__ = ["Invocation", "InvocationAnswer", "invoke"]

logger = logging.getLogger(__name__)

# SageMaker gives up on a container that has not answered within 60 s.
INVOCATION_TIMEOUT_S = 60.0
# A model's load may run past one invocation's wait (SageMaker keeps loading for up to 360 s).
LOAD_TIMEOUT_S = 360.0


@dataclass(frozen=True)
class Invocation:
    """One InvokeEndpoint request, as the runtime receives it."""

    endpoint_name: str
    body: bytes
    content_type: str
    accept: str | None = None
    target_model: str | None = None
    inference_component: str | None = None


@dataclass(frozen=True)
class InvocationAnswer:
    """What InvokeEndpoint answers: the model's body, its content type, the variant."""

    body: bytes
    content_type: str
    variant_name: str


def _model_error(
    fleet: Fleet, endpoint_name: str, answer: TritonAnswer, what: str = "primary"
) -> ModelError:
    region = fleet.moto.region
    kind = "client" if 400 <= answer.status < 500 else "server"
    text = answer.text
    return ModelError(
        f'Received {kind} error ({answer.status}) from {what} with message "{text}". See '
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:"
        f"group=/aws/sagemaker/Endpoints/{endpoint_name} in account {fleet.moto.account_id} "
        "for more information.",
        original_status=answer.status,
        original_message=text,
        log_stream_arn=fleet.moto.log_stream_arn(endpoint_name),
    )


def _microseconds_since(started: float) -> float:
    return (time.perf_counter() - started) * 1_000_000


def _endpoint(fleet: Fleet, name: str) -> tuple[Endpoint, Deployment]:
    with fleet.lock:
        endpoint = fleet.endpoints.get(name)
        moto_endpoint = fleet.moto.endpoint(name)
    if endpoint is None or moto_endpoint is None or endpoint.deleting:
        raise ValidationError(f"Endpoint {name} of account {fleet.moto.account_id} not found.")
    deployment = endpoint.deployment
    if deployment is None:
        raise ValidationError(
            f"Endpoint {name} of account {fleet.moto.account_id} is not in service "
            f"(status {moto_endpoint.endpoint_status})."
        )
    return endpoint, deployment


def invoke(fleet: Fleet, request: Invocation) -> InvocationAnswer:
    """Answer one InvokeEndpoint request, counting it in the period's usage."""
    started = time.perf_counter()
    trace = Trace(endpoint_name=request.endpoint_name)
    try:
        return _route(fleet, request, trace)
    finally:
        fleet.usage.record(trace, total_us=_microseconds_since(started))


def _route(fleet: Fleet, request: Invocation, trace: Trace) -> InvocationAnswer:
    endpoint, deployment = _endpoint(fleet, request.endpoint_name)
    trace.variant_name = deployment.variant_name
    trace.instance_count = len(deployment.instances)
    if deployment.kind == INFERENCE_COMPONENT:
        if not request.inference_component:
            raise ValidationError(
                "Inference Component Name header is required for endpoints to which you plan "
                "to deploy inference components. Please include Inference Component Name "
                "header or consider using SageMaker models."
            )
        return _invoke_component(fleet, endpoint, deployment, request, trace)
    if request.inference_component:
        raise ValidationError(
            f"Endpoint {endpoint.name} has no inference components; do not send "
            "InferenceComponentName."
        )
    if deployment.kind == MME:
        if not request.target_model:
            raise ValidationError(
                "Target model header is required for multi-model endpoints "
                "(X-Amzn-SageMaker-Target-Model)."
            )
        return _invoke_multi_model(fleet, endpoint, deployment, request, trace)
    assert deployment.kind == DEDICATED
    if request.target_model:
        raise ValidationError(
            f"Endpoint {endpoint.name} is not a multi-model endpoint; TargetModel is not supported."
        )
    instances = [i for i in deployment.instances if i.process is not None]
    instance = instances[next(endpoint.round_robin) % len(instances)]
    return _forward(fleet, endpoint, deployment, instance.process, "/invocations", request, trace)


def _forward(
    fleet: Fleet,
    endpoint: Endpoint,
    deployment: Deployment,
    process: TritonProcess,
    path: str,
    request: Invocation,
    trace: Trace,
) -> InvocationAnswer:
    """Send the invocation's body to one Triton, as the container's model server does."""
    started = time.perf_counter()
    answer = fleet.image.request(
        process,
        "POST",
        path,
        body=request.body,
        content_type=request.content_type,
        accept=request.accept,
        timeout_s=INVOCATION_TIMEOUT_S,
    )
    trace.model_latency_us = _microseconds_since(started)
    trace.model_status = answer.status
    if answer.status != 200:
        raise _model_error(fleet, endpoint.name, answer)
    return InvocationAnswer(answer.body, answer.content_type, deployment.variant_name)


# -- multi-model ----------------------------------------------------------------------------


def _invoke_multi_model(
    fleet: Fleet,
    endpoint: Endpoint,
    deployment: Deployment,
    request: Invocation,
    trace: Trace,
) -> InvocationAnswer:
    target = request.target_model or ""
    instance = deployment.instances[stable_index(target, len(deployment.instances))]
    name = _ensure_loaded(fleet, endpoint, deployment, instance, target, trace)
    return _forward(
        fleet, endpoint, deployment, instance.process, f"/models/{name}/invoke", request, trace
    )


def _ensure_loaded(
    fleet: Fleet,
    endpoint: Endpoint,
    deployment: Deployment,
    instance: Instance,
    target: str,
    trace: Trace,
) -> str:
    started = time.perf_counter()
    with instance.lock:
        name = instance.models.get(target)
        if name is not None:
            instance.models.move_to_end(target)
            trace.cache_hit = True
            return name
        load_lock = instance.load_locks.setdefault(target, threading.Lock())
    # A miss: the request waits for the model (its own load or another request's).
    trace.cache_hit = False
    # One load per model per instance; other models keep serving meanwhile.
    with load_lock:
        with instance.lock:
            name = instance.models.get(target)
            if name is not None:
                instance.models.move_to_end(target)
                trace.loading_wait_us = _microseconds_since(started)
                return name
        name = _load(fleet, endpoint, deployment, instance, target, trace)
    trace.loading_wait_us = _microseconds_since(started)
    return name


def _load(
    fleet: Fleet,
    endpoint: Endpoint,
    deployment: Deployment,
    instance: Instance,
    target: str,
    trace: Trace,
) -> str:
    """Download, unpack and load ``target`` on the instance (its load lock held)."""
    downloading = time.perf_counter()
    url = deployment.container.get("ModelDataUrl", "") + target
    try:
        data = fleet.moto.read_s3(url)
    except MissingS3Object as error:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        raise ValidationError(
            f"Failed to download model data(bucket: {bucket}, key: {key}). Please ensure "
            "that there is an object located at the URL and that the role passed to "
            "CreateModel has permissions to download the model."
        ) from error
    name = triton_model_name(target)
    model_dir = instance.workdir / "models" / name
    shutil.rmtree(model_dir, ignore_errors=True)
    try:
        unpack_archive(data, model_dir)
    except Exception as error:
        trace.model_status = 500
        raise ModelError(
            f"Could not unpack {target}: {error}",
            original_status=500,
            original_message=f"Could not unpack {target}: {error}",
            log_stream_arn=fleet.moto.log_stream_arn(endpoint.name),
        ) from error
    trace.downloading_us = _microseconds_since(downloading)
    limit = fleet.mme_limits.for_instance(
        deployment.instance_type,
        (deployment.container.get("Environment") or {}).get(MAX_MODELS_ENV),
    )
    _evict_to(fleet, instance, limit - 1, trace)
    loading = time.perf_counter()
    answer = fleet.image.request(
        instance.process,
        "POST",
        "/models",
        body=json.dumps({"model_name": name, "url": str(model_dir)}).encode(),
        timeout_s=LOAD_TIMEOUT_S,
    )
    trace.loading_us = _microseconds_since(loading)
    if answer.status != 200:
        shutil.rmtree(model_dir, ignore_errors=True)
        reason = answer.text
        with contextlib.suppress(ValueError, AttributeError):
            reason = json.loads(answer.body).get("error", reason)
        # A model that cannot load is the container's failure, not the caller's request.
        trace.model_status = 500
        raise _model_error(
            fleet,
            endpoint.name,
            TritonAnswer(
                status=500,
                content_type="text/plain",
                body=f"Failed to load {target}: {reason}".encode(),
            ),
        )
    with instance.lock:
        instance.models[target] = name
        instance.models.move_to_end(target)
    logger.info("%s/%s loaded %s as %s", endpoint.name, instance.instance_id, target, name)
    return name


def _evict_to(fleet: Fleet, instance: Instance, keep: int, trace: Trace) -> None:
    """Unload least recently used models until at most ``keep`` stay loaded."""
    while True:
        with instance.lock:
            if len(instance.models) <= keep:
                return
            target, name = next(iter(instance.models.items()))
            del instance.models[target]
        unloading = time.perf_counter()
        fleet.image.request(instance.process, "DELETE", f"/models/{name}", timeout_s=60.0)
        trace.unloading_us.append(_microseconds_since(unloading))
        shutil.rmtree(instance.workdir / "models" / name, ignore_errors=True)
        logger.info("%s unloaded %s (least recently used)", instance.instance_id, target)


# -- inference components -------------------------------------------------------------------


def _invoke_component(
    fleet: Fleet,
    endpoint: Endpoint,
    deployment: Deployment,
    request: Invocation,
    trace: Trace,
) -> InvocationAnswer:
    name = request.inference_component or ""
    with fleet.lock:
        component: Component | None = fleet.components.get(name)
        if component is None or component.endpoint_name != endpoint.name:
            raise ValidationError(
                f"Inference Component {name} not found on endpoint {endpoint.name}."
            )
        trace.component_name = name
        live = [copy for copy in component.copies if copy.process is not None]
        if not live:
            # What NoCapacityInvocationFailures counts, and a scale-from-zero alarm watches.
            fleet.usage.no_capacity(name)
            raise ValidationError(
                "Inference Component has no capacity to process this request. "
                "ApproximateModelLoadTime: 0 seconds"
            )
        # Least outstanding requests, the routing the platform's endpoint configs ask for.
        copy = min(live, key=lambda candidate: candidate.outstanding)
        copy.outstanding += 1
    try:
        return _forward(fleet, endpoint, deployment, copy.process, "/invocations", request, trace)
    finally:
        with fleet.lock:
            copy.outstanding -= 1
