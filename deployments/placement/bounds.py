"""Lower bounds on what a placement can cost: no packing of the same models does better.

Two classic bin-packing bounds, for item sizes ``w`` and bins of capacity ``C``:

- the continuous bound ``L1 = ⌈Σw / C⌉``;
- Martello and Toth's ``L2`` (1990): for a threshold ``α ≤ C/2``, the items larger than
  ``C − α`` each need a bin no item of size ≥ α can join, the items in ``(C/2, C − α]`` each need
  a bin of their own, and the items in ``[α, C/2]`` must fit in what those leave free or open
  more bins. ``L2`` is the largest such count over every ``α``; it is never below ``L1``.

``plan_lower_bound`` applies them per endpoint the way ``solver.solve`` lays a fleet out (one
shared endpoint per kind on one instance type, outliers on dedicated endpoints of their
cheapest type), so its figure bounds the cost of any plan under the same rules: per kind, the
cheapest type's price × the largest instance count any bound requires. The bounds read each
dimension apart (GPU memory per GPU, host memory, request capacity, the models-per-instance
cap, replicas on distinct instances) and the solver's packing weight (the largest of those
shares, which is what the solver packs): ``vector_usd_per_hour`` takes the dimensions alone,
a bound for any packing that adds each dimension apart; ``usd_per_hour`` adds the packing
weight's, the bound for the solver's own rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from deployments.placement.packing import martello_toth_l2
from deployments.placement.solver import (
    DEDICATED_MODE,
    MME_MODE,
    InstanceSpec,
    ModelSpec,
    PlacementPolicy,
    Sizing,
    accelerators_needed,
    cheapest_fitting_type,
    copies,
    gpu_budget_mb,
    host_budget_mb,
    is_outlier,
    median_mb,
    model_mb,
    shared_name,
    uses_gpu,
)


@dataclass(frozen=True)
class EndpointBound:
    """The fewest instances, and least cost, a kind's shared endpoint can have."""

    name: str
    kind: str
    instance_type: str
    instances: int
    usd_per_hour: float
    # What bounds it: "packing-weight", "gpu-memory", "host-memory", "requests", "model-cap",
    # "replicas" (the largest of each, by name).
    bounds: dict[str, int]
    # The fewest instances and least cost by the dimensions alone (on whichever type is cheapest).
    vector_instances: int
    vector_usd_per_hour: float


@dataclass(frozen=True)
class PlanBound:
    """A lower bound on a plan's cost under ``solve``'s rules, endpoint by endpoint."""

    usd_per_hour: float
    vector_usd_per_hour: float
    dedicated_usd_per_hour: float
    endpoints: list[EndpointBound]


def instance_bounds(
    models: Sequence[ModelSpec], instance_type: InstanceSpec, policy: PlacementPolicy
) -> dict[str, int]:
    """Per dimension, the fewest instances of ``instance_type`` that hold ``models``' copies."""
    sizing = Sizing(instance_type, policy, policy.mode)
    counts = [copies(m, policy) for m in models]
    weights = [
        w for m, c in zip(models, counts, strict=True) for w in [sizing.weight(m, c)] * c if c
    ]
    placed = [(m, c) for m, c in zip(models, counts, strict=True) if c]
    bounds: dict[str, int] = {
        "packing-weight": _slot_bound(weights, sizing),
        "model-cap": math.ceil(sum(counts) / max(policy.max_models_per_instance, 1)),
        "replicas": max(counts, default=0),
    }
    host = [m.host_memory_mb for m, c in placed for _ in range(c)]
    host_budget = host_budget_mb(instance_type, policy)
    if host_budget > 0 and host:
        bounds["host-memory"] = martello_toth_l2(host, host_budget)
    if uses_gpu(instance_type):
        if sizing.component:
            accelerators = [
                float(accelerators_needed(m, instance_type, policy))
                for m, c in placed
                for _ in range(c)
            ]
            bounds["gpu-memory"] = martello_toth_l2(accelerators, float(instance_type.gpu_count))
        else:
            gpu = [model_mb(m, instance_type) for m, c in placed for _ in range(c)]
            slots = martello_toth_l2(gpu, gpu_budget_mb(instance_type, policy))
            bounds["gpu-memory"] = math.ceil(slots / instance_type.gpu_count)
    per_instance = policy.requests_per_hour_per_instance
    if per_instance and not sizing.component:
        requests = [m.requests_per_hour / c for m, c in placed for _ in range(c)]
        # A model hotter than an instance takes one alone, as the solver weighs it.
        requests = [min(r, per_instance) for r in requests if r > 0]
        if requests:
            bounds["requests"] = martello_toth_l2(requests, per_instance)
    return bounds


def _slot_bound(weights: Sequence[float], sizing: Sizing) -> int:
    if not weights or sizing.slot_budget <= 0:
        return 0
    slots = martello_toth_l2(weights, sizing.slot_budget)
    return math.ceil(slots / sizing.slots)


def plan_lower_bound(
    *,
    models: Sequence[ModelSpec],
    instance_types: Sequence[InstanceSpec],
    policy: PlacementPolicy | None = None,
) -> PlanBound:
    """No plan of ``models`` under ``solve``'s rules costs less than this (fresh solve)."""
    policy = policy or PlacementPolicy()
    instance_types = sorted(instance_types, key=lambda t: t.name)
    dedicated_policy = PlacementPolicy(
        target_utilization=policy.target_utilization,
        max_models_per_instance=1,
        mode=DEDICATED_MODE,
        requests_per_hour_per_instance=None,
    )
    by_kind: dict[str, list[ModelSpec]] = {}
    for model in models:
        by_kind.setdefault(model.kind, []).append(model)
    dedicated = 0.0
    endpoints: list[EndpointBound] = []
    for kind in sorted(by_kind):
        group = sorted(by_kind[kind], key=lambda m: m.key)
        if policy.mode == DEDICATED_MODE:
            for model in group:
                price = cheapest_fitting_type(model, instance_types, dedicated_policy).usd_per_hour
                dedicated += price * model.replicas
            continue
        shared = group
        if policy.mode == MME_MODE:
            median = median_mb(group)
            shared = [m for m in group if not is_outlier(m, median, policy)]
            for model in group:
                if is_outlier(model, median, policy):
                    price = cheapest_fitting_type(
                        model, instance_types, dedicated_policy
                    ).usd_per_hour
                    dedicated += price * model.replicas
        if not shared:
            continue
        best: EndpointBound | None = None
        best_vector: tuple[float, int] | None = None
        for instance_type in instance_types:
            sizing = Sizing(instance_type, policy, policy.mode)
            if not all(sizing.fits(m) for m in shared):
                continue
            bounds = instance_bounds(shared, instance_type, policy)
            instances = max(bounds.values(), default=0)
            vector = max((v for k, v in bounds.items() if k != "packing-weight"), default=0)
            cost = instances * instance_type.usd_per_hour
            vector_cost = vector * instance_type.usd_per_hour
            if best is None or (cost, instance_type.name) < (best.usd_per_hour, best.instance_type):
                best = EndpointBound(
                    name=shared_name(kind, policy),
                    kind=kind,
                    instance_type=instance_type.name,
                    instances=instances,
                    usd_per_hour=cost,
                    bounds=bounds,
                    vector_instances=vector,
                    vector_usd_per_hour=vector_cost,
                )
            if best_vector is None or vector_cost < best_vector[0]:
                best_vector = (vector_cost, vector)
        if best is None:
            # Some model fits no type alone, or no type holds them all: no bound to give.
            for model in shared:
                cheapest_fitting_type(model, instance_types, policy)
            continue
        # The dimensions alone may be cheapest on another type than the packing weight.
        endpoints.append(
            dataclasses.replace(
                best, vector_usd_per_hour=best_vector[0], vector_instances=best_vector[1]
            )
        )
    return PlanBound(
        usd_per_hour=dedicated + math.fsum(e.usd_per_hour for e in endpoints),
        vector_usd_per_hour=dedicated + math.fsum(e.vector_usd_per_hour for e in endpoints),
        dedicated_usd_per_hour=dedicated,
        endpoints=endpoints,
    )
