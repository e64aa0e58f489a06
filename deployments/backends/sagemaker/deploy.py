"""Rolling a version out to SageMaker, and answering through it: the ``sagemaker`` half of
``rollouts`` and ``inference``.

- MME: one multi-model endpoint per model kind (``tml-<kind>-mme``). Its instance type and count
  come from the placement solver, fed every version placed there plus the new one; a larger
  count updates the endpoint (rolling). The version's ``model.tar.gz`` is copied under the
  endpoint's S3 prefix and its key is the ``TargetModel``. Application autoscaling tracks
  InvocationsPerInstance (225) between the endpoint's minimum and maximum.
- Inference components: one component endpoint per kind (``tml-<kind>-ic``); each version is a
  component reserving its measured memory (and one accelerator on GPU types), with ``replicas``
  copies; autoscaling keeps pinned models at one copy or more and lets idle ones scale to zero.
- Dedicated: one endpoint for the model (``ded-<tenant>-<model>``) on the cheapest type that
  holds it alone — the savings baseline made real.

Then the kind's warm-up request is sent through the runtime as the probe, as locally.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments import usage
from deployments.backends.base import (
    InvokeResult,
    dedicated_endpoint_name,
    short_endpoint_name,
)
from deployments.backends.sagemaker.client import (
    EndpointRequest,
    SageMakerEndpointBackend,
    triton_image_uri,
)
from deployments.backends.sagemaker.instances import sync_instances
from deployments.exceptions import CapacityExceeded
from deployments.models import Deployment, Endpoint, InstanceType, Placement
from deployments.placement.rows import expected_memory_mb, instance_spec, version_spec
from deployments.placement.solver import PlacementPolicy, cheapest_fitting_type, solve
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion

ACTOR = "sagemaker"
# How long rollouts wait for an endpoint to be InService (SageMaker takes minutes).
WAIT_DELAY_S = 30
WAIT_MAX_ATTEMPTS = 60


def endpoint_backend() -> SageMakerEndpointBackend:
    """The backend for the configured region (clients are created lazily)."""
    return SageMakerEndpointBackend(region=settings.TENANTML_AWS_REGION)


def _require_configuration() -> tuple[str, str]:
    role = settings.TENANTML_SAGEMAKER_ROLE_ARN
    store = settings.ARTIFACT_STORE
    if not role:
        raise DomainError(
            "Deploying to SageMaker needs SAGEMAKER_ROLE_ARN (the role endpoints run as).",
            field="backend",
        )
    if store.kind != "s3":
        raise DomainError(
            "Deploying to SageMaker needs an s3:// ARTIFACT_STORE to hold model packages.",
            field="backend",
        )
    return role, store.uri


def _catalog() -> list[InstanceType]:
    return list(InstanceType.objects.filter(available=True, is_local=False))


def roll_out(*, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
    """Make the deployment's target version answer on SageMaker; returns (endpoint, probe ms)."""
    role, store_uri = _require_configuration()
    backend = endpoint_backend()
    target = deployment.target_version
    model = deployment.model
    region = settings.TENANTML_AWS_REGION
    image = triton_image_uri(region)
    if not target.package_uri.startswith("s3://"):
        raise DomainError(
            f"v{target.number}'s package is not in S3; package it with an s3:// ARTIFACT_STORE.",
            field="version",
        )
    pinned = model.tenant.models_pinned
    if deployment.mode == Endpoint.Mode.MME:
        endpoint, placement = _roll_out_mme(
            backend=backend, deployment=deployment, role=role, image=image, store_uri=store_uri
        )
    elif deployment.mode == Endpoint.Mode.DEDICATED:
        endpoint, placement = _roll_out_dedicated(
            backend=backend, deployment=deployment, role=role, image=image
        )
    else:
        endpoint, placement = _roll_out_component(
            backend=backend, deployment=deployment, role=role, image=image, pinned=pinned
        )
    latency_ms = probe(backend=backend, placement=placement)
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.LOADED,
        loaded_at=timezone.now(),
        last_warmed_at=timezone.now(),
        warmup_latency_ms=round(latency_ms, 2),
    )
    return endpoint, latency_ms


def _endpoint_row(*, name: str, mode: str, kind: str, instance_type: InstanceType, **extra):
    endpoint, created = Endpoint.objects.get_or_create(
        name=name,
        defaults={
            "backend": Endpoint.Backend.SAGEMAKER,
            "mode": mode,
            "model_kind": kind,
            "instance_type": instance_type,
            "region": settings.TENANTML_AWS_REGION,
            **extra,
        },
    )
    if created:
        record_event(
            kind="endpoint.created",
            actor=ACTOR,
            message=f"SageMaker {mode} endpoint {name} ({instance_type.name}) created.",
            endpoint=endpoint,
        )
    return endpoint


def _wait(backend: SageMakerEndpointBackend, endpoint: Endpoint, state) -> None:
    if not state.is_in_service:
        state = backend.wait_in_service(
            endpoint.name, delay_s=WAIT_DELAY_S, max_attempts=WAIT_MAX_ATTEMPTS
        )
    Endpoint.objects.filter(pk=endpoint.pk).update(
        status=Endpoint.Status.IN_SERVICE, external_arn=state.arn, status_reason=""
    )
    sync_instances(endpoint=endpoint, state=state, actor=ACTOR)


def _roll_out_mme(*, backend, deployment, role, image, store_uri):
    target = deployment.target_version
    kind = target.model.kind
    name = short_endpoint_name(f"tml-{kind}-mme")
    existing = Endpoint.objects.filter(name=name).first()
    placed = list(
        ModelVersion.objects.filter(placements__endpoint=existing)
        .exclude(placements__desired_state=Placement.DesiredState.UNLOADED)
        .exclude(pk=target.pk)
        .select_related("model__tenant")
        if existing
        else []
    )
    catalog = _catalog()
    if existing is not None:
        catalog = [t for t in catalog if t.pk == existing.instance_type_id] or catalog
    try:
        plan = solve(
            models=[version_spec(v) for v in placed] + [version_spec(target)],
            instance_types=[instance_spec(t) for t in catalog],
            policy=PlacementPolicy(mode="mme"),
        )
    except CapacityExceeded as exc:
        # The solver names whichever model failed, possibly another tenant's: this message
        # reaches the deploying tenant, so it names only their version.
        raise CapacityExceeded(
            f"{target} and the models already on {name} fit no instance type of the catalog "
            "at the target utilization; add a larger type or deploy it as dedicated.",
            field="version",
        ) from exc
    # The solver may send an outlier to its own endpoint; on SageMaker MME the shared endpoint
    # of the kind is what this mode means, so size it for everything and let outliers share.
    shared = max(plan.endpoints, key=lambda e: len(e.instances))
    instance_type = next(t for t in catalog if t.name == shared.instance_type)
    count = max(1, sum(len(e.instances) for e in plan.endpoints))
    endpoint = existing or _endpoint_row(
        name=name,
        mode=Endpoint.Mode.MME,
        kind=kind,
        instance_type=instance_type,
        min_instances=count,
        max_instances=max(count, 4),
    )
    prefix = f"{store_uri}/endpoints/{endpoint.name}/"
    state = backend.ensure_endpoint(
        EndpointRequest(
            name=endpoint.name,
            mode="mme",
            instance_type=endpoint.instance_type.name,
            role_arn=role,
            instance_count=count,
            image_uri=image,
            model_data_prefix=prefix,
        )
    )
    _wait(backend, endpoint, state)
    current = sum((v.current_instance_count or 0) for v in state.variants)
    if current and count > current:
        backend.update_instance_count(
            endpoint.name, count, delay_s=WAIT_DELAY_S, max_attempts=WAIT_MAX_ATTEMPTS
        )
        record_event(
            kind="endpoint.scaled",
            actor=ACTOR,
            message=f"{endpoint.name} grown from {current} to {count} instances for {target}.",
            endpoint=endpoint,
        )
    if endpoint.max_instances < count:
        Endpoint.objects.filter(pk=endpoint.pk).update(max_instances=count, min_instances=count)
        endpoint.refresh_from_db()
    backend.configure_variant_autoscaling(
        endpoint.name,
        min_instances=max(1, endpoint.min_instances),
        max_instances=max(endpoint.min_instances, endpoint.max_instances),
    )
    target_model = f"{target.model.tenant.slug}/{target.model.name}/v{target.number}.tar.gz"
    key = backend.add_model(
        endpoint_prefix=prefix, package_s3_uri=target.package_uri, target_model=target_model
    )
    return endpoint, _placement(target=target, endpoint=endpoint, external_name=key)


def _roll_out_dedicated(*, backend, deployment, role, image):
    target = deployment.target_version
    catalog = _catalog()
    chosen = cheapest_fitting_type(
        version_spec(target), [instance_spec(t) for t in catalog], PlacementPolicy(mode="dedicated")
    )
    instance_type = next(t for t in catalog if t.name == chosen.name)
    # One endpoint per version: the old one keeps serving until the new one answers.
    name = short_endpoint_name(f"{dedicated_endpoint_name(target.model)}-v{target.number}")
    endpoint = _endpoint_row(
        name=name,
        mode=Endpoint.Mode.DEDICATED,
        kind=target.model.kind,
        instance_type=instance_type,
    )
    state = backend.ensure_endpoint(
        EndpointRequest(
            name=endpoint.name,
            mode="dedicated",
            instance_type=instance_type.name,
            role_arn=role,
            image_uri=image,
            model_data_url=target.package_uri,
            environment={"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": target.triton_model_name},
        )
    )
    _wait(backend, endpoint, state)
    return endpoint, _placement(target=target, endpoint=endpoint, external_name="")


def _roll_out_component(*, backend, deployment, role, image, pinned: bool):
    target = deployment.target_version
    kind = target.model.kind
    catalog = _catalog()
    memory = expected_memory_mb(target)
    fitting = [t for t in catalog if t.host_memory_mb * 0.8 >= memory]
    if not fitting:
        raise DomainError(f"No instance type holds {target} ({memory:.0f} MB).", field="version")
    instance_type = min(fitting, key=lambda t: (t.usd_per_hour, t.name))
    name = short_endpoint_name(f"tml-{kind}-ic")
    endpoint = Endpoint.objects.filter(name=name).first() or _endpoint_row(
        name=name,
        mode=Endpoint.Mode.INFERENCE_COMPONENT,
        kind=kind,
        instance_type=instance_type,
        min_instances=1,
        max_instances=4,
    )
    state = backend.ensure_endpoint(
        EndpointRequest(
            name=endpoint.name,
            mode="inference-component",
            instance_type=endpoint.instance_type.name,
            role_arn=role,
            image_uri=image,
            min_instances=endpoint.min_instances,
            max_instances=endpoint.max_instances,
        )
    )
    _wait(backend, endpoint, state)
    component = short_endpoint_name(
        f"{target.model.tenant.slug}-{target.model.name}-v{target.number}".replace("_", "-")
    )
    gpu = endpoint.instance_type.gpu_count > 0
    copies = deployment.replicas
    backend.create_inference_component(
        name=component,
        endpoint_name=endpoint.name,
        image_uri=image,
        model_data_url=target.package_uri,
        role_arn=role,
        memory_mb=int(memory + 0.999),
        accelerators=1 if gpu else 0,
        copies=copies,
    )
    backend.wait_component_in_service(
        component, delay_s=WAIT_DELAY_S, max_attempts=WAIT_MAX_ATTEMPTS
    )
    backend.configure_component_autoscaling(
        component,
        min_copies=max(1, copies) if pinned else 0,
        max_copies=max(copies, 4),
        invocations_per_copy=225,
    )
    placement = _placement(target=target, endpoint=endpoint, external_name=component)
    Placement.objects.filter(pk=placement.pk).update(
        copies=copies, min_copies=min(copies, 1 if pinned else 0)
    )
    return endpoint, placement


def _placement(*, target: ModelVersion, endpoint: Endpoint, external_name: str) -> Placement:
    desired = Placement.desired_state_for(version=target)
    with transaction.atomic():
        placement, created = Placement.objects.get_or_create(
            version=target,
            endpoint=endpoint,
            instance=None,
            defaults={
                "external_name": external_name,
                "desired_state": desired,
            },
        )
        if not created:
            Placement.objects.filter(pk=placement.pk).update(
                external_name=external_name,
                desired_state=desired,
            )
            placement.refresh_from_db()
    if created:
        record_event(
            kind="placement.created",
            actor=ACTOR,
            message=f"{target} placed on SageMaker endpoint {endpoint.name}.",
            version=target,
            endpoint=endpoint,
        )
    return placement


def invoke_params(*, mode: str, external_name: str) -> dict:
    """How the runtime reaches a copy on an endpoint of ``mode``: its TargetModel on an MME, its
    component, or neither."""
    if mode == Endpoint.Mode.MME:
        return {"target_model": external_name}
    if mode == Endpoint.Mode.INFERENCE_COMPONENT:
        return {"inference_component": external_name}
    return {}


def probe(*, backend: SageMakerEndpointBackend, placement: Placement) -> float:
    """Send the kind's warm-up request through the runtime; the answer must decode."""
    kind = get_kind(placement.version.model.kind)
    started = time.perf_counter()
    answer = backend.invoke(
        endpoint_name=placement.endpoint.name,
        body=kind.encode_request(list(kind.warmup_inputs or ["warm-up"])),
        **invoke_params(mode=placement.endpoint.mode, external_name=placement.external_name),
    )
    if kind.decode_response is not None:
        try:
            kind.decode_response(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise DomainError(
                f"{placement.version} answered its probe with something that is not a "
                f"{kind.name} answer: {exc}",
                field="version",
            ) from exc
    return (time.perf_counter() - started) * 1000


def invoke(*, placement: Placement, inputs: list) -> InvokeResult:
    """Answer ``inputs`` through the SageMaker runtime, counted like a local request."""
    version = placement.version
    kind = get_kind(version.model.kind)
    started = time.perf_counter()
    error = True
    try:
        answer = endpoint_backend().invoke(
            endpoint_name=placement.endpoint.name,
            body=kind.encode_request(inputs),
            **invoke_params(mode=placement.endpoint.mode, external_name=placement.external_name),
        )
        outputs = kind.decode_response(answer)
        error = False
    finally:
        latency_ms = (time.perf_counter() - started) * 1000
        usage.COUNTERS.record(
            version_id=version.pk,
            endpoint_id=placement.endpoint_id,
            tenant_id=version.model.tenant_id,
            latency_ms=latency_ms,
            cold_start=False,
            error=error,
            placement_id=placement.pk,
        )
    return InvokeResult(
        outputs=outputs, cold_start=False, latency_ms=latency_ms, model_version=version.number
    )
