"""SageMaker serving backend: endpoints, the models on them and their autoscaling, with boto3.

This module owns every call the platform makes to SageMaker hosting (models, endpoint configs,
endpoints, inference components), to the SageMaker runtime (invocations), to Application Auto
Scaling (scaling targets and policies) and to the S3 prefix a multi-model endpoint (MME) loads
its models from. It is ORM-free: plain dataclasses in (``EndpointRequest``), plain dataclasses
out (``EndpointState``, ``ComponentState``), so services decide what to store.

AWS facts it relies on:
- Three ways to serve. MME: one model with ``Mode=MultiModel`` whose ``ModelDataUrl`` is an S3
  prefix; every ``*.tar.gz`` under it is loadable by ``TargetModel`` (its key relative to the
  prefix), loaded on first call and cached by that name, so a new version needs a new key.
  Dedicated: ``Mode=SingleModel`` with one ``model.tar.gz``. Inference components (IC): the
  endpoint config has an ``ExecutionRoleArn`` and a variant without ``ModelName``; each model is
  then its own component with reserved memory, accelerators and CPU cores and a copy count
  (0 copies = scaled to zero, the instances stay).
- Names of models, endpoint configs and endpoints are unique per account and region; creating
  one that exists answers ``ValidationException`` "Cannot create already existing ...", so names
  here are deterministic and such an answer means "describe it instead".
- Hosting APIs are rate limited per account; botocore's standard retries (``config.aws``) take
  transient errors, and throttling that outlasts them is retried here with exponential backoff
  and full jitter.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from config.aws import (
    TRITON_INFERENCE_ACCOUNTS,
    ecr_image_uri,
    error_code,
    error_message,
    full_jitter,
    is_throttling,
)
from config.aws import client as aws_client
from config.errors import DomainError
from deployments.exceptions import InvalidInferenceInput, UpstreamError

__all__ = [
    "DEFAULT_TRITON_VERSION",
    "DEFAULT_VARIANT",
    "ComponentHasNoCopies",
    "ComponentState",
    "EndpointBackendError",
    "EndpointFailed",
    "EndpointMode",
    "EndpointNotReady",
    "EndpointRequest",
    "EndpointState",
    "EndpointThrottled",
    "InvalidEndpointRequest",
    "InvocationRejected",
    "RetiredEndpoint",
    "SageMakerEndpointBackend",
    "TritonImageUnavailable",
    "VariantState",
    "triton_image_uri",
]

EndpointMode = Literal["mme", "inference-component", "dedicated"]

DEFAULT_VARIANT = "AllTraffic"
DEFAULT_TRITON_VERSION = "24.09"
PLATFORM_TAG = "tenantml"

_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# Domain errors
# ---------------------------------------------------------------------------------------------


class EndpointBackendError(DomainError):
    """SageMaker, Application Auto Scaling or S3 refused a request; the message is AWS's own."""

    status_code = 502
    code = "endpoint_backend_error"


class EndpointThrottled(DomainError):
    """AWS kept throttling a request after every retry; retrying later will work."""

    status_code = 503
    code = "endpoint_throttled"


class EndpointFailed(DomainError):
    """The endpoint (or inference component) ended up Failed; ``failure_reason`` says why."""

    status_code = 502
    code = "endpoint_failed"

    def __init__(self, message: str, *, name: str, failure_reason: str) -> None:
        super().__init__(message)
        self.name = name
        self.failure_reason = failure_reason


class EndpointNotReady(DomainError):
    """The endpoint (or component) did not reach InService within the wait; it may still."""

    status_code = 503
    code = "endpoint_not_ready"


class InvalidEndpointRequest(DomainError):
    """An endpoint request that SageMaker would reject (missing image, prefix or role)."""

    status_code = 400
    code = "invalid_endpoint_request"


class InvocationRejected(DomainError):
    """SageMaker refused the invocation before it reached the model (unknown endpoint,
    missing model package, missing component name)."""

    status_code = 400
    code = "invocation_rejected"


class ComponentHasNoCopies(DomainError):
    """The runtime refused an invocation because the inference component runs no copy (it was
    scaled to zero); ``approximate_load_s`` is SageMaker's own estimate of a copy's start, or
    None when it gave none."""

    status_code = 503
    code = "no_capacity"

    def __init__(self, message: str, *, approximate_load_s: float | None = None) -> None:
        super().__init__(message)
        self.approximate_load_s = approximate_load_s


class TritonImageUnavailable(DomainError):
    """No SageMaker Triton image is known for the requested region or version."""

    status_code = 400
    code = "triton_image_unavailable"


# ---------------------------------------------------------------------------------------------
# Triton image URIs
# ---------------------------------------------------------------------------------------------

_TRITON_VERSION = re.compile(r"^(\d{2})\.(\d{2})(?:-py3)?$")
# Versions before 23.12 were published from other, per-region accounts this table does not hold.
_OLDEST_TRITON_VERSION = (23, 12)


def triton_image_uri(region: str, version: str = DEFAULT_TRITON_VERSION) -> str:
    """The SageMaker Triton inference image for ``region`` and a ``YY.MM`` release (no network)."""
    account = TRITON_INFERENCE_ACCOUNTS.get(region)
    if account is None:
        raise TritonImageUnavailable(
            f"No SageMaker Triton image is known for region {region!r}; "
            f"known regions: {', '.join(sorted(TRITON_INFERENCE_ACCOUNTS))}."
        )
    match = _TRITON_VERSION.match(version)
    if match is None:
        raise TritonImageUnavailable(
            f"Triton version {version!r} is not a release name; use YY.MM, e.g. "
            f"{DEFAULT_TRITON_VERSION}."
        )
    if (int(match[1]), int(match[2])) < _OLDEST_TRITON_VERSION:
        raise TritonImageUnavailable(
            f"SageMaker Triton {version} predates 23.12; use 23.12 or newer "
            f"(e.g. {DEFAULT_TRITON_VERSION})."
        )
    return ecr_image_uri(
        account=account,
        region=region,
        repository="sagemaker-tritonserver",
        tag=f"{match[1]}.{match[2]}-py3",
    )


# ---------------------------------------------------------------------------------------------
# Values in and out
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointRequest:
    """Everything needed to create one endpoint in one of the three serving modes.

    ``model_data_prefix`` (``s3://bucket/prefix/``) is for MME, ``model_data_url`` (a
    ``model.tar.gz``) for dedicated; inference-component endpoints hold no model of their own
    and may set ``min_instances``/``max_instances`` for SageMaker's managed instance scaling.
    """

    name: str
    mode: EndpointMode
    instance_type: str
    role_arn: str
    instance_count: int = 1
    image_uri: str = ""
    model_data_prefix: str = ""
    model_data_url: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    variant_name: str = DEFAULT_VARIANT
    min_instances: int | None = None
    max_instances: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The SageMaker model this endpoint serves (none for inference-component endpoints)."""
        return endpoint_model_name(self.name)

    def validate(self) -> None:
        """Raise ``InvalidEndpointRequest`` for what SageMaker would refuse later, slower."""
        if self.mode not in ("mme", "inference-component", "dedicated"):
            raise InvalidEndpointRequest(
                f"Unknown serving mode {self.mode!r}; use mme, inference-component or dedicated.",
                field="mode",
            )
        if not self.role_arn:
            raise InvalidEndpointRequest("An execution role ARN is required.", field="role_arn")
        if self.instance_count < 1:
            raise InvalidEndpointRequest(
                "An endpoint needs at least one instance.", field="instance_count"
            )
        if self.mode != "inference-component" and not self.image_uri:
            raise InvalidEndpointRequest(
                f"A {self.mode} endpoint needs a container image; see triton_image_uri().",
                field="image_uri",
            )
        if self.mode == "mme" and not self.model_data_prefix.startswith("s3://"):
            raise InvalidEndpointRequest(
                "A multi-model endpoint needs model_data_prefix as s3://bucket/prefix/.",
                field="model_data_prefix",
            )
        if self.mode == "dedicated" and not self.model_data_url.startswith("s3://"):
            raise InvalidEndpointRequest(
                "A dedicated endpoint needs model_data_url as s3://bucket/key/model.tar.gz.",
                field="model_data_url",
            )


@dataclass(frozen=True)
class VariantState:
    """One production variant of an endpoint and its instance counts."""

    name: str
    current_instance_count: int | None
    desired_instance_count: int | None


@dataclass(frozen=True)
class EndpointState:
    """What DescribeEndpoint says about one endpoint."""

    name: str
    arn: str
    status: str
    failure_reason: str = ""
    config_name: str = ""
    variants: tuple[VariantState, ...] = ()

    @property
    def is_in_service(self) -> bool:
        return self.status == "InService"


@dataclass(frozen=True)
class ComponentState:
    """What DescribeInferenceComponent says about one inference component."""

    name: str
    arn: str
    status: str
    endpoint_name: str
    variant_name: str
    model_name: str
    desired_copies: int | None
    current_copies: int | None
    failure_reason: str = ""

    @property
    def is_in_service(self) -> bool:
        return self.status == "InService"


@dataclass(frozen=True)
class RetiredEndpoint:
    """The resources ``retire_endpoint`` deleted (names only; already-missing ones omitted)."""

    endpoint: str | None
    inference_components: tuple[str, ...]
    endpoint_configs: tuple[str, ...]
    models: tuple[str, ...]
    alarms: tuple[str, ...] = ()


def endpoint_model_name(endpoint_name: str) -> str:
    """The deterministic SageMaker model name of an MME or dedicated endpoint."""
    return f"{endpoint_name}-model"


def endpoint_config_name(endpoint_name: str, generation: int) -> str:
    """The deterministic endpoint config name for the n-th configuration of an endpoint."""
    return f"{endpoint_name}-config-{generation}"


def component_alarm_name(component_name: str) -> str:
    """The CloudWatch alarm on a component's 5xx errors (what its rolling updates watch)."""
    return f"{component_name}-invocation-5xx"


def no_capacity_alarm_name(component_name: str) -> str:
    """The CloudWatch alarm on a component's NoCapacityInvocationFailures: its action is the
    step policy that brings a component scaled to zero back to one copy."""
    return f"{component_name}-no-capacity"


def component_alarm_names(component_name: str) -> tuple[str, ...]:
    """Every CloudWatch alarm the platform keeps for one component."""
    return (component_alarm_name(component_name), no_capacity_alarm_name(component_name))


def config_owner(config_name: str) -> str:
    """The endpoint an ``<endpoint>-config-<n>`` config belongs to ("" for another name)."""
    match = re.fullmatch(r"(.+)-config-\d+", config_name)
    return match[1] if match else ""


def component_model_name(component_name: str) -> str:
    """The deterministic SageMaker model name behind one inference component."""
    return f"{component_name}-model"


def _endpoint_state(description: Mapping[str, Any]) -> EndpointState:
    return EndpointState(
        name=description["EndpointName"],
        arn=description.get("EndpointArn", ""),
        status=description.get("EndpointStatus", ""),
        failure_reason=description.get("FailureReason", "") or "",
        config_name=description.get("EndpointConfigName", ""),
        variants=tuple(
            VariantState(
                name=variant["VariantName"],
                current_instance_count=variant.get("CurrentInstanceCount"),
                desired_instance_count=variant.get("DesiredInstanceCount"),
            )
            for variant in description.get("ProductionVariants") or []
        ),
    )


def _component_state(description: Mapping[str, Any]) -> ComponentState:
    runtime = description.get("RuntimeConfig") or {}
    return ComponentState(
        name=description["InferenceComponentName"],
        arn=description.get("InferenceComponentArn", ""),
        status=description.get("InferenceComponentStatus", ""),
        endpoint_name=description.get("EndpointName", ""),
        variant_name=description.get("VariantName", ""),
        model_name=(description.get("Specification") or {}).get("ModelName", ""),
        desired_copies=runtime.get("DesiredCopyCount"),
        current_copies=runtime.get("CurrentCopyCount"),
        failure_reason=description.get("FailureReason", "") or "",
    )


# ---------------------------------------------------------------------------------------------
# Error classification
# ---------------------------------------------------------------------------------------------


def _is_already_exists(error: ClientError) -> bool:
    code = error_code(error)
    if code in ("ResourceInUse", "ResourceInUseException"):
        return True
    # SageMaker answers a duplicate name with "Cannot create already existing model ...".
    return code == "ValidationException" and "already exist" in error_message(error).lower()


def _is_not_found(error: ClientError) -> bool:
    code = error_code(error)
    if code in ("ResourceNotFound", "ObjectNotFoundException", "NoSuchKey", "404"):
        return True
    message = error_message(error).lower()
    # SageMaker says "Could not find endpoint ..."; Application Auto Scaling (and moto) say
    # "No scalable target found ..." or "No scaling policy found ..." for what was never put.
    return code == "ValidationException" and any(
        phrase in message
        for phrase in (
            "could not find",
            "does not exist",
            "not found",
            "no scalable target",
            "no scaling policy",
        )
    )


def _api_name(operation: str) -> str:
    """``create_endpoint_config`` -> ``CreateEndpointConfig``, the name AWS documents."""
    if "_" not in operation:
        return operation
    return "".join(part.capitalize() for part in operation.split("_"))


def _backend_error(operation: str, error: ClientError | BotoCoreError) -> EndpointBackendError:
    operation = _api_name(operation)
    if isinstance(error, ClientError):
        return EndpointBackendError(
            f"{operation} failed ({error_code(error) or 'error'}): {error_message(error)}"
        )
    return EndpointBackendError(f"{operation} failed: {error}")


def _waiter_error_code(error: WaiterError) -> str:
    return ((error.last_response or {}).get("Error") or {}).get("Code", "")


def _waiter_throttled(error: WaiterError) -> bool:
    response = error.last_response or {}
    # A throttled describe ends botocore's waiter at once ("An error occurred"); judge it by the
    # same rule as any other throttled call.
    return "Error" in response and is_throttling(ClientError(response, "DescribeEndpoint"))


def _split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise InvalidEndpointRequest(f"{uri!r} is not an s3:// URI.")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise InvalidEndpointRequest(f"{uri!r} names no bucket.")
    return bucket, key


def _clean_target_model(target_model: str) -> str:
    key = target_model.strip()
    parts = key.split("/")
    # TargetModel is a key relative to the endpoint's prefix; anything that could climb out
    # of the prefix or collapse to an empty segment is refused rather than normalised.
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidEndpointRequest(
            f"Target model {target_model!r} must be a relative key such as "
            "'<tenant>/<model>/v3.tar.gz'.",
            field="target_model",
        )
    if not key.endswith(".tar.gz"):
        raise InvalidEndpointRequest(
            f"Target model {target_model!r} must end in .tar.gz; multi-model endpoints only "
            "load compressed tarballs.",
            field="target_model",
        )
    return key


def _tags(extra: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    tags = {**dict(extra or {}), "platform": PLATFORM_TAG}
    return [{"Key": key, "Value": value} for key, value in tags.items()]


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


class SageMakerEndpointBackend:
    """Creates, updates, scales, invokes and retires SageMaker endpoints serving Triton."""

    def __init__(
        self,
        *,
        region: str | None = None,
        sagemaker_client: Any | None = None,
        runtime_client: Any | None = None,
        autoscaling_client: Any | None = None,
        s3_client: Any | None = None,
        cloudwatch_client: Any | None = None,
        max_retries: int = 6,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float], float] = full_jitter,
    ) -> None:
        given = sagemaker_client or runtime_client or autoscaling_client or s3_client
        self.region = region or (given.meta.region_name if given is not None else None)
        self._clients: dict[str, Any] = {
            name: client
            for name, client in (
                ("sagemaker", sagemaker_client),
                ("sagemaker-runtime", runtime_client),
                ("application-autoscaling", autoscaling_client),
                ("s3", s3_client),
                ("cloudwatch", cloudwatch_client),
            )
            if client is not None
        }
        self._client_lock = threading.Lock()
        self.max_retries = max_retries
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._jitter = jitter

    # -- clients -----------------------------------------------------------------------------

    def _client(self, service: str) -> Any:
        with self._client_lock:
            if service not in self._clients:
                # botocore retries transient errors; ``_retrying`` takes throttling beyond them.
                self._clients[service] = aws_client(service, region=self.region)
            return self._clients[service]

    @property
    def sagemaker(self) -> Any:
        return self._client("sagemaker")

    @property
    def runtime(self) -> Any:
        return self._client("sagemaker-runtime")

    @property
    def autoscaling(self) -> Any:
        return self._client("application-autoscaling")

    @property
    def s3(self) -> Any:
        return self._client("s3")

    # -- the one retry loop ------------------------------------------------------------------

    def _retrying(self, operation: str, attempt_once: Callable[[], _T]) -> _T:
        """Run one AWS call (or waiter), retrying throttling with backoff and full jitter."""
        attempt = 0
        while True:
            try:
                return attempt_once()
            except ClientError as error:
                if not is_throttling(error):
                    raise
                last: Exception = error
            except WaiterError as error:
                if not _waiter_throttled(error):
                    raise
                last = error
            if attempt >= self.max_retries:
                raise EndpointThrottled(
                    f"AWS is throttling {_api_name(operation)} (tried {attempt + 1} times); "
                    "retry in a minute or raise the account's request quota."
                ) from last
            ceiling = min(self.max_backoff_s, self.base_backoff_s * (2**attempt))
            self._sleep(self._jitter(ceiling))
            attempt += 1

    def _call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """One API call through the retry loop; non-throttling ``ClientError`` propagates."""
        method = getattr(self._client(service), operation)
        return self._retrying(operation, lambda: method(**params))

    def _api(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """One API call through the retry loop, any refusal turned into a domain error."""
        try:
            return self._call(service, operation, **params)
        except (ClientError, BotoCoreError) as error:
            raise _backend_error(operation, error) from error

    def _create_or_existing(self, operation: str, **params: Any) -> bool:
        """Create a named resource; False when it already existed (a retry, a race)."""
        try:
            self._call("sagemaker", operation, **params)
        except ClientError as error:
            if _is_already_exists(error):
                return False
            raise _backend_error(operation, error) from error
        except BotoCoreError as error:
            raise _backend_error(operation, error) from error
        return True

    def _delete_if_present(self, service: str, operation: str, **params: Any) -> bool:
        """Delete a resource; False when it was already gone."""
        try:
            self._call(service, operation, **params)
        except ClientError as error:
            if _is_not_found(error):
                return False
            raise _backend_error(operation, error) from error
        except BotoCoreError as error:
            raise _backend_error(operation, error) from error
        return True

    # -- endpoints ---------------------------------------------------------------------------

    def describe_endpoint(self, name: str) -> EndpointState | None:
        """The endpoint's current state, or None when no endpoint has that name."""
        description = self._describe_endpoint_raw(name)
        return None if description is None else _endpoint_state(description)

    def ensure_endpoint(self, request: EndpointRequest) -> EndpointState:
        """Create the endpoint with its model and config, or describe the one already there."""
        request.validate()
        existing = self.describe_endpoint(request.name)
        if existing is not None:
            # Idempotent: an endpoint under this name is this request's endpoint (names are
            # derived from the platform's ids); changes go through update_endpoint.
            return existing
        if request.mode != "inference-component":
            self._create_or_existing(
                "create_model",
                ModelName=request.model_name,
                ExecutionRoleArn=request.role_arn,
                PrimaryContainer=self._primary_container(request),
                Tags=_tags(request.tags),
            )
        config_name = endpoint_config_name(request.name, 1)
        self._create_or_existing(
            "create_endpoint_config", **self._endpoint_config_params(request, config_name)
        )
        try:
            response = self._call(
                "sagemaker",
                "create_endpoint",
                EndpointName=request.name,
                EndpointConfigName=config_name,
                Tags=_tags(request.tags),
            )
        except ClientError as error:
            if not _is_already_exists(error):
                raise _backend_error("CreateEndpoint", error) from error
            state = self.describe_endpoint(request.name)
            if state is None:
                raise _backend_error("CreateEndpoint", error) from error
            return state
        except BotoCoreError as error:
            raise _backend_error("CreateEndpoint", error) from error
        return EndpointState(
            name=request.name,
            arn=response["EndpointArn"],
            status="Creating",
            config_name=config_name,
        )

    def wait_in_service(
        self, name: str, *, delay_s: float = 30, max_attempts: int = 120
    ) -> EndpointState:
        """Block until the endpoint is InService; ``EndpointFailed`` carries its FailureReason."""
        waiter = self.sagemaker.get_waiter("endpoint_in_service")
        config = {"Delay": delay_s, "MaxAttempts": max_attempts}
        try:
            self._retrying(
                "DescribeEndpoint",
                lambda: waiter.wait(EndpointName=name, WaiterConfig=config),
            )
        except WaiterError as error:
            response = error.last_response or {}
            if response.get("EndpointStatus") == "Failed":
                reason = response.get("FailureReason") or "SageMaker gave no reason"
                raise EndpointFailed(
                    f"Endpoint {name} failed: {reason}", name=name, failure_reason=reason
                ) from error
            if _waiter_error_code(error):
                raise EndpointBackendError(
                    f"DescribeEndpoint failed ({_waiter_error_code(error)}): "
                    f"{response['Error'].get('Message', '')}"
                ) from error
            status = response.get("EndpointStatus", "unknown")
            raise EndpointNotReady(
                f"Endpoint {name} is still {status} after {max_attempts} checks; "
                "wait longer or look at its CloudWatch logs."
            ) from error
        state = self.describe_endpoint(name)
        if state is None:
            raise EndpointBackendError(f"Endpoint {name} disappeared right after InService.")
        return state

    def update_endpoint(
        self,
        name: str,
        *,
        instance_count: int | None = None,
        instance_type: str | None = None,
        variant_name: str | None = None,
        wait: bool = True,
        delay_s: float = 30,
        max_attempts: int = 120,
    ) -> EndpointState:
        """Roll the endpoint onto a new config with the given variant changes (then wait)."""
        if instance_count is not None and instance_count < 1:
            raise InvalidEndpointRequest(
                "An endpoint needs at least one instance; scale components to zero instead.",
                field="instance_count",
            )
        current = self._describe_endpoint_raw(name)
        if current is None:
            raise EndpointBackendError(f"Endpoint {name} does not exist; create it first.")
        old_config_name = current["EndpointConfigName"]
        old_config = self._api(
            "sagemaker", "describe_endpoint_config", EndpointConfigName=old_config_name
        )
        params = self._config_params_from_description(old_config)
        variants = params["ProductionVariants"]
        target = variant_name or variants[0]["VariantName"]
        if not any(variant["VariantName"] == target for variant in variants):
            raise InvalidEndpointRequest(
                f"Endpoint {name} has no variant {target!r}.", field="variant_name"
            )
        for variant in variants:
            if variant["VariantName"] != target:
                continue
            if instance_count is not None:
                variant["InitialInstanceCount"] = instance_count
            if instance_type is not None:
                variant["InstanceType"] = instance_type
        new_config_name = self._create_next_config(name, old_config_name, params)
        self._api(
            "sagemaker",
            "update_endpoint",
            EndpointName=name,
            EndpointConfigName=new_config_name,
        )
        if wait:
            return self.wait_in_service(name, delay_s=delay_s, max_attempts=max_attempts)
        return EndpointState(
            name=name,
            arn=current.get("EndpointArn", ""),
            status="Updating",
            config_name=new_config_name,
        )

    def update_instance_count(
        self,
        name: str,
        count: int,
        *,
        wait: bool = True,
        delay_s: float = 30,
        max_attempts: int = 120,
    ) -> EndpointState:
        """Roll the endpoint's (first) variant to ``count`` instances via a new config."""
        return self.update_endpoint(
            name, instance_count=count, wait=wait, delay_s=delay_s, max_attempts=max_attempts
        )

    def retire_endpoint(
        self, name: str, *, delay_s: float = 15, max_attempts: int = 80
    ) -> RetiredEndpoint:
        """Delete the endpoint with its components (and their alarms), scaling targets,
        configs and models."""
        description = self._describe_endpoint_raw(name)
        components: list[str] = []
        alarms: list[str] = []
        models: set[str] = {endpoint_model_name(name)}
        if description is not None:
            config = self._describe_config_raw(description["EndpointConfigName"])
            variants = (config or {}).get("ProductionVariants") or []
            # Only inference-component endpoints have variants without a model; other endpoints
            # cannot hold components, so there is nothing to list.
            if any(not variant.get("ModelName") for variant in variants):
                for component in self._list_components(name):
                    models.add(component["model_name"])
                    self._deregister_target(
                        f"inference-component/{component['name']}",
                        "sagemaker:inference-component:DesiredCopyCount",
                    )
                    if self._delete_if_present(
                        "sagemaker",
                        "delete_inference_component",
                        InferenceComponentName=component["name"],
                    ):
                        components.append(component["name"])
                    # Its alarms would otherwise outlive it (and keep billing as alarms do).
                    alarms += [
                        alarm
                        for alarm in component_alarm_names(component["name"])
                        if self.delete_alarm(alarm)
                    ]
                # SageMaker refuses to delete an endpoint that still has components.
                for component_name in components:
                    self.wait_component_gone(
                        component_name, delay_s=delay_s, max_attempts=max_attempts
                    )
            for variant in description.get("ProductionVariants") or []:
                self._deregister_target(
                    f"endpoint/{name}/variant/{variant['VariantName']}",
                    "sagemaker:variant:DesiredInstanceCount",
                )
        deleted_endpoint = self._delete_if_present(
            "sagemaker", "delete_endpoint", EndpointName=name
        )
        if deleted_endpoint:
            # Retired means gone: a Deleting endpoint may still hold its instances for minutes.
            self._wait_endpoint_gone(name, delay_s=delay_s, max_attempts=max_attempts)
        configs = [
            config_name
            for config_name in self._own_config_names(name)
            if self._delete_if_present(
                "sagemaker", "delete_endpoint_config", EndpointConfigName=config_name
            )
        ]
        deleted_models = [
            model
            for model in sorted(models)
            if model and self._delete_if_present("sagemaker", "delete_model", ModelName=model)
        ]
        return RetiredEndpoint(
            endpoint=name if deleted_endpoint else None,
            inference_components=tuple(components),
            endpoint_configs=tuple(configs),
            models=tuple(deleted_models),
            alarms=tuple(alarms),
        )

    # -- MME models --------------------------------------------------------------------------

    def add_model(self, *, endpoint_prefix: str, package_s3_uri: str, target_model: str) -> str:
        """Put a ``model.tar.gz`` (S3 URI or local path) under the endpoint's prefix; its
        TargetModel."""
        key_in_prefix = _clean_target_model(target_model)
        bucket, prefix = _split_s3_uri(endpoint_prefix)
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        key = prefix + key_in_prefix
        try:
            if package_s3_uri.startswith("s3://"):
                source_bucket, source_key = _split_s3_uri(package_s3_uri)
                # Managed copy stays server-side (CopyObject, or UploadPartCopy above 5 GB), so
                # no model bytes pass through this machine.
                self.s3.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key)
            else:
                path = Path(package_s3_uri)
                if not path.is_file():
                    raise InvalidEndpointRequest(
                        f"Model package {package_s3_uri} is neither an s3:// URI nor a file.",
                        field="package_s3_uri",
                    )
                self.s3.upload_file(str(path), bucket, key)
        except ClientError as error:
            raise _backend_error(f"Copy to s3://{bucket}/{key}", error) from error
        except BotoCoreError as error:
            raise _backend_error(f"Copy to s3://{bucket}/{key}", error) from error
        return key_in_prefix

    def remove_model(self, *, endpoint_prefix: str, target_model: str) -> None:
        """Delete a model's tarball from the endpoint's prefix; a missing one is fine.

        Instances that already loaded it keep it until they evict it or restart.
        """
        key_in_prefix = _clean_target_model(target_model)
        bucket, prefix = _split_s3_uri(endpoint_prefix)
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        try:
            self.s3.delete_object(Bucket=bucket, Key=prefix + key_in_prefix)
        except (ClientError, BotoCoreError) as error:
            raise _backend_error(f"Delete of s3://{bucket}/{prefix}{key_in_prefix}", error) from (
                error
            )

    # -- inference components ----------------------------------------------------------------

    def create_inference_component(
        self,
        *,
        name: str,
        endpoint_name: str,
        image_uri: str,
        model_data_url: str,
        role_arn: str,
        memory_mb: int,
        variant_name: str = DEFAULT_VARIANT,
        model_name: str | None = None,
        accelerators: int = 0,
        cpu_cores: float | None = None,
        copies: int = 1,
        environment: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ComponentState:
        """Create the component's model and the component with its reservations and copies."""
        if memory_mb < 1:
            raise InvalidEndpointRequest(
                "An inference component must reserve memory (measure the model first).",
                field="memory_mb",
            )
        if copies < 0:
            raise InvalidEndpointRequest("Copies cannot be negative.", field="copies")
        model = model_name or component_model_name(name)
        self.ensure_model(
            name=model,
            image_uri=image_uri,
            model_data_url=model_data_url,
            role_arn=role_arn,
            environment=environment,
            tags=tags,
        )
        requirements: dict[str, Any] = {"MinMemoryRequiredInMb": memory_mb}
        # The API rejects 0 accelerators; leaving the field out is how a CPU model says "none".
        if accelerators > 0:
            requirements["NumberOfAcceleratorDevicesRequired"] = accelerators
        if cpu_cores is not None:
            requirements["NumberOfCpuCoresRequired"] = cpu_cores
        created = self._create_or_existing(
            "create_inference_component",
            InferenceComponentName=name,
            EndpointName=endpoint_name,
            VariantName=variant_name,
            Specification={"ModelName": model, "ComputeResourceRequirements": requirements},
            RuntimeConfig={"CopyCount": copies},
            Tags=_tags(tags),
        )
        state = self.describe_component(name)
        if state is None:
            what = "was created" if created else "already existed"
            raise EndpointBackendError(f"Inference component {name} {what} but cannot be found.")
        return state

    def update_inference_component(
        self,
        *,
        name: str,
        model_name: str,
        memory_mb: int,
        accelerators: int = 0,
        copies: int | None = None,
        batch_copies: int = 1,
        wait_interval_s: int = 0,
        rollback_alarms: tuple[str, ...] = (),
    ) -> None:
        """Move the component onto another model with a rolling update: ``batch_copies`` new
        copies at a time, the old ones stopped as the new answer; SageMaker rolls back by
        itself if one of ``rollback_alarms`` fires during the update."""
        requirements: dict[str, Any] = {"MinMemoryRequiredInMb": memory_mb}
        if accelerators > 0:
            requirements["NumberOfAcceleratorDevicesRequired"] = accelerators
        params: dict[str, Any] = {
            "InferenceComponentName": name,
            "Specification": {"ModelName": model_name, "ComputeResourceRequirements": requirements},
            "DeploymentConfig": {
                "RollingUpdatePolicy": {
                    "MaximumBatchSize": {"Type": "COPY_COUNT", "Value": max(1, batch_copies)},
                    "WaitIntervalInSeconds": wait_interval_s,
                    "RollbackMaximumBatchSize": {
                        "Type": "COPY_COUNT",
                        "Value": max(1, batch_copies),
                    },
                },
                **(
                    {
                        "AutoRollbackConfiguration": {
                            "Alarms": [{"AlarmName": alarm} for alarm in rollback_alarms]
                        }
                    }
                    if rollback_alarms
                    else {}
                ),
            },
        }
        if copies is not None:
            params["RuntimeConfig"] = {"CopyCount": copies}
        self._api("sagemaker", "update_inference_component", **params)

    def put_component_error_alarm(self, component_name: str, *, errors_per_minute: int = 1) -> str:
        """The alarm on the component's 5xx invocation errors (what rolling updates watch),
        created unless it exists; its name."""
        alarm = component_alarm_name(component_name)
        if self._api("cloudwatch", "describe_alarms", AlarmNames=[alarm]).get("MetricAlarms"):
            return alarm  # there already, in whatever state it is: putting it would reset it
        self._api(
            "cloudwatch",
            "put_metric_alarm",
            AlarmName=alarm,
            Namespace="AWS/SageMaker",
            MetricName="Invocation5XXErrors",
            Dimensions=[{"Name": "InferenceComponentName", "Value": component_name}],
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=float(errors_per_minute),
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="notBreaching",
            Tags=_tags(),
        )
        return alarm

    def delete_alarm(self, alarm_name: str) -> bool:
        """Delete a CloudWatch alarm; False when it was already gone."""
        if not self._api("cloudwatch", "describe_alarms", AlarmNames=[alarm_name]).get(
            "MetricAlarms"
        ):
            return False
        self._api("cloudwatch", "delete_alarms", AlarmNames=[alarm_name])
        return True

    def delete_model(self, name: str) -> bool:
        """Delete a SageMaker model; False when it was already gone."""
        return self._delete_if_present("sagemaker", "delete_model", ModelName=name)

    def deregister_component_autoscaling(self, component_name: str) -> None:
        """Remove the component's scaling target and its policies (a missing one is fine)."""
        self._deregister_target(
            f"inference-component/{component_name}",
            "sagemaker:inference-component:DesiredCopyCount",
        )

    def remove_prefix(self, endpoint_prefix: str) -> list[str]:
        """Delete every object under an endpoint's S3 prefix; the keys deleted."""
        bucket, prefix = _split_s3_uri(endpoint_prefix)
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        deleted: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                keys = [item["Key"] for item in page.get("Contents") or []]
                if keys:
                    self.s3.delete_objects(
                        Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]}
                    )
                    deleted += keys
        except (ClientError, BotoCoreError) as error:
            raise _backend_error(f"Delete under s3://{bucket}/{prefix}", error) from error
        return deleted

    def ensure_model(
        self,
        *,
        name: str,
        image_uri: str,
        model_data_url: str,
        role_arn: str,
        environment: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        """Create a single-model SageMaker model (one container, one archive); False when a
        model of that name exists already."""
        container: dict[str, Any] = {
            "Image": image_uri,
            "Mode": "SingleModel",
            "ModelDataUrl": model_data_url,
        }
        if environment:
            container["Environment"] = dict(environment)
        return self._create_or_existing(
            "create_model",
            ModelName=name,
            ExecutionRoleArn=role_arn,
            PrimaryContainer=container,
            Tags=_tags(tags),
        )

    def describe_component(self, name: str) -> ComponentState | None:
        """The inference component's state and copy counts, or None when it does not exist."""
        try:
            description = self._call(
                "sagemaker", "describe_inference_component", InferenceComponentName=name
            )
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise _backend_error("DescribeInferenceComponent", error) from error
        except BotoCoreError as error:
            raise _backend_error("DescribeInferenceComponent", error) from error
        return _component_state(description)

    def set_component_copies(self, name: str, copies: int) -> None:
        """Set the component's copy count; 0 scales it to zero while the endpoint stays."""
        if copies < 0:
            raise InvalidEndpointRequest("Copies cannot be negative.", field="copies")
        self._api(
            "sagemaker",
            "update_inference_component_runtime_config",
            InferenceComponentName=name,
            DesiredRuntimeConfig={"CopyCount": copies},
        )

    def wait_component_in_service(
        self, name: str, *, delay_s: float = 30, max_attempts: int = 120
    ) -> ComponentState:
        """Poll until the component is InService; ``EndpointFailed`` carries its reason."""
        state: ComponentState | None = None
        for attempt in range(max_attempts):
            state = self.describe_component(name)
            if state is None:
                raise EndpointBackendError(f"Inference component {name} does not exist.")
            if state.status == "InService":
                return state
            if state.status == "Failed":
                reason = state.failure_reason or "SageMaker gave no reason"
                raise EndpointFailed(
                    f"Inference component {name} failed: {reason}",
                    name=name,
                    failure_reason=reason,
                )
            if attempt + 1 < max_attempts:
                self._sleep(delay_s)
        status = state.status if state else "unknown"
        raise EndpointNotReady(
            f"Inference component {name} is still {status} after {max_attempts} checks."
        )

    def remove_component(self, name: str, *, delay_s: float = 15) -> list[tuple[str, str]]:
        """Delete a component with its scaling target (and policies) and alarms, waiting until
        it is gone (its model can go only then); ``(kind of resource, name)`` of what went."""
        self.deregister_component_autoscaling(name)
        deleted = []
        if self.delete_inference_component(name):
            deleted.append(("inference component", name))
        for alarm in component_alarm_names(name):
            if self.delete_alarm(alarm):
                deleted.append(("alarm", alarm))
        self.wait_component_gone(name, delay_s=delay_s)
        return deleted

    def delete_inference_component(self, name: str) -> bool:
        """Delete the component (its model stays for reuse); False when it was already gone."""
        return self._delete_if_present(
            "sagemaker", "delete_inference_component", InferenceComponentName=name
        )

    # -- autoscaling -------------------------------------------------------------------------
    #
    # Application Auto Scaling holds one scalable target per resource (a variant's instance
    # count, a component's copy count) with its minimum and maximum, and any number of named
    # policies on it; CloudWatch alarms invoke step policies. Every call here is idempotent:
    # registering a target or putting a policy or an alarm under an existing name overwrites it.

    def register_scalable_target(
        self, *, resource_id: str, dimension: str, minimum: int, maximum: int, floor: int = 0
    ) -> None:
        """Register (or update) a resource's scalable target between ``minimum`` and
        ``maximum``; ``floor`` is the least minimum the resource allows."""
        if minimum < floor or maximum < minimum or maximum < 1:
            raise InvalidEndpointRequest(
                f"Autoscaling needs {floor} <= min <= max and max >= 1 "
                f"(got min={minimum}, max={maximum}).",
                field="min_capacity",
            )
        self._api(
            "application-autoscaling",
            "register_scalable_target",
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=dimension,
            MinCapacity=minimum,
            MaxCapacity=maximum,
        )

    def put_target_tracking_policy(
        self,
        *,
        resource_id: str,
        dimension: str,
        policy_name: str,
        target: float,
        predefined_metric: str = "",
        customized_metric: Mapping[str, Any] | None = None,
        scale_in_cooldown_s: int = 300,
        scale_out_cooldown_s: int = 60,
    ) -> str:
        """Keep a metric at ``target`` on a registered target: a predefined metric type, or a
        CloudWatch metric (``customized_metric``: MetricName, Namespace, Dimensions,
        Statistic[, Unit]); the policy ARN."""
        if target <= 0:
            raise InvalidEndpointRequest(
                f"A target tracking policy needs a positive target (got {target}).",
                field="target_value",
            )
        if bool(predefined_metric) == bool(customized_metric):
            raise InvalidEndpointRequest(
                "A target tracking policy follows either a predefined or a customized metric.",
                field="metric",
            )
        configuration: dict[str, Any] = {
            "TargetValue": float(target),
            "ScaleInCooldown": scale_in_cooldown_s,
            "ScaleOutCooldown": scale_out_cooldown_s,
        }
        if predefined_metric:
            configuration["PredefinedMetricSpecification"] = {
                "PredefinedMetricType": predefined_metric
            }
        else:
            configuration["CustomizedMetricSpecification"] = dict(customized_metric or {})
        response = self._api(
            "application-autoscaling",
            "put_scaling_policy",
            PolicyName=policy_name,
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=dimension,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=configuration,
        )
        return response.get("PolicyARN", "")

    def put_step_scaling_policy(
        self,
        *,
        resource_id: str,
        dimension: str,
        policy_name: str,
        adjustment_type: str = "ExactCapacity",
        adjustment: int = 1,
        cooldown_s: int = 60,
    ) -> str:
        """A step policy an alarm invokes: any breach of its threshold applies ``adjustment``
        (with ``ExactCapacity``, sets the capacity to it); the policy ARN."""
        response = self._api(
            "application-autoscaling",
            "put_scaling_policy",
            PolicyName=policy_name,
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=dimension,
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": adjustment_type,
                "MetricAggregationType": "Maximum",
                "Cooldown": cooldown_s,
                # From the threshold up (one failed invocation or more): one step.
                "StepAdjustments": [
                    {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": adjustment}
                ],
            },
        )
        return response.get("PolicyARN", "")

    def put_no_capacity_alarm(
        self, *, alarm_name: str, component_name: str, policy_arn: str, period_s: int = 60
    ) -> str:
        """The alarm on a component's NoCapacityInvocationFailures whose action is the step
        policy ``policy_arn`` (put over any earlier one: the policy's ARN may have changed)."""
        self._api(
            "cloudwatch",
            "put_metric_alarm",
            AlarmName=alarm_name,
            AlarmDescription=(
                f"A request found {component_name} with no copy: scale it out from zero."
            ),
            ActionsEnabled=True,
            AlarmActions=[policy_arn],
            Namespace="AWS/SageMaker",
            MetricName="NoCapacityInvocationFailures",
            Dimensions=[{"Name": "InferenceComponentName", "Value": component_name}],
            Statistic="Sum",
            Period=period_s,
            EvaluationPeriods=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            # No invocations, no data point: the alarm keeps its state rather than flapping.
            TreatMissingData="missing",
            Tags=_tags(),
        )
        return alarm_name

    def delete_scaling_policy(self, *, resource_id: str, dimension: str, policy_name: str) -> bool:
        """Delete one policy of a target; False when it (or the target) was already gone."""
        return self._delete_if_present(
            "application-autoscaling",
            "delete_scaling_policy",
            PolicyName=policy_name,
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=dimension,
        )

    def deregister_scalable_target(self, *, resource_id: str, dimension: str) -> None:
        """Remove a resource's scalable target with every policy on it (a missing one is fine)."""
        self._deregister_target(resource_id, dimension)

    def configure_variant_autoscaling(
        self,
        endpoint_name: str,
        variant: str = DEFAULT_VARIANT,
        *,
        min_instances: int,
        max_instances: int,
        invocations_per_instance: float = 225,
        scale_in_cooldown_s: int = 300,
        scale_out_cooldown_s: int = 60,
    ) -> str:
        """Track invocations per instance on a variant's instance count; the policy ARN."""
        resource_id = f"endpoint/{endpoint_name}/variant/{variant}"
        self.register_scalable_target(
            resource_id=resource_id,
            dimension="sagemaker:variant:DesiredInstanceCount",
            minimum=min_instances,
            maximum=max_instances,
            floor=1,
        )
        return self.put_target_tracking_policy(
            resource_id=resource_id,
            dimension="sagemaker:variant:DesiredInstanceCount",
            policy_name=f"{endpoint_name}-{variant}-invocations-per-instance",
            target=invocations_per_instance,
            predefined_metric="SageMakerVariantInvocationsPerInstance",
            scale_in_cooldown_s=scale_in_cooldown_s,
            scale_out_cooldown_s=scale_out_cooldown_s,
        )

    def configure_component_autoscaling(
        self,
        component_name: str,
        *,
        min_copies: int,
        max_copies: int,
        invocations_per_copy: float,
        scale_in_cooldown_s: int = 300,
        scale_out_cooldown_s: int = 60,
    ) -> str:
        """Track invocations per copy on a component's copy count; the policy ARN.

        With ``min_copies=0`` target tracking can scale in to zero but not out of it (no copy,
        no invocations metric); scaling out from zero needs a step policy on the
        NoCapacityInvocationFailures alarm (``put_step_scaling_policy``,
        ``put_no_capacity_alarm``).
        """
        resource_id = f"inference-component/{component_name}"
        self.register_scalable_target(
            resource_id=resource_id,
            dimension="sagemaker:inference-component:DesiredCopyCount",
            minimum=min_copies,
            maximum=max_copies,
        )
        return self.put_target_tracking_policy(
            resource_id=resource_id,
            dimension="sagemaker:inference-component:DesiredCopyCount",
            policy_name=f"{component_name}-invocations-per-copy",
            target=invocations_per_copy,
            predefined_metric="SageMakerInferenceComponentInvocationsPerCopy",
            scale_in_cooldown_s=scale_in_cooldown_s,
            scale_out_cooldown_s=scale_out_cooldown_s,
        )

    # -- invocations -------------------------------------------------------------------------

    def invoke_raw(
        self,
        *,
        endpoint_name: str,
        body: bytes,
        content_type: str = "application/json",
        target_model: str | None = None,
        inference_component: str | None = None,
    ) -> tuple[str, bytes]:
        """Send a request body as it is to the endpoint (MME TargetModel or a component);
        returns the answer's content type and body."""
        params: dict[str, Any] = {
            "EndpointName": endpoint_name,
            "ContentType": content_type,
            "Accept": "application/json",
            "Body": body,
        }
        if target_model is not None:
            params["TargetModel"] = target_model
        if inference_component is not None:
            params["InferenceComponentName"] = inference_component
        what = target_model or inference_component or endpoint_name
        try:
            response = self._call("sagemaker-runtime", "invoke_endpoint", **params)
        except ClientError as error:
            raise _invocation_error(what, endpoint_name, error) from error
        except BotoCoreError as error:
            raise UpstreamError(f"Invoking {what} on {endpoint_name} failed: {error}") from error
        return response.get("ContentType", "application/json"), response["Body"].read()

    def invoke(
        self,
        *,
        endpoint_name: str,
        body: dict,
        target_model: str | None = None,
        inference_component: str | None = None,
    ) -> dict:
        """Send a KServe v2 JSON request to the endpoint (MME TargetModel or a component)."""
        what = target_model or inference_component or endpoint_name
        _, payload = self.invoke_raw(
            endpoint_name=endpoint_name,
            body=json.dumps(body).encode(),
            target_model=target_model,
            inference_component=inference_component,
        )
        try:
            answer = json.loads(payload)
        except ValueError as error:
            raise UpstreamError(
                f"{what} on {endpoint_name} answered something that is not JSON: {payload[:200]!r}"
            ) from error
        if not isinstance(answer, dict):
            raise UpstreamError(f"{what} on {endpoint_name} answered JSON that is not an object.")
        return answer

    # -- internals ---------------------------------------------------------------------------

    def _primary_container(self, request: EndpointRequest) -> dict[str, Any]:
        container: dict[str, Any] = {"Image": request.image_uri}
        if request.mode == "mme":
            prefix = request.model_data_prefix
            container["Mode"] = "MultiModel"
            # SageMaker loads TargetModel as <ModelDataUrl><TargetModel>; the slash keeps a
            # sibling prefix ("acme-old/") out of reach.
            container["ModelDataUrl"] = prefix if prefix.endswith("/") else prefix + "/"
        else:
            container["Mode"] = "SingleModel"
            container["ModelDataUrl"] = request.model_data_url
        if request.environment:
            container["Environment"] = dict(request.environment)
        return container

    def _endpoint_config_params(self, request: EndpointRequest, name: str) -> dict[str, Any]:
        variant: dict[str, Any] = {
            "VariantName": request.variant_name,
            "InstanceType": request.instance_type,
            "InitialInstanceCount": request.instance_count,
        }
        params: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": [variant],
            "Tags": _tags(request.tags),
        }
        if request.mode == "inference-component":
            # Components bring their own models; the role lets SageMaker pull them.
            params["ExecutionRoleArn"] = request.role_arn
            # Least-outstanding-requests spreads calls across copies by how busy each is,
            # which matters when copies of big models answer at very different speeds.
            variant["RoutingConfig"] = {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
            if request.min_instances is not None or request.max_instances is not None:
                low = request.min_instances if request.min_instances is not None else 1
                high = (
                    request.max_instances
                    if request.max_instances is not None
                    else max(low, request.instance_count)
                )
                variant["ManagedInstanceScaling"] = {
                    "Status": "ENABLED",
                    "MinInstanceCount": low,
                    "MaxInstanceCount": high,
                }
        else:
            variant["ModelName"] = request.model_name
            variant["InitialVariantWeight"] = 1.0
        return params

    def _config_params_from_description(self, description: Mapping[str, Any]) -> dict[str, Any]:
        # Copy exactly the fields CreateEndpointConfig accepts, so a config made elsewhere
        # (console, another tool) keeps its data capture, KMS key and VPC settings.
        accepted = self.sagemaker.meta.service_model.operation_model(
            "CreateEndpointConfig"
        ).input_shape.members
        params = {
            key: value
            for key, value in description.items()
            if key in accepted and key not in ("EndpointConfigName", "Tags")
        }
        params["ProductionVariants"] = [
            dict(variant) for variant in description.get("ProductionVariants") or []
        ]
        if not params["ProductionVariants"]:
            raise EndpointBackendError(
                f"Endpoint config {description.get('EndpointConfigName')} has no variants."
            )
        params["Tags"] = _tags()
        return params

    def _create_next_config(self, name: str, old_config_name: str, params: dict[str, Any]) -> str:
        match = re.fullmatch(re.escape(name) + r"-config-(\d+)", old_config_name)
        generation = int(match[1]) + 1 if match else 1
        # A name already taken (an update that failed after creating its config) is skipped,
        # not reused: its content may differ from this update's.
        for _ in range(20):
            config_name = endpoint_config_name(name, generation)
            if self._create_or_existing(
                "create_endpoint_config", EndpointConfigName=config_name, **params
            ):
                return config_name
            generation += 1
        raise EndpointBackendError(
            f"Could not find a free endpoint config name for {name}; delete stale "
            f"{name}-config-N configs."
        )

    def _describe_endpoint_raw(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call("sagemaker", "describe_endpoint", EndpointName=name)
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise _backend_error("DescribeEndpoint", error) from error
        except BotoCoreError as error:
            raise _backend_error("DescribeEndpoint", error) from error

    def _describe_config_raw(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call("sagemaker", "describe_endpoint_config", EndpointConfigName=name)
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise _backend_error("DescribeEndpointConfig", error) from error
        except BotoCoreError as error:
            raise _backend_error("DescribeEndpointConfig", error) from error

    def alarms(self, *, prefix: str) -> Iterator[dict[str, Any]]:
        """The CloudWatch metric alarms whose names start with ``prefix``."""
        token: str | None = None
        while True:
            page = self._api(
                "cloudwatch",
                "describe_alarms",
                AlarmNamePrefix=prefix,
                **({"NextToken": token} if token else {}),
            )
            yield from page.get("MetricAlarms") or []
            token = page.get("NextToken")
            if not token:
                return

    def objects(self, prefix_uri: str) -> Iterator[tuple[str, Any]]:
        """``(s3 URI, last modified)`` of every object under an ``s3://bucket/prefix/``."""
        bucket, prefix = _split_s3_uri(prefix_uri)
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                for item in page.get("Contents") or []:
                    yield f"s3://{bucket}/{item['Key']}", item.get("LastModified")
        except (ClientError, BotoCoreError) as error:
            raise _backend_error(f"List of s3://{bucket}/{prefix}", error) from error

    def delete_object(self, uri: str) -> bool:
        """Delete one S3 object (a missing one is fine)."""
        bucket, key = _split_s3_uri(uri)
        try:
            self.s3.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            raise _backend_error(f"Delete of {uri}", error) from error
        return True

    def delete_endpoint_config(self, name: str) -> bool:
        """Delete an endpoint config; False when it was already gone."""
        return self._delete_if_present(
            "sagemaker", "delete_endpoint_config", EndpointConfigName=name
        )

    def pages(self, operation: str, list_key: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated SageMaker list call (``list_key`` of each page)."""
        return self._pages(operation, list_key, **params)

    def _pages(self, operation: str, list_key: str, **params: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._api(
                "sagemaker", operation, **params, **({"NextToken": token} if token else {})
            )
            yield from page.get(list_key) or []
            token = page.get("NextToken")
            if not token:
                return

    def _list_components(self, endpoint_name: str) -> list[dict[str, str]]:
        components = []
        for summary in self._pages(
            "list_inference_components",
            "InferenceComponents",
            EndpointNameEquals=endpoint_name,
        ):
            state = self.describe_component(summary["InferenceComponentName"])
            if state is not None:
                components.append({"name": state.name, "model_name": state.model_name})
        return components

    def _own_config_names(self, endpoint_name: str) -> list[str]:
        # NameContains is a substring match; the full pattern keeps "<name>-config-N" of
        # another endpoint whose name merely ends with this one's out.
        own = re.compile(re.escape(endpoint_name) + r"-config-\d+")
        return sorted(
            summary["EndpointConfigName"]
            for summary in self._pages(
                "list_endpoint_configs",
                "EndpointConfigs",
                NameContains=f"{endpoint_name}-config-",
            )
            if own.fullmatch(summary["EndpointConfigName"])
        )

    def _deregister_target(self, resource_id: str, dimension: str) -> None:
        # Deregistering also deletes the target's scaling policies.
        self._delete_if_present(
            "application-autoscaling",
            "deregister_scalable_target",
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=dimension,
        )

    def _wait_endpoint_gone(self, name: str, *, delay_s: float, max_attempts: int) -> None:
        for attempt in range(max_attempts):
            if self._describe_endpoint_raw(name) is None:
                return
            if attempt + 1 < max_attempts:
                self._sleep(delay_s)
        raise EndpointNotReady(
            f"Endpoint {name} is still being deleted after {max_attempts} checks; "
            "the reconciler finishes its retirement later."
        )

    def wait_component_gone(
        self, name: str, *, delay_s: float = 15, max_attempts: int = 80
    ) -> None:
        """Poll until the component no longer exists (its deletion finished)."""
        for attempt in range(max_attempts):
            state = self.describe_component(name)
            if state is None:
                return
            if attempt + 1 < max_attempts:
                self._sleep(delay_s)
        raise EndpointNotReady(
            f"Inference component {name} is still being deleted after {max_attempts} checks; "
            "retire the endpoint again later."
        )


def _invocation_error(what: str, endpoint_name: str, error: ClientError) -> DomainError:
    code = error_code(error)
    message = error_message(error)
    if code == "ModelError":
        original = error.response.get("OriginalMessage") or message
        status = error.response.get("OriginalStatusCode")
        # Triton answers 400 for a body that does not match the model's inputs.
        if status == 400:
            return InvalidInferenceInput(f"{what} rejected the request: {original}")
        return UpstreamError(
            f"{what} on {endpoint_name} failed (status {status or 'unknown'}): {original}"
        )
    if code in ("ValidationError", "ValidationException"):
        if _NO_CAPACITY.search(message):
            return ComponentHasNoCopies(
                f"{what} on {endpoint_name} runs no copy right now: {message}",
                approximate_load_s=approximate_load_s(message),
            )
        return InvocationRejected(f"SageMaker refused the call to {what}: {message}")
    return EndpointBackendError(f"InvokeEndpoint failed ({code or 'error'}): {message}")


# SageMaker's answer to an invocation of a component with no copy (scaled to zero, or its copies
# not started yet): "Inference Component has no capacity to process this request.
# ApproximateModelLoadTime: <n> seconds".
_NO_CAPACITY = re.compile(r"has no capacity to process this request", re.IGNORECASE)
_APPROXIMATE_LOAD = re.compile(r"ApproximateModelLoadTime:\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def approximate_load_s(message: str) -> float | None:
    """SageMaker's estimate of a copy's start in a no-capacity answer; None when it gives none
    (or 0, which it says before it has started any copy of the model)."""
    match = _APPROXIMATE_LOAD.search(message)
    if match is None or float(match[1]) <= 0:
        return None
    return float(match[1])
