"""Rolling a version out to SageMaker, and answering through it: the ``sagemaker`` half of
``rollouts`` and ``inference``.

- MME: one multi-model endpoint per model kind (``tml-<kind>-mme``). Its instance type and count
  come from the placement solver, fed every version placed there plus the new one; a larger
  count updates the endpoint (rolling). The version's ``model.tar.gz`` is copied under the
  endpoint's S3 prefix and its key is the ``TargetModel``. The variant's autoscaling follows
  the instance type: GPU memory at the endpoint's target (80 %) on GPU types,
  InvocationsPerInstance 225 on CPU ones, between the endpoint's minimum and maximum.
- Inference components: one component endpoint per kind (``tml-<kind>-ic``); each tenant model
  is one component (``tml-<tenant>-<model>``) reserving its measured memory (and one accelerator
  on GPU types), with ``replicas`` copies; a new version is a rolling update of that component
  onto the version's SageMaker model (``tml-<tenant>-<model>-v<N>``), rolled back by SageMaker if
  the component's 5xx alarm fires, so a rollout never doubles the copies it pays for.
  Each component's copies track invocations per copy at a target from its measured latency
  (``scaling``); pinned models keep one copy or more, idle unpinned ones scale to zero and come
  back on the next request (a no-capacity alarm's step policy, and the platform's own trigger).
- Dedicated: one endpoint for the version (``tml-ded-<tenant>-<model>-v<N>``) on the cheapest
  type that holds it alone — the savings baseline made real.

Every package sent is the version's image package: the Triton package plus the kind's runtime
layer for the image's Python (``models_registry.runtime_layers``). Then the kind's warm-up
request is sent through the runtime as the probe, as locally.

Retiring (``unload``): a placement no longer wanted loses what serves it alone — its S3 copy on
an MME, its component (or its version's model) on an IC endpoint, its whole endpoint when
dedicated — and an MME or IC endpoint left with no wanted placement is deleted with its
configs, models, scaling targets and S3 prefix (``SAGEMAKER_EMPTY_ENDPOINT_POLICY``). The
version kept for a one-call rollback keeps its resources for ``SAGEMAKER_ROLLBACK_WINDOW_MINUTES``
after a switch; the reconciler then retires it too. Every deletion is an Event.
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
from deployments.backends.sagemaker import scaling
from deployments.backends.sagemaker.client import (
    ComponentHasNoCopies,
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
from models_registry.services.packaging import image_package

ACTOR = "sagemaker"
# How long rollouts wait for an endpoint to be InService (SageMaker takes minutes).
WAIT_DELAY_S = 30
WAIT_MAX_ATTEMPTS = 60


def endpoint_backend() -> SageMakerEndpointBackend:
    """The backend for the configured region (clients are created lazily)."""
    return SageMakerEndpointBackend(region=settings.TENANTML_AWS_REGION)


def require_configuration() -> tuple[str, str]:
    """The role endpoints run as and the S3 store packages go to; refused when either is not
    configured."""
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


def serving_image() -> str:
    """The Triton image endpoints run: the configured one, or AWS's for the region."""
    return settings.TENANTML_SAGEMAKER_TRITON_IMAGE or triton_image_uri(
        settings.TENANTML_AWS_REGION, settings.TENANTML_SAGEMAKER_TRITON_VERSION
    )


def package_for_image(*, version: ModelVersion, image: str, actor: str) -> str:
    """The S3 URI of the version's package for ``image`` (built on first use)."""
    return image_package(
        version=version,
        image_uri=image,
        python_version=settings.TENANTML_SAGEMAKER_IMAGE_PYTHON,
        actor=actor,
    )


def _catalog() -> list[InstanceType]:
    return list(InstanceType.objects.filter(available=True, is_local=False))


def roll_out(*, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
    """Make the deployment's target version answer on SageMaker; returns (endpoint, probe ms)."""
    role, _store_uri = require_configuration()
    backend = endpoint_backend()
    target = deployment.target_version
    image = serving_image()
    if not target.package_uri.startswith("s3://"):
        raise DomainError(
            f"v{target.number}'s package is not in S3; package it with an s3:// ARTIFACT_STORE.",
            field="version",
        )
    package = package_for_image(version=target, image=image, actor=actor)
    if deployment.mode == Endpoint.Mode.MME:
        endpoint, placement = _roll_out_mme(
            backend=backend,
            deployment=deployment,
            role=role,
            image=image,
            package=package,
        )
    elif deployment.mode == Endpoint.Mode.DEDICATED:
        endpoint, placement = _roll_out_dedicated(
            backend=backend, deployment=deployment, role=role, image=image, package=package
        )
    else:
        endpoint, placement = _roll_out_component(
            backend=backend,
            deployment=deployment,
            role=role,
            image=image,
            package=package,
            actor=actor,
        )
    latency_ms = probe(backend=backend, placement=placement)
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.LOADED,
        loaded_at=timezone.now(),
        last_warmed_at=timezone.now(),
        warmup_latency_ms=round(latency_ms, 2),
    )
    if deployment.mode == Endpoint.Mode.INFERENCE_COMPONENT:
        # After the probe: the copies' target derives from the latency it measured.
        placement.refresh_from_db()
        scaling.register_component_policies(
            backend=backend, placement=placement, replicas=deployment.replicas, actor=actor
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


def _roll_out_mme(*, backend, deployment, role, image, package):
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
    prefix = mme_prefix(endpoint)
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
        scaled = backend.update_instance_count(
            endpoint.name, count, delay_s=WAIT_DELAY_S, max_attempts=WAIT_MAX_ATTEMPTS
        )
        sync_instances(endpoint=endpoint, state=scaled, actor=ACTOR)
        record_event(
            kind="endpoint.scaled",
            actor=ACTOR,
            message=f"{endpoint.name} grown from {current} to {count} instances for {target}.",
            endpoint=endpoint,
        )
    if endpoint.max_instances < count:
        Endpoint.objects.filter(pk=endpoint.pk).update(max_instances=count, min_instances=count)
        endpoint.refresh_from_db()
    scaling.register_variant_policies(backend=backend, endpoint=endpoint, actor=ACTOR)
    target_model = f"{target.model.tenant.slug}/{target.model.name}/v{target.number}.tar.gz"
    key = backend.add_model(
        endpoint_prefix=prefix, package_s3_uri=package, target_model=target_model
    )
    return endpoint, _placement(target=target, endpoint=endpoint, external_name=key)


def _roll_out_dedicated(*, backend, deployment, role, image, package):
    target = deployment.target_version
    catalog = _catalog()
    chosen = cheapest_fitting_type(
        version_spec(target), [instance_spec(t) for t in catalog], PlacementPolicy(mode="dedicated")
    )
    instance_type = next(t for t in catalog if t.name == chosen.name)
    # One endpoint per version: the old one keeps serving until the new one answers.
    name = short_endpoint_name(f"tml-{dedicated_endpoint_name(target.model)}-v{target.number}")
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
            model_data_url=package,
            environment=container_environment(target),
        )
    )
    _wait(backend, endpoint, state)
    return endpoint, _placement(target=target, endpoint=endpoint, external_name="")


def _roll_out_component(*, backend, deployment, role, image, package, actor):
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
        # Managed instance scaling may release the last instance once every component is at
        # zero copies only where the operator allows it.
        min_instances=0 if settings.TENANTML_SAGEMAKER_SCALE_INSTANCES_TO_ZERO else 1,
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
    component = component_name(target.model)
    model_name = version_model_name(target)
    gpu = endpoint.instance_type.gpu_count > 0
    copies = deployment.replicas
    memory_mb = int(memory + 0.999)
    existing = backend.describe_component(component)
    # How long this rollout's copies took to start: what a request that finds the component at
    # zero copies is told to wait until a start from zero is measured.
    started = time.monotonic()
    starting = existing is None or existing.model_name != model_name
    if existing is None:
        backend.create_inference_component(
            name=component,
            endpoint_name=endpoint.name,
            image_uri=image,
            model_data_url=package,
            role_arn=role,
            memory_mb=memory_mb,
            accelerators=1 if gpu else 0,
            copies=copies,
            model_name=model_name,
            environment=container_environment(target),
        )
        backend.put_component_error_alarm(component)
    elif existing.model_name != model_name:
        # The component serves another version: roll its copies onto this one in place, a copy
        # at a time, so the rollout never pays for twice the copies; SageMaker rolls back by
        # itself if the component's 5xx alarm fires while it does.
        backend.ensure_model(
            name=model_name,
            image_uri=image,
            model_data_url=package,
            role_arn=role,
            environment=container_environment(target),
        )
        alarm = backend.put_component_error_alarm(component)
        backend.wait_component_in_service(
            component, delay_s=WAIT_DELAY_S, max_attempts=WAIT_MAX_ATTEMPTS
        )
        backend.update_inference_component(
            name=component,
            model_name=model_name,
            memory_mb=memory_mb,
            accelerators=1 if gpu else 0,
            copies=copies,
            rollback_alarms=(alarm,),
        )
        record_event(
            kind="sagemaker.component_updating",
            actor=actor,
            message=f"{component}: rolling update from {existing.model_name} to {model_name}.",
            version=target,
            endpoint=endpoint,
        )
    elif (existing.desired_copies or 0) < 1:
        # The same version again on a component scaled to zero: its probe needs a copy.
        starting = True
        backend.set_component_copies(component, copies)
    updated = backend.wait_component_in_service(
        component, delay_s=WAIT_DELAY_S, max_attempts=WAIT_MAX_ATTEMPTS
    )
    if updated.model_name != model_name:
        backend.delete_model(model_name)  # nothing points at it: SageMaker rolled back
        raise DomainError(
            f"SageMaker rolled {component} back to {updated.model_name}: the update to "
            f"{target} raised its error alarm. {updated.failure_reason}".strip(),
            field="version",
        )
    start_ms = (time.monotonic() - started) * 1000 if starting else None
    placement = _placement(target=target, endpoint=endpoint, external_name=component)
    Placement.objects.filter(pk=placement.pk).update(
        copies=copies,
        min_copies=min(copies, 1 if placement.is_pinned else 0),
        **({"load_time_ms": round(start_ms, 1)} if start_ms is not None else {}),
    )
    # The component answers only as this version now: another version's placement on it holds
    # no copies, though its SageMaker model stays until that placement is retired (a rollback
    # rolls the component back onto it).
    Placement.objects.filter(
        endpoint=endpoint, external_name=component, version__model_id=target.model_id
    ).exclude(pk=placement.pk).exclude(actual_state=Placement.ActualState.UNLOADED).update(
        actual_state=Placement.ActualState.EVICTED, updated_at=timezone.now()
    )
    return endpoint, placement


def container_environment(version: ModelVersion) -> dict[str, str]:
    """The container environment a single-model endpoint or component of ``version`` runs
    with: which model of the archive Triton serves at /invocations."""
    return {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": version.triton_model_name}


def component_name(model) -> str:
    """``tml-<tenant>-<model>``: the one inference component of a tenant model."""
    return short_endpoint_name(f"tml-{model.tenant.slug}-{model.name}")


def version_model_name(version: ModelVersion) -> str:
    """``tml-<tenant>-<model>-v<N>``: the SageMaker model of one version on an IC endpoint."""
    return short_endpoint_name(
        f"tml-{version.model.tenant.slug}-{version.model.name}-v{version.number}"
    )


def mme_prefix(endpoint: Endpoint) -> str:
    """The S3 prefix a multi-model endpoint loads its TargetModels from."""
    return f"{settings.ARTIFACT_STORE.uri}/endpoints/{endpoint.name}/"


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
    backend = endpoint_backend()
    try:
        try:
            answer = backend.invoke(
                endpoint_name=placement.endpoint.name,
                body=kind.encode_request(inputs),
                **invoke_params(
                    mode=placement.endpoint.mode, external_name=placement.external_name
                ),
            )
        except ComponentHasNoCopies as exc:
            raise scaling.no_copy_answer(
                backend=backend,
                placement_id=placement.pk,
                approximate_load_s=exc.approximate_load_s,
            ) from exc
        outputs = kind.decode_response(answer)
        error = False
        if scaling.answered(placement.pk):
            scaling.record_back_from_zero(placement_id=placement.pk)
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
