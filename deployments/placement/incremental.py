"""Adding models to a placed plan without re-reading the fleet: time grows with the instances of
the endpoints the new models join, not with the models already placed.

``solve(existing=..., rebalance=False)`` re-derives every instance from every model, which is
what a change of figures needs; a deployment of one new model needs only free room. For each new
model (heaviest first, ties by key) in the multi-model and dedicated modes:

- its kind's shared endpoint, first fit over its instances in order: an instance takes a copy
  when it does not hold one yet, is under the models-per-instance cap and stays within every
  budget apart — one GPU's memory (the first GPU with room), the host memory and the request
  capacity (the instance's figures in the plan, plus the copy's share); a copy hotter than a
  whole instance's request capacity only takes an empty one;
- else new instances of the endpoint's type, numbered after its last;
- a model the endpoint's type cannot hold alone, or far larger than the models already there
  (``size_ratio_limit`` × their mean memory: the plan keeps no median), gets a dedicated
  endpoint as ``solve`` gives it; a kind with no shared endpoint yet is solved fresh.

Nothing placed moves, and the plan's cost, baseline and savings are brought up to date.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from config.errors import DomainError
from deployments.placement.solver import (
    DEDICATED_MODE,
    MME_MODE,
    EndpointPlan,
    InstancePlan,
    InstanceSpec,
    ModelSpec,
    PlacementPlan,
    PlacementPolicy,
    Sizing,
    capacity_mb,
    dedicated_usd_per_hour,
    gpu_budget_mb,
    host_budget_mb,
    model_mb,
    shared_name,
    solve,
    uses_gpu,
)

_TOLERANCE = 1 + 1e-9


def _takes(
    instance: InstancePlan,
    model: ModelSpec,
    instance_type: InstanceSpec,
    policy: PlacementPolicy,
    requests: float,
) -> int | None:
    """The GPU (0 without GPUs) of ``instance`` that can take a copy of ``model``, or None."""
    if model.key in instance.models or len(instance.models) >= policy.max_models_per_instance:
        return None
    if instance.host_used_mb + model.host_memory_mb > host_budget_mb(instance_type, policy) * (
        _TOLERANCE
    ):
        return None
    per_instance = policy.requests_per_hour_per_instance
    if per_instance and requests > 0:
        if requests > per_instance * _TOLERANCE:
            return None  # hotter than an instance: an empty one alone
        if instance.requests_per_hour + requests > per_instance * _TOLERANCE:
            return None
    if not uses_gpu(instance_type):
        return 0
    budget = gpu_budget_mb(instance_type, policy) * _TOLERANCE
    mb = model_mb(model, instance_type)
    for number, used in enumerate(instance.gpu_used_mb):
        if used + mb <= budget:
            return number
    return None


def _with_copy(
    instance: InstancePlan,
    model: ModelSpec,
    instance_type: InstanceSpec,
    gpu: int,
    requests: float,
) -> InstancePlan:
    mb = model_mb(model, instance_type)
    gpu_models, gpu_used = instance.gpu_models, instance.gpu_used_mb
    if uses_gpu(instance_type):
        gpu_models = tuple(
            (*held, model.key) if number == gpu else held for number, held in enumerate(gpu_models)
        )
        gpu_used = tuple(
            used + mb if number == gpu else used for number, used in enumerate(gpu_used)
        )
    return dataclasses.replace(
        instance,
        models=(*instance.models, model.key),
        used_mb=instance.used_mb + mb,
        gpu_models=gpu_models,
        gpu_used_mb=gpu_used,
        host_used_mb=instance.host_used_mb + model.host_memory_mb,
        requests_per_hour=instance.requests_per_hour + requests,
    )


def _empty_instance(name: str, instance_type: InstanceSpec) -> InstancePlan:
    gpus = instance_type.gpu_count if uses_gpu(instance_type) else 0
    return InstancePlan(
        name=name,
        instance_type=instance_type.name,
        models=(),
        used_mb=0.0,
        capacity_mb=capacity_mb(instance_type),
        gpu_models=((),) * gpus,
        gpu_used_mb=(0.0,) * gpus,
    )


def _next_number(instances: Sequence[InstancePlan]) -> int:
    numbers = []
    for instance in instances:
        try:
            numbers.append(int(instance.name.rsplit("-", 1)[1]))
        except (IndexError, ValueError):
            continue
    return max(numbers, default=-1) + 1


def add_models(
    *,
    plan: PlacementPlan,
    models: Sequence[ModelSpec],
    instance_types: Sequence[InstanceSpec],
    policy: PlacementPolicy | None = None,
) -> PlacementPlan:
    """``plan`` with ``models`` (none of them placed yet) added; nothing placed moves."""
    policy = policy or PlacementPolicy()
    if policy.mode not in (MME_MODE, DEDICATED_MODE):
        raise DomainError(
            "Models are added in place in the multi-model and dedicated modes; solve with the "
            "existing plan for inference components.",
            field="mode",
        )
    keys = [m.key for m in models]
    if len(set(keys)) != len(keys) or any(k in plan.assignments for k in keys):
        raise DomainError("Model keys must be unique and not placed yet.", field="models")
    if any(m.replicas < 1 for m in models):
        raise DomainError("Every model needs at least one replica.", field="models")
    types_by_name = {t.name: t for t in instance_types}
    endpoints = list(plan.endpoints)
    position = {e.name: index for index, e in enumerate(endpoints)}
    assignments = dict(plan.assignments)
    fresh_kinds: dict[str, list[ModelSpec]] = {}
    dedicated: list[ModelSpec] = []
    opened_usd = 0.0
    order = sorted(models, key=lambda m: (-max(m.gpu_memory_mb, m.host_memory_mb), m.key))
    for model in order:
        name = shared_name(model.kind, policy)
        if policy.mode == DEDICATED_MODE:
            dedicated.append(model)
            continue
        if name not in position or endpoints[position[name]].instance_type not in types_by_name:
            fresh_kinds.setdefault(model.kind, []).append(model)
            continue
        endpoint = endpoints[position[name]]
        instance_type = types_by_name[endpoint.instance_type]
        held = sum(len(i.models) for i in endpoint.instances)
        mean_mb = sum(i.used_mb for i in endpoint.instances) / held if held else 0.0
        size = model.gpu_memory_mb if model.gpu_memory_mb > 0 else model.host_memory_mb
        too_large = mean_mb > 0 and size > policy.size_ratio_limit * mean_mb
        if too_large or not Sizing(instance_type, policy, policy.mode).fits(model):
            dedicated.append(model)
            continue
        instances = list(endpoint.instances)
        requests = model.requests_per_hour / model.replicas
        copies_left = model.replicas
        where: list[str] = []
        for index, instance in enumerate(instances):
            if not copies_left:
                break
            gpu = _takes(instance, model, instance_type, policy, requests)
            if gpu is not None:
                instances[index] = _with_copy(instance, model, instance_type, gpu, requests)
                where.append(instance.name)
                copies_left -= 1
        number = _next_number(instances)
        while copies_left:
            opened_usd += instance_type.usd_per_hour
            empty = _empty_instance(f"{endpoint.name}-{number:04d}", instance_type)
            instances.append(_with_copy(empty, model, instance_type, 0, requests))
            where.append(empty.name)
            number += 1
            copies_left -= 1
        endpoints[position[name]] = dataclasses.replace(endpoint, instances=instances)
        assignments[model.key] = where
    extra: list[EndpointPlan] = []
    for kind in sorted(fresh_kinds):
        solved = solve(models=fresh_kinds[kind], instance_types=instance_types, policy=policy)
        extra.extend(solved.endpoints)
        assignments.update(solved.assignments)
    if dedicated:
        dedicated_policy = dataclasses.replace(policy, mode=DEDICATED_MODE)
        solved = solve(models=dedicated, instance_types=instance_types, policy=dedicated_policy)
        extra.extend(solved.endpoints)
        assignments.update(solved.assignments)
    endpoints.extend(extra)
    cost = (
        plan.usd_per_hour
        + opened_usd
        + math.fsum(types_by_name[e.instance_type].usd_per_hour * len(e.instances) for e in extra)
    )
    baseline = plan.dedicated_usd_per_hour + dedicated_usd_per_hour(models, instance_types, policy)
    return PlacementPlan(
        endpoints=endpoints,
        assignments=assignments,
        usd_per_hour=cost,
        dedicated_usd_per_hour=baseline,
        savings=1 - cost / baseline if baseline > 0 else 0.0,
        scaled_to_zero=plan.scaled_to_zero,
    )
