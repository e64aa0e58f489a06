"""What a rebalance of the local fleet would save, and the moves it would make (a what-if).

New copies go to the instance with the least placed memory and nothing placed ever moves, so a
fleet that grew and shrank runs more Triton processes than a fresh packing of the same copies
needs. For each local multi-model endpoint with two instances or more, the copies placed on
its routable instances are packed afresh (``deployments.placement.solver.solve``: memory
alone, within the smallest instance budget, replicas on distinct instances); each fresh
instance becomes the current instance it shares most copies with
(``deployments.placement.rebalance.match_instances``), a copy moves where its fresh instance
is not the one that holds it, and the instances no fresh one becomes are retired. The saving
is the retired instances' hourly price over a month (730 hours); ``worth_doing`` compares it
with ``REBALANCE_MIN_SAVING_USD_MONTH``.

SageMaker endpoints are not rebalanced here: SageMaker chooses which of its instances holds a
model, and their instance counts follow their scaling policies. Shared-base endpoints hold
heads a few KB each; their instance count follows the request rate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings

from deployments.backends import backend_for
from deployments.exceptions import CapacityExceeded
from deployments.models import Endpoint, Instance, Placement
from deployments.placement.rebalance import HOURS_PER_MONTH, match_instances
from deployments.placement.rows import memory_of
from deployments.placement.solver import InstanceSpec, ModelSpec, PlacementPolicy, solve

# Memory is what bounds a local instance (its budget is already the usable share of the
# machine), so the packing reads memory alone.
LOCAL_POLICY = PlacementPolicy(
    target_utilization=1.0,
    max_models_per_instance=10**6,
    size_ratio_limit=float(10**6),
    requests_per_hour_per_instance=None,
)


@dataclass(frozen=True)
class Move:
    """One copy to move: the placement that holds it now and the instance to take it."""

    placement_id: int
    model: str
    version: int
    source_id: int
    source: str
    target_id: int
    target: str


@dataclass
class EndpointRebalance:
    endpoint_id: int
    endpoint: str
    instances_now: int
    instances_after: int
    usd_per_month_saved: float
    moves: list[Move] = field(default_factory=list)
    # Instances no fresh instance becomes: stopped once their copies have moved.
    retire: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class RebalanceReport:
    endpoints: list[EndpointRebalance]
    # Endpoints left as they are, and why.
    skipped: list[tuple[str, str]]
    min_saving_usd_month: float | None

    @property
    def instances_saved(self) -> int:
        return sum(len(e.retire) for e in self.endpoints)

    @property
    def usd_per_month_saved(self) -> float:
        return sum(e.usd_per_month_saved for e in self.endpoints)

    @property
    def copies_moved(self) -> int:
        return sum(len(e.moves) for e in self.endpoints)

    @property
    def worth_doing(self) -> bool:
        """Whether the saving reaches the operator's threshold (never, with none set)."""
        threshold = self.min_saving_usd_month
        saving = self.usd_per_month_saved
        return threshold is not None and saving > 0 and saving >= threshold

    def as_dict(self) -> dict:
        return {
            "instances_now": sum(e.instances_now for e in self.endpoints),
            "instances_after": sum(e.instances_after for e in self.endpoints),
            "instances_saved": self.instances_saved,
            "usd_per_month_saved": round(self.usd_per_month_saved, 2),
            "models_moved": len({(m.model, m.version) for e in self.endpoints for m in e.moves}),
            "copies_moved": self.copies_moved,
            "min_saving_usd_month": self.min_saving_usd_month,
            "worth_doing": self.worth_doing,
            "endpoints": [
                {
                    "endpoint": e.endpoint,
                    "instances_now": e.instances_now,
                    "instances_after": e.instances_after,
                    "usd_per_month_saved": round(e.usd_per_month_saved, 2),
                    "retire": [name for _, name in e.retire],
                    "moves": [
                        {"model": m.model, "version": m.version, "from": m.source, "to": m.target}
                        for m in e.moves
                    ],
                }
                for e in self.endpoints
            ],
            "skipped": [{"endpoint": name, "reason": reason} for name, reason in self.skipped],
        }


def rebalance_report(*, endpoint_id: int | None = None) -> RebalanceReport:
    """The rebalance of every live endpoint (or one), as the module docstring says."""
    endpoints = Endpoint.objects.exclude(
        status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED]
    ).select_related("instance_type")
    if endpoint_id is not None:
        endpoints = endpoints.filter(pk=endpoint_id)
    planned: list[EndpointRebalance] = []
    skipped: list[tuple[str, str]] = []
    for endpoint in endpoints.order_by("name"):
        reason = backend_for(endpoint).rebalance_refusal(endpoint=endpoint)
        if reason:
            skipped.append((endpoint.name, reason))
            continue
        try:
            plan = _endpoint_rebalance(endpoint)
        except CapacityExceeded as exc:
            skipped.append((endpoint.name, exc.message))
            continue
        if plan is not None:
            planned.append(plan)
    return RebalanceReport(
        endpoints=planned,
        skipped=skipped,
        min_saving_usd_month=settings.TENANTML_REBALANCE_MIN_SAVING_USD_MONTH,
    )


def _endpoint_rebalance(endpoint: Endpoint) -> EndpointRebalance | None:
    instances = list(
        endpoint.instances.filter(status__in=Instance.ROUTABLE_STATES).order_by("ordinal")
    )
    if len(instances) < 2:
        return None
    placements = list(
        Placement.objects.filter(instance__in=instances)
        .exclude(desired_state=Placement.DesiredState.UNLOADED)
        .select_related("version__model__tenant", "instance")
        .order_by("instance__ordinal", "id")
    )
    by_version: dict[int, list[Placement]] = defaultdict(list)
    for placement in placements:
        by_version[placement.version_id].append(placement)
    models = [
        ModelSpec(
            key=str(version_id),
            kind=endpoint.model_kind,
            host_memory_mb=max(memory_of(p) for p in copies),
            pinned=any(p.is_pinned for p in copies),
            replicas=len({p.instance_id for p in copies}),
        )
        for version_id, copies in sorted(by_version.items())
    ]
    hourly = float(endpoint.instance_type.usd_per_hour)
    spec = InstanceSpec(
        name=endpoint.instance_type.name,
        gpu_count=0,
        memory_per_gpu_mb=0,
        host_memory_mb=float(min(i.memory_budget_mb for i in instances)),
        vcpus=endpoint.instance_type.vcpus or 1,
        usd_per_hour=hourly,
    )
    fresh_bins = (
        {
            instance.name: set(instance.models)
            for plan in solve(models=models, instance_types=[spec], policy=LOCAL_POLICY).endpoints
            for instance in plan.instances
        }
        if models
        else {}
    )
    current = {str(i.pk): set() for i in instances}
    for placement in placements:
        current[str(placement.instance_id)].add(str(placement.version_id))
    if len(fresh_bins) >= len(instances):
        return EndpointRebalance(
            endpoint_id=endpoint.pk,
            endpoint=endpoint.name,
            instances_now=len(instances),
            instances_after=len(instances),
            usd_per_month_saved=0.0,
        )
    matched = match_instances(current, fresh_bins)
    by_pk = {str(i.pk): i for i in instances}
    moves: list[Move] = []
    moving: set[int] = set()
    for fresh_name, keys in sorted(fresh_bins.items()):
        target = by_pk[matched[fresh_name]]
        for key in sorted(keys - current[str(target.pk)], key=int):
            # A copy on an instance the fresh plan does not keep this version on.
            kept = {matched[name] for name, held in fresh_bins.items() if key in held}
            source = next(
                p
                for p in by_version[int(key)]
                if str(p.instance_id) not in kept and p.pk not in moving
            )
            moving.add(source.pk)
            model = source.version.model
            moves.append(
                Move(
                    placement_id=source.pk,
                    model=f"{model.tenant.slug}/{model.name}",
                    version=source.version.number,
                    source_id=source.instance_id,
                    source=str(source.instance),
                    target_id=target.pk,
                    target=str(target),
                )
            )
    kept_instances = set(matched.values())
    retire = [(i.pk, str(i)) for i in instances if str(i.pk) not in kept_instances]
    return EndpointRebalance(
        endpoint_id=endpoint.pk,
        endpoint=endpoint.name,
        instances_now=len(instances),
        instances_after=len(instances) - len(retire),
        usd_per_month_saved=hourly * len(retire) * HOURS_PER_MONTH,
        moves=moves,
        retire=retire,
    )
