"""``ServingBackend`` over SageMaker: endpoints, inference components and the runtime API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.utils import timezone

from config.aws import client as aws_client
from config.errors import DomainError
from deployments.backends.base import (
    CloudMetrics,
    Copy,
    Forwarded,
    GenerationStream,
    InvokeResult,
    PreparedProbe,
    ReconcileReport,
    in_thread,
)
from deployments.backends.sagemaker import (
    audit,
    cloudwatch,
    deploy,
    instances,
    retire,
    scaling,
    shared_base,
)
from deployments.backends.sagemaker.client import (
    DEFAULT_VARIANT,
    ComponentHasNoCopies,
    EndpointFailed,
)
from deployments.exceptions import ForwardFailed, UpstreamError
from deployments.models import Deployment, Endpoint, Instance, Placement

RECONCILER = "reconciler"

logger = logging.getLogger(__name__)


class SageMakerServingBackend:
    """Deployments on SageMaker (MME, inference components, dedicated endpoints)."""

    name = Endpoint.Backend.SAGEMAKER
    # CloudWatch reports the endpoints' figures (read by the cloud-metrics pass).
    reports_cloud_metrics = True
    modes = (
        Endpoint.Mode.MME,
        Endpoint.Mode.INFERENCE_COMPONENT,
        Endpoint.Mode.DEDICATED,
        Endpoint.Mode.SHARED_BASE,
    )

    def roll_out(self, *, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
        try:
            if deployment.mode == Endpoint.Mode.SHARED_BASE:
                return shared_base.roll_out_and_probe(deployment=deployment, actor=actor)
            return deploy.roll_out(deployment=deployment, actor=actor)
        except EndpointFailed as exc:
            # A Failed endpoint or component serves nothing: delete it (and what it runs)
            # rather than leave it in the account.
            retire.discard_failed(name=exc.name, actor=actor)
            raise

    def prepare_probe(self, *, placement: Placement, actor: str) -> PreparedProbe:
        # Nothing to load: SageMaker loads an MME's model on its first request by itself, so
        # the platform cannot tell a cold answer from a warm one, and counts none as cold.
        probe = (
            shared_base.probe
            if placement.endpoint.mode == Endpoint.Mode.SHARED_BASE
            else deploy.probe
        )
        return PreparedProbe(
            cold_start=False,
            prepare_ms=0.0,
            send=partial(probe, backend=deploy.endpoint_backend(), placement=placement),
        )

    def record_probe(self, *, placement: Placement, latency_ms: float) -> None:
        Placement.objects.filter(pk=placement.pk).update(
            last_warmed_at=timezone.now(), warmup_latency_ms=round(latency_ms, 2)
        )

    def invoke(self, *, placement: Placement, inputs: list) -> InvokeResult:
        if placement.endpoint.mode == Endpoint.Mode.SHARED_BASE:
            return shared_base.invoke(placement=placement, inputs=inputs)
        return deploy.invoke(placement=placement, inputs=inputs)

    async def forward(
        self, *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
    ) -> Forwarded:
        if copy.endpoint_mode == Endpoint.Mode.SHARED_BASE:
            return await shared_base.forward(
                copy=copy,
                model_name=model_name,
                public_name=public_name,
                body=body,
                content_type=content_type,
            )
        backend = deploy.endpoint_backend()
        try:
            answer_type, data = await in_thread(backend.invoke_raw)(
                endpoint_name=copy.endpoint_name,
                body=body,
                content_type=content_type,
                **deploy.invoke_params(mode=copy.endpoint_mode, external_name=copy.external_name),
            )
        except UpstreamError as exc:  # the endpoint failed us (5xx, unreachable)
            raise ForwardFailed(
                f"SageMaker did not answer: {exc.message}",
                status=502,
                code="upstream",
                metric="sagemaker",
            ) from exc
        except ComponentHasNoCopies as exc:
            # Scaled to zero: one copy is asked for (once, whoever asks) and the caller told
            # when to retry.
            answer = await in_thread(scaling.no_copy_answer)(
                backend=backend,
                placement_id=copy.placement_id,
                approximate_load_s=exc.approximate_load_s,
            )
            raise ForwardFailed(
                answer.message,
                status=answer.status_code,
                code=answer.code,
                retry_after_s=answer.retry_after_s,
            ) from exc
        if scaling.answered(copy.placement_id):
            await in_thread(scaling.record_back_from_zero)(placement_id=copy.placement_id)
        return Forwarded(status=200, content_type=answer_type, body=data, cold_start=False)

    async def generate(
        self, *, copy: Copy, model_name: str, public_name: str, body: bytes
    ) -> GenerationStream:
        # SageMaker's multi-model endpoints answer through InvokeEndpoint, which a decoupled
        # model's stream of responses does not pass.
        raise ForwardFailed(
            f"{public_name} is deployed on SageMaker, where generation is not served yet; "
            "deploy it on a local endpoint to stream its answers.",
            status=409,
            code="not_supported",
        )

    def close_connections(self) -> None:
        return None  # boto3 clients pool their own connections

    def unload(self, *, placement: Placement, actor: str, reason: str) -> None:
        # What serves the copy alone is deleted (it would keep billing); the endpoint goes too
        # when nothing wanted is left on it.
        try:
            retire.retire_placement(placement=placement, actor=actor, reason=reason)
        except DomainError as exc:
            # The placement stays unwanted and not unloaded: the reconciler retries.
            logger.warning("Retiring %s failed: %s", placement, exc.message)

    def warmup_budget_mb(self, *, placement: Placement) -> float | None:
        return None  # the endpoint loads a model on its first request by itself

    def reconcile(self, *, endpoints: Sequence[Endpoint], report: ReconcileReport) -> None:
        # One DescribeEndpoint (and the few row reads and writes that mirror it) per endpoint,
        # never a query per placement; one endpoint's AWS error does not stop the others.
        for endpoint in endpoints:
            try:
                self._reconcile_endpoint(endpoint=endpoint, report=report)
            except DomainError as exc:
                report.errors.append(f"{endpoint.name}: {exc.message}")
                logger.warning("Reconciling %s failed: %s", endpoint.name, exc.message)

    def _reconcile_endpoint(self, *, endpoint: Endpoint, report: ReconcileReport) -> None:
        # SageMaker restarts, replaces and scales its own instances; the platform mirrors how
        # many run, so cost counts what is billed (see ``instances``), and deletes what nobody
        # wants any more (a retirement a crash interrupted, the rollback copy past its window,
        # an endpoint left empty).
        state = deploy.endpoint_backend().describe_endpoint(endpoint.name)
        if state is None:
            # Without an ARN the endpoint never reached InService: its rollout may be creating
            # it right now. With one, it was deleted outside the platform.
            if endpoint.external_arn:
                report.marked_missing.extend(
                    instances.retire_vanished_endpoint(endpoint=endpoint, actor=RECONCILER)
                )
            return
        report.instances_checked += instances.sync_instances(
            endpoint=endpoint, state=state, actor=RECONCILER
        )
        if endpoint.mode == Endpoint.Mode.INFERENCE_COMPONENT:
            # Copies scale by themselves (to zero when idle): the placements say how many run.
            scaling.mirror_copies(
                backend=deploy.endpoint_backend(), endpoint=endpoint, actor=RECONCILER
            )
        report.errors += retire.retire_unwanted(endpoint=endpoint, actor=RECONCILER)
        retire.expire_rollback_copies(endpoint=endpoint, actor=RECONCILER)
        retire.retire_endpoint_if_empty(endpoint=endpoint, actor=RECONCILER)

    def hourly_cost_usd(self, *, endpoint: Endpoint) -> Decimal:
        live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
        return endpoint.instance_type.usd_per_hour * live

    def audit_account(self, *, report: ReconcileReport) -> None:
        audit.audit_account(report=report, actor=RECONCILER)

    def drain_instance(self, *, instance, actor: str, stop: bool = True):
        raise DomainError(
            "SageMaker replaces its own instances; drain a local instance, or scale the endpoint.",
            field="instance",
        )

    def rebalance_refusal(self, *, endpoint: Endpoint) -> str:
        return (
            "SageMaker chooses which of its instances holds each model; the endpoint's "
            "instance count follows its scaling policies."
        )

    def move_copy(self, *, placement, instance, actor: str, reason: str):
        raise DomainError(
            "SageMaker chooses which of its instances holds each model; only local instances "
            "are rebalanced model by model.",
            field="instance",
        )

    def cloud_metrics(
        self, *, endpoints: Sequence[Endpoint], start: datetime, end: datetime
    ) -> CloudMetrics:
        # Every endpoint's queries share calls (up to GetMetricData's 500 a call); the
        # components come from one query over all the inference-component endpoints.
        if not endpoints:
            return CloudMetrics()
        components: dict[int, set[str]] = {}
        for endpoint_id, name in (
            Placement.objects.filter(
                endpoint__in=[e for e in endpoints if e.mode == Endpoint.Mode.INFERENCE_COMPONENT]
            )
            .exclude(desired_state=Placement.DesiredState.UNLOADED)
            .exclude(external_name="")
            .values_list("endpoint_id", "external_name")
        ):
            components.setdefault(endpoint_id, set()).add(name)
        sources = [
            cloudwatch.EndpointSource(
                endpoint_id=endpoint.pk,
                endpoint_name=endpoint.name,
                mode=endpoint.mode,
                variant_name=DEFAULT_VARIANT,
                components=tuple(sorted(components.get(endpoint.pk, ()))),
                gpu=endpoint.instance_type.gpu_count > 0,
            )
            for endpoint in endpoints
        ]
        return cloudwatch.read_metrics(
            client=aws_client("cloudwatch", region=settings.TENANTML_AWS_REGION),
            sources=sources,
            start=start,
            end=end,
        )
