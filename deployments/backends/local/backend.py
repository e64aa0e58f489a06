"""``ServingBackend`` over local Triton processes (the embedded default and the test backend)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from config.errors import DomainError
from deployments.backends.base import (
    CloudMetrics,
    Copy,
    Forwarded,
    GenerationStream,
    InvokeResult,
    PreparedProbe,
    ReconcileReport,
)
from deployments.backends.local import forward as forwarding
from deployments.backends.local import reconcile, rollout, runtime, shared_base
from deployments.exceptions import ForwardFailed
from deployments.models import Deployment, Endpoint, Instance, Placement


class LocalServingBackend:
    """Deployments on Triton processes of this machine, in SageMaker multi-model mode."""

    name = Endpoint.Backend.LOCAL
    # The platform measures its own instances (the minute sampler), no cloud reports them.
    reports_cloud_metrics = False
    modes = (Endpoint.Mode.MME, Endpoint.Mode.DEDICATED, Endpoint.Mode.SHARED_BASE)

    # Shared-base endpoints (one encoder per instance, tenants' heads in it) are served by
    # ``shared_base``; the others by ``rollout`` and ``runtime``.

    def roll_out(self, *, deployment: Deployment, actor: str) -> tuple[Endpoint, float]:
        if deployment.mode == Endpoint.Mode.SHARED_BASE:
            return shared_base.roll_out(deployment=deployment, actor=actor)
        return rollout.roll_out(deployment=deployment, actor=actor)

    def prepare_probe(self, *, placement: Placement, actor: str) -> PreparedProbe:
        if shared_base.serves(placement):
            return shared_base.prepare_probe(placement=placement, actor=actor)
        return runtime.prepare_probe(placement=placement, actor=actor)

    def record_probe(self, *, placement: Placement, latency_ms: float) -> None:
        runtime.record_probe(placement=placement, latency_ms=latency_ms)

    def invoke(self, *, placement: Placement, inputs: list) -> InvokeResult:
        if shared_base.serves(placement):
            return shared_base.invoke(placement=placement, inputs=inputs)
        return runtime.invoke_placement(placement=placement, inputs=inputs)

    async def forward(
        self, *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
    ) -> Forwarded:
        serve = (
            shared_base.forward
            if copy.endpoint_mode == Endpoint.Mode.SHARED_BASE
            else forwarding.forward
        )
        return await serve(
            copy=copy,
            model_name=model_name,
            public_name=public_name,
            body=body,
            content_type=content_type,
        )

    async def generate(
        self, *, copy: Copy, model_name: str, public_name: str, body: bytes
    ) -> GenerationStream:
        if copy.endpoint_mode == Endpoint.Mode.SHARED_BASE:
            raise ForwardFailed(
                f"{public_name} is served from a shared base, which does not generate text.",
                status=409,
                code="not_supported",
            )
        return await forwarding.generate(
            copy=copy, model_name=model_name, public_name=public_name, body=body
        )

    def close_connections(self) -> None:
        forwarding.close_pools()

    def unload(self, *, placement: Placement, actor: str, reason: str) -> None:
        if shared_base.serves(placement):
            shared_base.unload(placement=placement, actor=actor, reason=reason)
            return
        rollout.unload(placement=placement, actor=actor, reason=reason)

    def warmup_budget_mb(self, *, placement: Placement) -> float | None:
        if shared_base.serves(placement):
            return shared_base.head_budget_mb(placement.instance, kind=placement.version.model.kind)
        return float(placement.instance.memory_budget_mb)

    def reconcile(self, *, endpoints: Sequence[Endpoint], report: ReconcileReport) -> None:
        reconcile.reconcile_endpoints(endpoints=endpoints, report=report)
        # A shared-base endpoint's instance count follows its request rate.
        shared_base.scale_endpoints(endpoints=endpoints, report=report)

    def hourly_cost_usd(self, *, endpoint: Endpoint) -> Decimal:
        live = endpoint.instances.exclude(status=Instance.Status.STOPPED).count()
        return endpoint.instance_type.usd_per_hour * live

    def audit_account(self, *, report: ReconcileReport) -> None:
        return None  # a local instance's orphaned models are put right by reconcile

    def drain_instance(self, *, instance: Instance, actor: str, stop: bool = True) -> Instance:
        if instance.endpoint.mode == Endpoint.Mode.SHARED_BASE:
            return shared_base.drain_instance(instance=instance, actor=actor, stop=stop)
        return rollout.drain_instance(instance=instance, actor=actor, stop=stop)

    def rebalance_refusal(self, *, endpoint: Endpoint) -> str:
        if endpoint.mode == Endpoint.Mode.SHARED_BASE:
            return "A shared-base endpoint's instance count follows its request rate."
        if endpoint.mode == Endpoint.Mode.DEDICATED:
            return "A dedicated endpoint holds one model."
        return ""

    def move_copy(
        self, *, placement: Placement, instance: Instance, actor: str, reason: str
    ) -> Placement:
        refusal = self.rebalance_refusal(endpoint=placement.endpoint)
        if refusal:
            raise DomainError(refusal, field="instance")
        return rollout.move_copy(placement=placement, instance=instance, actor=actor, reason=reason)

    def cloud_metrics(
        self, *, endpoints: Sequence[Endpoint], start: datetime, end: datetime
    ) -> CloudMetrics:
        return CloudMetrics()  # the platform measures its own instances (the minute sampler)
