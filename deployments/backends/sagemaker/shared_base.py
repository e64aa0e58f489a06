"""The shared-base layout on SageMaker: the kind's shared encoder is the one TargetModel of a
multi-model endpoint (``tml-<kind>-shared``), and tenants' heads are loaded into it, answered and
unloaded through ``InvokeEndpoint`` with that TargetModel (the bodies of
``deployments.backends.shared_heads``, the same as on a local Triton).

SageMaker loads the encoder on an instance with its first request there and may route a
TargetModel's requests to any of the endpoint's instances, each with its own head cache: a
request that reaches an instance without its head is answered "not resident", the head is
loaded (the request then reaches an instance that has it, or loads it there too) and the request
is sent again, up to ``MAX_ATTEMPTS`` times: a cold start.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments import usage
from deployments.backends.base import (
    Copy,
    Forwarded,
    InvokeResult,
    in_thread,
    record_rollout_progress,
    short_endpoint_name,
)
from deployments.backends.sagemaker import deploy
from deployments.backends.sagemaker.client import EndpointRequest, SageMakerEndpointBackend
from deployments.backends.sagemaker.instances import sync_instances
from deployments.backends.shared_heads import (
    HeadsNotLoaded,
    infer_body,
    load_head_body,
    parse_heads_answer,
    parse_infer_answer,
    unload_head_body,
)
from deployments.backends.shared_requests import (
    head_files,
    head_id,
    join_body,
    single_model_answer,
    split_body,
    with_head,
)
from deployments.exceptions import ForwardFailed, ModelLoadFailed, UpstreamError
from deployments.models import Deployment, Endpoint, InstanceType, Placement
from models_registry import artifacts
from models_registry.kinds import get_kind
from models_registry.runtime_layers import build_runtime_layer
from models_registry.shared_base import build_shared_base_package, shared_base_model_name
from models_registry.triton_runtime.tenantml_head import head_digest

ACTOR = "sagemaker"
MB = 1024 * 1024
# Tries of a request whose head is not resident where it landed (one per instance, mostly).
MAX_ATTEMPTS = 3


def endpoint_name(kind: str) -> str:
    """The kind's shared-base endpoint on SageMaker."""
    return short_endpoint_name(f"tml-{kind}-shared")


# The shared packages this process stored (deterministic: the same base, code and layer make
# the same bytes, so a package stored by another process is simply stored again).
_PACKAGES: dict[str, str] = {}


def shared_package_uri(*, kind: str, python_version: str) -> str:
    """The stored package of the kind's shared model for the serving image's Python, with the
    kind's runtime layer vendored (built and stored once per base and Python)."""
    name = shared_base_model_name(kind=kind)
    key = f"packages/shared/{kind}/{name}-py{python_version}.tar.gz"
    stored = _PACKAGES.get(key)
    if stored is not None:
        return stored
    layer = build_runtime_layer(
        requirements=get_kind(kind).runtime_requirements,
        python_version=python_version,
        platform_version=importlib.metadata.version("tenantml"),
        cache_dir=Path(settings.VAR_DIR) / "runtime-layers",
    )
    with tempfile.TemporaryDirectory(prefix="tenantml-shared-") as scratch:
        info = build_shared_base_package(
            kind=kind, out_path=Path(scratch) / "model.tar.gz", runtime_layer=layer
        )
        stored = _PACKAGES[key] = artifacts.put_file(key, info.path).uri
    return stored


def _endpoint_row(*, kind: str) -> Endpoint:
    types = list(InstanceType.objects.filter(available=True, is_local=False))
    if not types:
        raise DomainError("The instance catalog offers no SageMaker instance type.")
    expected = float(getattr(get_kind(kind), "expected_memory_mb", 0) or 0)
    fitting = [t for t in types if t.host_memory_mb * 0.8 >= expected] or types
    instance_type = min(fitting, key=lambda t: (t.usd_per_hour, t.name))
    endpoint, created = Endpoint.objects.get_or_create(
        name=endpoint_name(kind),
        defaults={
            "backend": Endpoint.Backend.SAGEMAKER,
            "mode": Endpoint.Mode.SHARED_BASE,
            "model_kind": kind,
            "instance_type": instance_type,
            "region": settings.TENANTML_AWS_REGION,
        },
    )
    if created:
        record_event(
            kind="endpoint.created",
            actor=ACTOR,
            message=(
                f"SageMaker shared-base endpoint {endpoint.name} ({instance_type.name}) created: "
                f"its one TargetModel is the shared {kind} encoder."
            ),
            endpoint=endpoint,
        )
    return endpoint


def roll_out(
    *, backend: SageMakerEndpointBackend, deployment: Deployment, role: str, image: str
) -> tuple[Endpoint, Placement]:
    """Put the kind's shared encoder on its shared-base endpoint (created or updated to the
    serving image), place the target version's head there and load it."""
    target = deployment.target_version
    kind = target.model.kind
    endpoint = _endpoint_row(kind=kind)
    record_rollout_progress(
        deployment, f"Placing v{target.number}'s head on {endpoint.name}.", endpoint=endpoint
    )
    package = shared_package_uri(kind=kind, python_version=settings.TENANTML_SAGEMAKER_IMAGE_PYTHON)
    prefix = deploy.mme_prefix(endpoint)
    state = backend.ensure_endpoint(
        EndpointRequest(
            name=endpoint.name,
            mode="mme",
            instance_type=endpoint.instance_type.name,
            role_arn=role,
            instance_count=max(1, endpoint.min_instances),
            image_uri=image,
            model_data_prefix=prefix,
        )
    )
    if not state.is_in_service:
        state = backend.wait_in_service(
            endpoint.name, delay_s=deploy.WAIT_DELAY_S, max_attempts=deploy.WAIT_MAX_ATTEMPTS
        )
    Endpoint.objects.filter(pk=endpoint.pk).update(
        status=Endpoint.Status.IN_SERVICE, external_arn=state.arn, status_reason=""
    )
    sync_instances(endpoint=endpoint, state=state, actor=ACTOR)
    key = backend.add_model(
        endpoint_prefix=prefix,
        package_s3_uri=package,
        target_model=f"{shared_base_model_name(kind=kind)}.tar.gz",
    )
    head_npz, labels_json = head_files(target)
    desired = Placement.desired_state_for(version=target)
    with transaction.atomic():
        placement, _ = Placement.objects.update_or_create(
            version=target,
            endpoint=endpoint,
            instance=None,
            defaults={
                "external_name": key,
                "desired_state": desired,
                "head_sha256": head_digest(head_npz, labels_json),
                "host_memory_mb": (len(head_npz) + len(labels_json)) / MB,
            },
        )
    placement = Placement.objects.select_related("version__model__tenant", "endpoint").get(
        pk=placement.pk
    )
    record_rollout_progress(deployment, f"Loading v{target.number}'s head on {endpoint.name}.")
    held = load_head(backend=backend, placement=placement)
    Placement.objects.filter(pk=placement.pk).update(
        host_memory_mb=held / MB if held else placement.host_memory_mb
    )
    return endpoint, placement


def roll_out_and_probe(*, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
    """Roll the deployment's target version out as a head on the kind's shared encoder and
    probe it; the endpoint and the probe's latency in ms."""
    role, _store = deploy.require_configuration()
    backend = deploy.endpoint_backend()
    endpoint, placement = roll_out(
        backend=backend, deployment=deployment, role=role, image=deploy.serving_image()
    )
    latency_ms = probe(backend=backend, placement=placement)
    now = timezone.now()
    Placement.objects.filter(pk=placement.pk).update(
        actual_state=Placement.ActualState.LOADED,
        loaded_at=now,
        last_warmed_at=now,
        warmup_latency_ms=round(latency_ms, 2),
    )
    record_event(
        kind="placement.loaded",
        actor=actor,
        message=f"{placement.version}'s head loaded into the shared encoder on {endpoint.name}.",
        version=placement.version,
        endpoint=endpoint,
        data={"head": True},
    )
    return endpoint, latency_ms


def load_head(*, backend: SageMakerEndpointBackend, placement: Placement) -> int | None:
    """Send the placement's head (verified against the digest recorded when it was placed) to
    the shared encoder; the bytes it holds for it. No database access: a warm-up thread may
    call it."""
    version = placement.version
    head_npz, labels_json = head_files(version)
    digest = head_digest(head_npz, labels_json)
    if placement.head_sha256 and digest != placement.head_sha256:
        raise ModelLoadFailed(
            f"{version}'s head files do not match the digest recorded when it was placed; "
            "it is not loaded."
        )
    heads = parse_heads_answer(
        backend.invoke(
            endpoint_name=placement.endpoint.name,
            body=load_head_body(
                head_id=head_id(version), head_npz=head_npz, labels_json=labels_json, sha256=digest
            ),
            target_model=placement.external_name,
        )
    )
    return heads.get(head_id(version))


def unload_head(*, backend: SageMakerEndpointBackend, placement: Placement) -> None:
    """Drop the placement's head from the shared encoder (on the instance the call reaches; the
    others drop it when their caches need the room)."""
    # An endpoint that is gone or failing serves nothing of the head either.
    with contextlib.suppress(DomainError):
        backend.invoke(
            endpoint_name=placement.endpoint.name,
            body=unload_head_body(head_id=head_id(placement.version)),
            target_model=placement.external_name,
        )


def answer(
    *, backend: SageMakerEndpointBackend, placement: Placement, texts: list[str]
) -> tuple[list[dict], bool]:
    """The head's answers to ``texts`` and whether a head had to be loaded (no database)."""
    body = infer_body(texts=texts, head_ids=[head_id(placement.version)] * len(texts))
    cold = False
    for attempt in range(MAX_ATTEMPTS):
        try:
            answered = backend.invoke(
                endpoint_name=placement.endpoint.name,
                body=body,
                target_model=placement.external_name,
            )
            return parse_infer_answer(answered), cold
        except HeadsNotLoaded:
            if attempt == MAX_ATTEMPTS - 1:
                raise
            load_head(backend=backend, placement=placement)
            cold = True
    raise AssertionError("unreachable")


def probe(*, backend: SageMakerEndpointBackend, placement: Placement) -> float:
    """Send the kind's warm-up request with the head (loading it where it is not)."""
    kind = get_kind(placement.version.model.kind)
    started = time.perf_counter()
    answer(
        backend=backend,
        placement=placement,
        texts=[str(text) for text in (kind.warmup_inputs or ["warm-up"])],
    )
    return (time.perf_counter() - started) * 1000


def invoke(*, placement: Placement, inputs: list) -> InvokeResult:
    """Answer ``inputs`` with the head on the shared encoder, counted like a local request."""
    version = placement.version
    started = time.perf_counter()
    error, cold = True, False
    try:
        outputs, cold = answer(
            backend=deploy.endpoint_backend(),
            placement=placement,
            texts=[str(text) for text in inputs],
        )
        error = False
    finally:
        latency_ms = (time.perf_counter() - started) * 1000
        usage.COUNTERS.record(
            version_id=version.pk,
            endpoint_id=placement.endpoint_id,
            tenant_id=version.model.tenant_id,
            latency_ms=latency_ms,
            cold_start=cold,
            error=error,
            placement_id=placement.pk,
        )
    if cold:
        Placement.objects.filter(pk=placement.pk).update(last_invoked_at=timezone.now())
    return InvokeResult(
        outputs=outputs, cold_start=cold, latency_ms=latency_ms, model_version=version.number
    )


def _load_for_request(placement_id: int) -> None:
    placement = Placement.objects.select_related("version__model__tenant", "endpoint").get(
        pk=placement_id
    )
    load_head(backend=deploy.endpoint_backend(), placement=placement)


async def forward(
    *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
) -> Forwarded:
    """Send a proxied single-model request body to the shared encoder with the head on every
    row and answer as the single model would (a head not resident is loaded, then asked again)."""
    try:
        header, binary, is_binary = split_body(body, content_type)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ForwardFailed(
            f"The request is not valid JSON: {exc}", status=400, code="invalid"
        ) from exc
    shared_body, shared_type = join_body(with_head(header, model_name), binary, is_binary)
    backend = deploy.endpoint_backend()
    cold = False
    for attempt in range(MAX_ATTEMPTS):
        try:
            answer_type, data = await in_thread(backend.invoke_raw)(
                endpoint_name=copy.endpoint_name,
                body=shared_body,
                content_type=shared_type,
                target_model=copy.external_name,
            )
        except UpstreamError as exc:
            raise ForwardFailed(
                f"SageMaker did not answer: {exc.message}",
                status=502,
                code="upstream",
                metric="sagemaker",
            ) from exc
        try:
            answered, answer_binary, answer_is_binary = split_body(data, answer_type)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ForwardFailed(
                "The shared encoder answered with something that is not JSON.",
                status=502,
                code="upstream",
            ) from exc
        single, missing = single_model_answer(answered)
        if not missing:
            data, data_type = join_body(single, answer_binary, answer_is_binary)
            return Forwarded(status=200, content_type=data_type, body=data, cold_start=cold)
        if attempt < MAX_ATTEMPTS - 1:
            await in_thread(_load_for_request)(copy.placement_id)
            cold = True
    raise ForwardFailed(
        f"{public_name}'s head could not be kept loaded long enough to answer; retry shortly.",
        retry_after_s=1,
    )
