"""What the stand-in really runs: each endpoint's instances and each inference component's copies.

An endpoint's deployment (one endpoint config) is a list of instances of its variant's type:

- multi-model (MME): one multi-model Triton per instance; a TargetModel is loaded on first call
  on the instance a stable hash picks, and the least recently used model is unloaded when the
  instance would hold more than its limit;
- dedicated: one single-model Triton per instance on the unpacked ``model.tar.gz``;
- inference components: instances are capacity only; each component copy is its own
  single-model Triton, placed on an instance by its reserved memory. With managed instance
  scaling, instances are added when a copy fits on none and released when they hold no copy,
  down to ``MinInstanceCount`` — 0 included, so an endpoint whose components all scaled to zero
  runs no instance until a copy starts again.

Changes run in background threads and are visible through moto's endpoint objects (status,
failure reason, instance counts), as SageMaker shows them: Creating, then InService or Failed;
Updating with new instances started before old ones stop; Deleting, then gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployments.backends.local.process import TritonProcess
from deployments.sagemaker_standin.errors import ValidationException
from deployments.sagemaker_standin.instance_types import instance_memory_mb
from deployments.sagemaker_standin.moto_state import MissingS3Object, MotoState, unpack_archive
from deployments.sagemaker_standin.triton_image import TritonImage, TritonStartFailed
from deployments.sagemaker_standin.usage import Usage

__all__ = [
    "Component",
    "Copy",
    "Deployment",
    "Endpoint",
    "Fleet",
    "Instance",
    "MmeLimits",
    "StartFailed",
]

logger = logging.getLogger(__name__)

MME = "mme"
DEDICATED = "dedicated"
INFERENCE_COMPONENT = "inference-component"
# Per-model environment override of the MME limit (read from the model's container
# Environment), so one endpoint can be made to evict early without restarting the stand-in.
MAX_MODELS_ENV = "SAGEMAKER_STANDIN_MAX_MODELS_PER_INSTANCE"
# How long an old copy gets to finish its in-flight requests before it is stopped.
DRAIN_TIMEOUT_S = 30.0


class StartFailed(Exception):
    """Instances or copies could not be started; the message is the FailureReason to show."""


@dataclass(frozen=True)
class MmeLimits:
    """How many models an MME instance holds: a fixed count, or its memory over a per-model
    estimate (the stand-in does not measure models)."""

    models_per_instance: int | None = None
    model_memory_mb: int = 512

    def for_instance(self, instance_type: str, override: str | None = None) -> int:
        if override:
            return max(1, int(override))
        if self.models_per_instance:
            return self.models_per_instance
        return max(1, instance_memory_mb(instance_type) // self.model_memory_mb)


@dataclass
class Instance:
    """One instance of an endpoint's variant."""

    instance_id: str
    instance_type: str
    workdir: Path
    process: TritonProcess | None = None
    # MME: TargetModel -> Triton's name for it, least recently used first.
    models: OrderedDict[str, str] = field(default_factory=OrderedDict)
    load_locks: dict[str, threading.Lock] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def memory_mb(self) -> int:
        return instance_memory_mb(self.instance_type)

    @property
    def reserved_mb(self) -> int:
        return sum(copy.memory_mb for copy in self.copies)

    @property
    def free_mb(self) -> int:
        return self.memory_mb - self.reserved_mb


@dataclass
class Deployment:
    """An endpoint config as it runs: its variant's instances and what they serve."""

    config_name: str
    variant_name: str
    instance_type: str
    kind: str
    container: dict[str, Any]
    instances: list[Instance]
    managed_scaling: dict[str, Any] | None = None
    desired_count: int = 0
    next_instance: int = 0

    @property
    def max_instances(self) -> int:
        scaling = self.managed_scaling or {}
        if scaling.get("Status") != "ENABLED":
            return len(self.instances)
        return int(scaling.get("MaxInstanceCount") or len(self.instances))

    @property
    def min_instances(self) -> int:
        scaling = self.managed_scaling or {}
        if scaling.get("Status") != "ENABLED":
            return len(self.instances)
        # 0 is a real minimum (scale to zero instances), not a missing one.
        minimum = scaling.get("MinInstanceCount")
        return 1 if minimum is None else int(minimum)


@dataclass
class Endpoint:
    """An endpoint the stand-in runs."""

    name: str
    workdir: Path
    deployment: Deployment | None = None
    deleting: bool = False
    # One change (create, update, scale, delete) at a time, as SageMaker refuses overlapping ones.
    busy: threading.Lock = field(default_factory=threading.Lock)
    round_robin: itertools.count = field(default_factory=itertools.count)


@dataclass
class Copy:
    """One copy of an inference component: a single-model Triton on one instance."""

    copy_id: str
    instance: Instance
    memory_mb: int
    specification: dict[str, Any]
    process: TritonProcess
    outstanding: int = 0


@dataclass
class Component:
    """An inference component: its description as SageMaker keeps it, and its live copies."""

    name: str
    arn: str
    endpoint_name: str
    endpoint_arn: str
    variant_name: str
    specification: dict[str, Any]
    desired_copies: int
    tags: list[dict[str, str]]
    status: str = "Creating"
    failure_reason: str | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_deployment_config: dict[str, Any] | None = None
    copies: list[Copy] = field(default_factory=list)
    busy: threading.Lock = field(default_factory=threading.Lock)

    @property
    def memory_mb(self) -> int:
        requirements = self.specification.get("ComputeResourceRequirements") or {}
        return int(requirements.get("MinMemoryRequiredInMb") or 0)

    def describe(self) -> dict[str, Any]:
        """The DescribeInferenceComponent answer."""
        description: dict[str, Any] = {
            "InferenceComponentName": self.name,
            "InferenceComponentArn": self.arn,
            "EndpointName": self.endpoint_name,
            "EndpointArn": self.endpoint_arn,
            "VariantName": self.variant_name,
            "Specification": self.specification,
            "RuntimeConfig": {
                "DesiredCopyCount": self.desired_copies,
                "CurrentCopyCount": len(self.copies),
            },
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
            "InferenceComponentStatus": self.status,
        }
        if self.failure_reason:
            description["FailureReason"] = self.failure_reason
        if self.last_deployment_config:
            description["LastDeploymentConfig"] = self.last_deployment_config
        return description

    def summary(self) -> dict[str, Any]:
        """The ListInferenceComponents entry."""
        return {
            "CreationTime": self.created,
            "InferenceComponentArn": self.arn,
            "InferenceComponentName": self.name,
            "EndpointArn": self.endpoint_arn,
            "EndpointName": self.endpoint_name,
            "VariantName": self.variant_name,
            "InferenceComponentStatus": self.status,
            "LastModifiedTime": self.modified,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def stable_index(key: str, count: int) -> int:
    """The instance a TargetModel lives on: the same for every call while the count stays."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def triton_model_name(target_model: str) -> str:
    """Triton's name for a TargetModel (SageMaker names loaded MME models by a hash too)."""
    return hashlib.sha256(target_model.encode()).hexdigest()[:32]


class Fleet:
    """Every endpoint and inference component the stand-in runs, and their changes."""

    def __init__(
        self,
        *,
        workdir: Path,
        image: TritonImage,
        moto: MotoState,
        mme_limits: MmeLimits | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.image = image
        self.moto = moto
        self.mme_limits = mme_limits or MmeLimits()
        # What the runtime's invocations did this scaling period (metrics, autoscaling).
        self.usage = Usage()
        self.lock = threading.RLock()
        self.endpoints: dict[str, Endpoint] = {}
        self.components: dict[str, Component] = {}
        self._ids = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._closing = False

    # -- background work ---------------------------------------------------------------------

    def _spawn(self, name: str, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except Exception:
                logger.exception("stand-in: %s failed", name)
            finally:
                with self.lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"standin-{name}", daemon=True)
        with self.lock:
            self._threads.add(thread)
        thread.start()

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Wait for every background change to finish (for reset and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                threads = list(self._threads)
            if not threads or time.monotonic() >= deadline:
                return
            threads[0].join(timeout=max(0.0, deadline - time.monotonic()))

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):04d}"

    # -- deployments -------------------------------------------------------------------------

    def _plan(self, endpoint: Endpoint, config_name: str) -> Deployment:
        config = self.moto.endpoint_config(config_name)
        variants = config.production_variants or []
        if len(variants) != 1:
            raise StartFailed(
                f"The stand-in serves endpoint configs with one production variant; "
                f"{config_name} has {len(variants)}."
            )
        variant = variants[0]
        model_name = variant.get("ModelName")
        if model_name:
            container = self.moto.model_container(model_name)
            kind = MME if container.get("Mode") == "MultiModel" else DEDICATED
        else:
            container, kind = {}, INFERENCE_COMPONENT
        return Deployment(
            config_name=config_name,
            variant_name=variant["VariantName"],
            instance_type=variant.get("InstanceType") or "ml.m5.large",
            kind=kind,
            container=container,
            instances=[],
            managed_scaling=variant.get("ManagedInstanceScaling"),
            desired_count=int(variant.get("InitialInstanceCount") or 1),
        )

    def _new_instance(self, endpoint: Endpoint, deployment: Deployment) -> Instance:
        deployment.next_instance += 1
        instance_id = self._new_id("i")
        return Instance(
            instance_id=instance_id,
            instance_type=deployment.instance_type,
            workdir=endpoint.workdir / instance_id,
        )

    def _start_instance(self, deployment: Deployment, instance: Instance) -> None:
        """Bring one instance up as the container does (IC instances only hold copies)."""
        environment = deployment.container.get("Environment") or {}
        instance.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if deployment.kind == MME:
                instance.process = self.image.start_multi_model(
                    instance.workdir / "triton", environment
                )
            elif deployment.kind == DEDICATED:
                url = deployment.container.get("ModelDataUrl", "")
                repository = instance.workdir / "model"
                try:
                    unpack_archive(self.moto.read_s3(url), repository)
                except MissingS3Object as error:
                    raise StartFailed(
                        f'Failed to download model data for container "container_1" from URL: '
                        f'"{url}". Please ensure that there is an object located at the URL and '
                        "that the role passed to CreateModel has permissions to download the "
                        "object."
                    ) from error
                instance.process = self.image.start_single_model(
                    instance.workdir / "triton", repository, environment
                )
        except TritonStartFailed as error:
            raise StartFailed(
                f"The primary container for production variant {deployment.variant_name} did "
                "not pass the ping health check. Please check CloudWatch logs for this "
                f"endpoint. Triton's log (stand-in): {error.reason}"
            ) from error

    def _start_instances(self, endpoint: Endpoint, deployment: Deployment, count: int) -> None:
        started: list[Instance] = []
        try:
            for _ in range(count):
                instance = self._new_instance(endpoint, deployment)
                started.append(instance)
                self._start_instance(deployment, instance)
        except Exception:
            for instance in started:
                self._stop_instance(instance)
            raise
        deployment.instances.extend(started)

    def _stop_instance(self, instance: Instance) -> None:
        for copy in list(instance.copies):
            if copy.process is not None:
                self.image.stop(copy.process)
        instance.copies.clear()
        self.image.stop(instance.process)
        instance.process = None
        shutil.rmtree(instance.workdir, ignore_errors=True)

    def _sync_counts(self, endpoint: Endpoint) -> None:
        deployment = endpoint.deployment
        if deployment is not None:
            self.moto.set_variant_counts(
                endpoint.name,
                deployment.variant_name,
                current=len(deployment.instances),
                desired=max(deployment.desired_count, len(deployment.instances))
                if deployment.kind == INFERENCE_COMPONENT
                else deployment.desired_count,
            )

    # -- endpoint lifecycle ------------------------------------------------------------------

    def endpoint_created(self, name: str, config_name: str) -> None:
        """moto has the endpoint; show it Creating and bring its instances up."""
        with self.lock:
            endpoint = Endpoint(name=name, workdir=self.workdir / "endpoints" / self._new_id(name))
            self.endpoints[name] = endpoint
            self.moto.set_endpoint_status(name, "Creating")
            for variant in self.moto.endpoint(name).production_variants:
                variant["CurrentInstanceCount"] = 0

        def create() -> None:
            with endpoint.busy:
                try:
                    deployment = self._plan(endpoint, config_name)
                    self._start_instances(endpoint, deployment, deployment.desired_count)
                except (StartFailed, ValidationException) as error:
                    logger.warning("endpoint %s failed: %s", name, error)
                    with self.lock:
                        self.moto.set_endpoint_status(name, "Failed", str(error))
                    return
                with self.lock:
                    if endpoint.deleting or self._closing:
                        for instance in deployment.instances:
                            self._stop_instance(instance)
                        return
                    endpoint.deployment = deployment
                    self._sync_counts(endpoint)
                    self.moto.set_endpoint_status(name, "InService")

        self._spawn(f"create-{name}", create)

    def _require_endpoint(self, name: str) -> Endpoint:
        with self.lock:
            endpoint = self.endpoints.get(name)
            moto_endpoint = self.moto.endpoint(name)
        if endpoint is None or moto_endpoint is None or endpoint.deleting:
            raise ValidationException(
                f"Could not find endpoint '{self.moto.arn('endpoint', name)}'."
            )
        return endpoint

    def _require_changeable(self, name: str) -> Endpoint:
        endpoint = self._require_endpoint(name)
        status = self.moto.endpoint(name).endpoint_status
        if status in ("Creating", "Updating", "Deleting"):
            raise ValidationException(
                f"Cannot update in-progress endpoint '{self.moto.arn('endpoint', name)}'."
            )
        return endpoint

    def update_endpoint(self, name: str, config_name: str) -> str:
        """UpdateEndpoint: blue/green onto a new config; a failure rolls back to the old one."""
        endpoint = self._require_changeable(name)
        self.moto.endpoint_config(config_name)
        with self.lock:
            self.moto.set_endpoint_status(name, "Updating")

        def update() -> None:
            with endpoint.busy:
                old = endpoint.deployment
                try:
                    new = self._plan(endpoint, config_name)
                    if new.kind == INFERENCE_COMPONENT and old and old.kind == new.kind:
                        self._reshape_component_instances(endpoint, new)
                    else:
                        self._start_instances(endpoint, new, new.desired_count)
                except (StartFailed, ValidationException) as error:
                    # SageMaker rolls a failed update back: the old instances keep serving.
                    with self.lock:
                        self.moto.set_endpoint_status(
                            name, "InService", f"Update to {config_name} failed: {error}"
                        )
                    return
                with self.lock:
                    endpoint.deployment = new
                    moto_endpoint = self.moto.endpoint(name)
                    if moto_endpoint is not None:
                        moto_endpoint.endpoint_config_name = config_name
                        moto_endpoint.production_variants = (
                            moto_endpoint._process_production_variants(
                                self.moto.endpoint_config(config_name).production_variants
                            )
                        )
                    self._sync_counts(endpoint)
                    self.moto.set_endpoint_status(name, "InService")
                if old is not None and old.kind != INFERENCE_COMPONENT:
                    for instance in old.instances:
                        self._stop_instance(instance)

        self._spawn(f"update-{name}", update)
        return self.moto.endpoint(name).arn

    def _reshape_component_instances(self, endpoint: Endpoint, new: Deployment) -> None:
        """An IC endpoint's new config: keep instances of the same type, move the copies of
        instances that go onto those that stay (new copy first, then the old one stops)."""
        old = endpoint.deployment
        assert old is not None
        keep = [i for i in old.instances if i.instance_type == new.instance_type]
        keep = keep[: new.desired_count]
        leaving = [i for i in old.instances if i not in keep]
        new.instances = keep
        new.next_instance = old.next_instance
        while len(new.instances) < new.desired_count:
            new.instances.append(self._new_instance(endpoint, new))
        self._move_copies_off(endpoint, new, leaving)

    def _move_copies_off(self, endpoint: Endpoint, target: Deployment, leaving: list[Instance]):
        for instance in leaving:
            for copy in list(instance.copies):
                component = self.component_of(copy)
                placed = self._place(endpoint, target, copy.memory_mb, component.name)
                if placed is None:
                    raise StartFailed(
                        f"The copies on {instance.instance_id} do not fit on the instances "
                        "that stay."
                    )
                new_copy = self._start_copy(component, placed, copy.specification)
                with self.lock:
                    component.copies.append(new_copy)
                self._retire_copy(component, copy)
            self._stop_instance(instance)

    def component_of(self, copy: Copy) -> Component:
        with self.lock:
            for component in self.components.values():
                if copy in component.copies:
                    return component
        raise StartFailed(f"Copy {copy.copy_id} belongs to no component.")

    def update_weights_and_capacities(self, name: str, desired: list[dict[str, Any]]) -> str:
        """UpdateEndpointWeightsAndCapacities: grow or shrink a variant's instance count."""
        endpoint = self._require_changeable(name)
        deployment = endpoint.deployment
        if deployment is None:
            raise ValidationException(f"Endpoint {name} has no running variant.")
        counts: dict[str, int] = {}
        for entry in desired:
            if entry.get("VariantName") != deployment.variant_name:
                raise ValidationException(
                    f'The variant name(s) "{entry.get("VariantName")}" is/are not present '
                    f'within endpoint configuration "{deployment.config_name}".'
                )
            if entry.get("DesiredInstanceCount") is not None:
                counts[entry["VariantName"]] = int(entry["DesiredInstanceCount"])
        count = counts.get(deployment.variant_name)
        with self.lock:
            self.moto.set_endpoint_status(name, "Updating")

        def scale() -> None:
            with endpoint.busy:
                try:
                    if count is not None:
                        self._resize(endpoint, deployment, count)
                except (StartFailed, ValidationException) as error:
                    with self.lock:
                        self.moto.set_endpoint_status(name, "InService", str(error))
                    return
                with self.lock:
                    self._sync_counts(endpoint)
                    self.moto.set_endpoint_status(name, "InService")

        self._spawn(f"scale-{name}", scale)
        return self.moto.endpoint(name).arn

    def _resize(self, endpoint: Endpoint, deployment: Deployment, count: int) -> None:
        current = len(deployment.instances)
        if count > current:
            if deployment.kind == INFERENCE_COMPONENT:
                for _ in range(count - current):
                    deployment.instances.append(self._new_instance(endpoint, deployment))
            else:
                self._start_instances(endpoint, deployment, count - current)
        elif count < current:
            leaving = deployment.instances[count:]
            with self.lock:
                deployment.instances = deployment.instances[:count]
            if deployment.kind == INFERENCE_COMPONENT:
                self._move_copies_off(endpoint, deployment, leaving)
            else:
                for instance in leaving:
                    self._stop_instance(instance)
        deployment.desired_count = count

    def delete_endpoint(self, name: str) -> None:
        """DeleteEndpoint: Deleting while its processes stop, then gone."""
        endpoint = self._require_endpoint(name)
        with self.lock:
            attached = [c.name for c in self.components.values() if c.endpoint_name == name]
            if attached:
                raise ValidationException(
                    f"Cannot delete endpoint '{name}': it has inference components "
                    f"({', '.join(sorted(attached))}); delete them first."
                )
            endpoint.deleting = True
            self.moto.set_endpoint_status(name, "Deleting")

        def delete() -> None:
            with endpoint.busy:
                deployment = endpoint.deployment
                for instance in deployment.instances if deployment else []:
                    self._stop_instance(instance)
                shutil.rmtree(endpoint.workdir, ignore_errors=True)
                with self.lock:
                    if self.endpoints.get(name) is endpoint:
                        del self.endpoints[name]
                    with contextlib.suppress(Exception):
                        self.moto.sagemaker.delete_endpoint(name)

        self._spawn(f"delete-{name}", delete)

    # -- inference components ----------------------------------------------------------------

    def create_component(self, request: dict[str, Any]) -> str:
        """CreateInferenceComponent: validate as SageMaker does, then place its copies."""
        name = request["InferenceComponentName"]
        endpoint_name = request["EndpointName"]
        with self.lock:
            if name in self.components:
                raise ValidationException(
                    "Cannot create already existing inference component "
                    f'"{self.moto.arn("inference-component", name)}".'
                )
        endpoint = self._require_endpoint(endpoint_name)
        config = self.moto.endpoint_config(self.moto.endpoint(endpoint_name).endpoint_config_name)
        variant = (config.production_variants or [{}])[0]
        if variant.get("ModelName"):
            raise ValidationException(
                f"Endpoint {endpoint_name} is not set up for inference components: its "
                f"production variant {variant.get('VariantName')} has a model "
                f"({variant['ModelName']}). Use an endpoint config with ExecutionRoleArn and "
                "a variant without ModelName."
            )
        variant_name = request.get("VariantName") or variant.get("VariantName")
        if variant_name != variant.get("VariantName"):
            raise ValidationException(
                f"Variant {variant_name} does not exist on endpoint {endpoint_name}."
            )
        specification = dict(request.get("Specification") or {})
        self._validate_specification(specification)
        copies = int((request.get("RuntimeConfig") or {}).get("CopyCount", 0))
        if copies < 1:
            raise ValidationException("Inference components copy count an integer larger than 0")
        component = Component(
            name=name,
            arn=self.moto.arn("inference-component", name),
            endpoint_name=endpoint_name,
            endpoint_arn=self.moto.endpoint(endpoint_name).arn,
            variant_name=variant_name,
            specification=specification,
            desired_copies=copies,
            tags=list(request.get("Tags") or []),
        )
        with self.lock:
            self.components[name] = component

        def create() -> None:
            with component.busy:
                self._wait_in_service(endpoint)
                self._converge(component, endpoint, on_failure="Failed")

        self._spawn(f"create-ic-{name}", create)
        return component.arn

    def _validate_specification(self, specification: dict[str, Any]) -> None:
        model_name = specification.get("ModelName")
        if not model_name:
            raise ValidationException(
                "The stand-in needs Specification.ModelName (a model made with CreateModel)."
            )
        self.moto.model_container(model_name)
        requirements = specification.get("ComputeResourceRequirements") or {}
        if not requirements.get("MinMemoryRequiredInMb"):
            raise ValidationException(
                "1 validation error detected: Value null at "
                "'specification.computeResourceRequirements.minMemoryRequiredInMb' failed to "
                "satisfy constraint: Member must not be null"
            )

    def _wait_in_service(self, endpoint: Endpoint, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while endpoint.deployment is None and time.monotonic() < deadline:
            moto_endpoint = self.moto.endpoint(endpoint.name)
            if moto_endpoint is None or moto_endpoint.endpoint_status == "Failed":
                break
            time.sleep(0.05)
        if endpoint.deployment is None:
            raise StartFailed(f"Endpoint {endpoint.name} is not in service.")

    def require_component(self, name: str) -> Component:
        with self.lock:
            component = self.components.get(name)
        if component is None:
            raise ValidationException(
                f"Could not find inference component "
                f'"{self.moto.arn("inference-component", name)}".'
            )
        return component

    def _place(
        self, endpoint: Endpoint, deployment: Deployment, memory_mb: int, component: str
    ) -> Instance | None:
        """The instance with the most free memory that fits a copy (managed instance scaling
        adds one up to its maximum when none does); None when it cannot fit."""
        with self.lock:
            fitting = [i for i in deployment.instances if i.free_mb >= memory_mb]
            if fitting:
                return max(fitting, key=lambda instance: instance.free_mb)
            if len(deployment.instances) < deployment.max_instances:
                instance = self._new_instance(endpoint, deployment)
                if instance.memory_mb >= memory_mb:
                    deployment.instances.append(instance)
                    self._sync_counts(endpoint)
                    logger.info(
                        "%s: managed scaling added %s for %s",
                        endpoint.name,
                        instance.instance_id,
                        component,
                    )
                    return instance
        return None

    def _shortfall(self, deployment: Deployment, memory_mb: int, missing: int) -> str:
        free = ", ".join(f"{i.instance_id}: {i.free_mb} MB free" for i in deployment.instances)
        per_instance_mb = instance_memory_mb(deployment.instance_type)
        return (
            f"Insufficient memory to place {missing} more cop{'y' if missing == 1 else 'ies'} "
            f"of {memory_mb} MB: the variant has {len(deployment.instances)} "
            f"{deployment.instance_type} instance(s) of {per_instance_mb} MB "
            f"({free or 'none'}) and cannot add instances "
            f"(managed instance scaling maximum {deployment.max_instances})."
        )

    def _start_copy(
        self, component: Component, instance: Instance, specification: dict[str, Any]
    ) -> Copy:
        container = self.moto.model_container(specification["ModelName"])
        copy_id = self._new_id("copy")
        workdir = instance.workdir / component.name / copy_id
        url = container.get("ModelDataUrl", "")
        memory_mb = int(specification["ComputeResourceRequirements"]["MinMemoryRequiredInMb"])
        placeholder = Copy(copy_id, instance, memory_mb, specification, process=None)  # type: ignore[arg-type]
        with self.lock:
            instance.copies.append(placeholder)  # reserve the memory while it starts
        try:
            try:
                unpack_archive(self.moto.read_s3(url), workdir / "model")
            except MissingS3Object as error:
                raise StartFailed(
                    f'Failed to download model data from URL: "{url}". Please ensure that there '
                    "is an object located at the URL and that the role passed to CreateModel "
                    "has permissions to download the object."
                ) from error
            try:
                process = self.image.start_single_model(
                    workdir / "triton", workdir / "model", container.get("Environment") or {}
                )
            except TritonStartFailed as error:
                raise StartFailed(
                    f"The container for inference component {component.name} did not pass "
                    f"the ping health check. Triton's log (stand-in): {error.reason}"
                ) from error
        except Exception:
            with self.lock:
                instance.copies.remove(placeholder)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        placeholder.process = process
        return placeholder

    def _retire_copy(self, component: Component, copy: Copy) -> None:
        """Take a copy out of routing, let its in-flight requests finish, then stop it."""
        with self.lock:
            if copy in component.copies:
                component.copies.remove(copy)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while copy.outstanding and time.monotonic() < deadline:
            time.sleep(0.02)
        self.image.stop(copy.process)
        with self.lock:
            if copy in copy.instance.copies:
                copy.instance.copies.remove(copy)
        shutil.rmtree(
            copy.process.workdir.parent if copy.process.workdir else "", ignore_errors=True
        )

    def _converge(self, component: Component, endpoint: Endpoint, *, on_failure: str) -> None:
        """Start or stop copies until the component has its desired count."""
        deployment = endpoint.deployment
        assert deployment is not None
        try:
            while len(component.copies) < component.desired_copies:
                instance = self._place(endpoint, deployment, component.memory_mb, component.name)
                if instance is None:
                    raise StartFailed(
                        self._shortfall(
                            deployment,
                            component.memory_mb,
                            component.desired_copies - len(component.copies),
                        )
                    )
                copy = self._start_copy(component, instance, component.specification)
                with self.lock:
                    component.copies.append(copy)
            while len(component.copies) > component.desired_copies:
                self._retire_copy(component, component.copies[-1])
        except StartFailed as error:
            with self.lock:
                component.status = on_failure
                component.failure_reason = str(error)
                component.modified = _now()
            return
        finally:
            self._shrink_idle(endpoint)
        with self.lock:
            component.status = "InService"
            component.failure_reason = None
            component.modified = _now()

    def _shrink_idle(self, endpoint: Endpoint) -> None:
        """Managed instance scaling releases instances that hold no copies, down to its minimum
        (SageMaker's idle release), which may be 0."""
        deployment = endpoint.deployment
        if deployment is None or (deployment.managed_scaling or {}).get("Status") != "ENABLED":
            return
        with self.lock:
            while len(deployment.instances) > deployment.min_instances:
                idle = [i for i in deployment.instances if not i.copies]
                if not idle:
                    break
                deployment.instances.remove(idle[-1])
                logger.info("%s: managed scaling released %s", endpoint.name, idle[-1].instance_id)
            deployment.desired_count = min(deployment.desired_count, len(deployment.instances))
            self._sync_counts(endpoint)

    def set_component_copies(self, name: str, copies: int) -> str:
        """UpdateInferenceComponentRuntimeConfig: scale the copies (0 keeps the instances)."""
        component = self.require_component(name)
        if copies < 0:
            raise ValidationException("CopyCount must be at least 0.")
        self._begin_update(component)
        endpoint = self._require_endpoint(component.endpoint_name)

        def scale() -> None:
            with component.busy:
                component.desired_copies = copies
                self._converge(component, endpoint, on_failure="InService")

        self._spawn(f"scale-ic-{name}", scale)
        return component.arn

    def _begin_update(self, component: Component) -> None:
        with self.lock:
            if component.status in ("Creating", "Updating", "Deleting"):
                raise ValidationException(
                    f"Inference component {component.name} is {component.status}; wait until "
                    "it is InService or Failed."
                )
            component.status = "Updating"
            component.failure_reason = None
            component.modified = _now()

    def update_component(self, request: dict[str, Any]) -> str:
        """UpdateInferenceComponent: a new specification rolls out in batches (new copies
        first), rolled back when a named CloudWatch alarm goes to ALARM during the update."""
        component = self.require_component(request["InferenceComponentName"])
        specification = request.get("Specification")
        runtime = request.get("RuntimeConfig")
        deployment_config = request.get("DeploymentConfig")
        if specification is not None:
            specification = {**component.specification, **specification}
            self._validate_specification(specification)
        self._begin_update(component)
        endpoint = self._require_endpoint(component.endpoint_name)

        def update() -> None:
            with component.busy:
                if runtime is not None:
                    component.desired_copies = int(runtime["CopyCount"])
                if specification is None:
                    self._converge(component, endpoint, on_failure="InService")
                    return
                component.last_deployment_config = deployment_config
                self._rolling_update(component, endpoint, specification, deployment_config or {})

        self._spawn(f"update-ic-{component.name}", update)
        return component.arn

    def _batch_size(self, policy: dict[str, Any] | None, copies: int) -> int:
        if not policy:
            return max(1, copies)
        value = int(policy.get("Value") or 1)
        if policy.get("Type") == "CAPACITY_PERCENT":
            return max(1, math.floor(copies * value / 100))
        return max(1, value)

    def _rolling_update(
        self,
        component: Component,
        endpoint: Endpoint,
        specification: dict[str, Any],
        deployment_config: dict[str, Any],
    ) -> None:
        deployment = endpoint.deployment
        assert deployment is not None
        policy = deployment_config.get("RollingUpdatePolicy") or {}
        alarms = [
            alarm["AlarmName"]
            for alarm in (deployment_config.get("AutoRollbackConfiguration") or {}).get("Alarms")
            or []
            if alarm.get("AlarmName")
        ]
        wait_s = float(policy.get("WaitIntervalInSeconds") or 0)
        target = component.desired_copies
        old_specification = component.specification
        batch = self._batch_size(policy.get("MaximumBatchSize"), target)
        new_memory = int(specification["ComputeResourceRequirements"]["MinMemoryRequiredInMb"])
        started: list[Copy] = []
        try:
            while len(started) < target:
                for _ in range(min(batch, target - len(started))):
                    instance = self._place(endpoint, deployment, new_memory, component.name)
                    if instance is None:
                        raise StartFailed(self._shortfall(deployment, new_memory, 1))
                    copy = self._start_copy(component, instance, specification)
                    started.append(copy)
                    with self.lock:
                        component.copies.append(copy)
                old_copies = [c for c in component.copies if c.specification is not specification]
                for copy in old_copies[:batch]:
                    self._retire_copy(component, copy)
                self._bake(wait_s, alarms)
            for copy in [c for c in component.copies if c.specification is not specification]:
                self._retire_copy(component, copy)
        except StartFailed as error:
            self._roll_back(component, endpoint, old_specification, started, policy, str(error))
            return
        with self.lock:
            component.specification = specification
            component.status = "InService"
            component.failure_reason = None
            component.modified = _now()
        self._shrink_idle(endpoint)

    def _bake(self, wait_s: float, alarms: list[str]) -> None:
        """Wait out a batch's interval, watching the rollback alarms."""
        deadline = time.monotonic() + wait_s
        while True:
            firing = self.moto.alarms_in_alarm(alarms)
            if firing:
                raise StartFailed(
                    f"Rolled back: CloudWatch alarm(s) {', '.join(firing)} went into ALARM "
                    "during the deployment."
                )
            if time.monotonic() >= deadline:
                return
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _roll_back(
        self,
        component: Component,
        endpoint: Endpoint,
        old_specification: dict[str, Any],
        started: list[Copy],
        policy: dict[str, Any],
        reason: str,
    ) -> None:
        """Put the old specification's copies back (in rollback batches), then stop the new."""
        deployment = endpoint.deployment
        assert deployment is not None
        batch = self._batch_size(
            policy.get("RollbackMaximumBatchSize") or policy.get("MaximumBatchSize"),
            component.desired_copies,
        )
        memory = int(old_specification["ComputeResourceRequirements"]["MinMemoryRequiredInMb"])
        try:
            while (
                len([c for c in component.copies if c.specification is old_specification])
                < component.desired_copies
            ):
                for _ in range(batch):
                    instance = self._place(endpoint, deployment, memory, component.name)
                    if instance is None:
                        raise StartFailed(self._shortfall(deployment, memory, 1))
                    copy = self._start_copy(component, instance, old_specification)
                    with self.lock:
                        component.copies.append(copy)
                new_copies = [c for c in component.copies if c in started]
                for copy in new_copies[:batch]:
                    self._retire_copy(component, copy)
        except StartFailed as error:
            reason = f"{reason} The rollback failed too: {error}"
        for copy in [c for c in component.copies if c in started]:
            self._retire_copy(component, copy)
        with self.lock:
            component.specification = old_specification
            component.status = "InService"
            component.failure_reason = reason
            component.modified = _now()
        self._shrink_idle(endpoint)

    def delete_component(self, name: str) -> None:
        """DeleteInferenceComponent: Deleting while its copies stop, then gone."""
        component = self.require_component(name)
        with self.lock:
            component.status = "Deleting"
            component.modified = _now()

        def delete() -> None:
            with component.busy:
                for copy in list(component.copies):
                    self._retire_copy(component, copy)
                with self.lock:
                    self.components.pop(name, None)
                endpoint = self.endpoints.get(component.endpoint_name)
                if endpoint is not None:
                    self._shrink_idle(endpoint)

        self._spawn(f"delete-ic-{name}", delete)

    def list_components(self) -> list[Component]:
        with self.lock:
            return sorted(self.components.values(), key=lambda c: c.created)

    # -- shutdown ----------------------------------------------------------------------------

    def processes(self) -> list[TritonProcess]:
        """Every Triton the stand-in runs now."""
        with self.lock:
            found = []
            for endpoint in self.endpoints.values():
                deployment = endpoint.deployment
                for instance in deployment.instances if deployment else []:
                    if instance.process is not None:
                        found.append(instance.process)
                    found.extend(c.process for c in instance.copies if c.process is not None)
            return found

    def stop_everything(self, *, kill: bool = False) -> None:
        """Stop every Triton (reset and shutdown); the AWS resources are moto's to forget.
        ``kill``: at once, without unloading their models in order (a reset forgets them)."""
        with self.lock:
            self._closing = True
        self.wait_idle(timeout_s=120.0)
        with self.lock:
            endpoints = list(self.endpoints.values())
            self.endpoints.clear()
            self.components.clear()
        instances = [
            instance
            for endpoint in endpoints
            if endpoint.deployment is not None
            for instance in endpoint.deployment.instances
        ]
        processes = [
            process
            for instance in instances
            for process in [instance.process, *(copy.process for copy in instance.copies)]
            if process is not None
        ]
        # In parallel: each Triton takes a second or two to unload its models and exit.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.image.kill if kill else self.image.stop, processes))
        for instance in instances:
            self._stop_instance(instance)  # already stopped: this clears and removes its files
        for endpoint in endpoints:
            shutil.rmtree(endpoint.workdir, ignore_errors=True)
        with self.lock:
            self._closing = False
