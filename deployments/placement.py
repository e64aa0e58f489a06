"""Which models share which instances: a pure bin-packing policy, no ORM.

Each model kind gets its own shared endpoint (multi-model by default). Its models are packed
first-fit-decreasing by memory into instances of one type, filled to ``target_utilization`` of the
memory that bounds them: GPU memory when the type has GPUs (a model that reports no GPU memory is
charged its host memory there, conservatively), host memory otherwise. Every type in the catalog
is tried and the cheapest group wins (ties by type name). A model much larger than the group's
median (``size_ratio_limit``) would waste the shared instances, so it gets a dedicated endpoint on
the cheapest type that holds it alone. Replicas of a model always land on distinct instances.

With an ``existing`` plan and ``rebalance=False`` nothing already placed moves: removed models free
their space, new models fill the free space of the endpoint's instances first, then new instances
of the same type. Everything is deterministic: ties are broken by model key and type name.

Simplification: a multi-GPU type's GPU memory is treated as one pool (``gpu_count`` ×
``memory_per_gpu_mb``); a model is not checked against a single GPU's memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from config.errors import DomainError
from deployments.exceptions import CapacityExceeded


@dataclass(frozen=True)
class ModelSpec:
    key: str
    kind: str
    host_memory_mb: float
    gpu_memory_mb: float = 0
    requests_per_hour: float = 0.0
    pinned: bool = False
    replicas: int = 1


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    gpu_count: int
    memory_per_gpu_mb: float
    host_memory_mb: float
    vcpus: int
    usd_per_hour: float


@dataclass(frozen=True)
class PlacementPolicy:
    target_utilization: float = 0.8
    max_models_per_instance: int = 500
    # A model larger than this × its kind's median memory gets a dedicated placement.
    size_ratio_limit: float = 4.0
    mode: str = "mme"


@dataclass(frozen=True)
class InstancePlan:
    name: str
    instance_type: str
    models: tuple[str, ...]
    used_mb: float
    capacity_mb: float


@dataclass(frozen=True)
class EndpointPlan:
    name: str
    kind: str
    mode: str
    instance_type: str
    instances: list[InstancePlan] = field(default_factory=list)


@dataclass(frozen=True)
class PlacementPlan:
    endpoints: list[EndpointPlan]
    assignments: dict[str, list[str]]
    usd_per_hour: float
    dedicated_usd_per_hour: float
    savings: float


DEDICATED_MODE = "dedicated"


def uses_gpu(instance_type: InstanceSpec) -> bool:
    return instance_type.gpu_count > 0 and instance_type.memory_per_gpu_mb > 0


def model_mb(model: ModelSpec, instance_type: InstanceSpec) -> float:
    """The memory ``model`` takes in the dimension that bounds ``instance_type``."""
    if uses_gpu(instance_type):
        return model.gpu_memory_mb if model.gpu_memory_mb > 0 else model.host_memory_mb
    return model.host_memory_mb


def capacity_mb(instance_type: InstanceSpec) -> float:
    """The full memory of the bounding dimension (before target utilization)."""
    if uses_gpu(instance_type):
        return instance_type.gpu_count * instance_type.memory_per_gpu_mb
    return instance_type.host_memory_mb


def budget_mb(instance_type: InstanceSpec, policy: PlacementPolicy) -> float:
    return policy.target_utilization * capacity_mb(instance_type)


def _fits_alone(model: ModelSpec, instance_type: InstanceSpec, policy: PlacementPolicy) -> bool:
    return model_mb(model, instance_type) <= budget_mb(instance_type, policy)


def cheapest_fitting_type(
    model: ModelSpec, instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> InstanceSpec:
    """The cheapest type (ties by name) that holds ``model`` alone; CapacityExceeded if none."""
    fitting = [t for t in instance_types if _fits_alone(model, t, policy)]
    if not fitting:
        raise CapacityExceeded(
            f"Model {model.key!r} ({model.host_memory_mb} MB host, {model.gpu_memory_mb} MB GPU) "
            "fits no instance type at the target utilization.",
            field="models",
        )
    return min(fitting, key=lambda t: (t.usd_per_hour, t.name))


# --- first-fit packing on a max segment tree -------------------------------------------------


class _Bins:
    """Instances of one type, filled first-fit; a segment tree finds the leftmost that fits.

    Leaves past the opened instances hold a full budget, so "open a new instance" is just the
    leftmost fitting leaf being an unopened one.
    """

    def __init__(self, budget: float, cap: int, expected: int = 1) -> None:
        self.budget = budget
        self.cap = cap
        self.used: list[float] = []
        self.models: list[list[str]] = []
        self.size = 1
        while self.size < max(expected, 1):
            self.size *= 2
        self.tree = [budget] * (2 * self.size)

    def open_count(self) -> int:
        return len(self.used)

    def _grow(self) -> None:
        old = self.size
        self.size *= 2
        tree = [self.budget] * (2 * self.size)
        for index in range(old):
            tree[self.size + index] = self.tree[old + index]
        for node in range(self.size - 1, 0, -1):
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
        self.tree = tree

    def _set(self, index: int, value: float) -> None:
        node = index + self.size
        tree = self.tree
        tree[node] = value
        node >>= 1
        while node:
            left, right = tree[2 * node], tree[2 * node + 1]
            tree[node] = left if left > right else right
            node >>= 1

    def _refresh(self, index: int) -> None:
        full = len(self.models[index]) >= self.cap
        self._set(index, -1.0 if full else self.budget - self.used[index])

    def add_existing(self, models: list[str], used: float) -> int:
        index = len(self.used)
        while index >= self.size:
            self._grow()
        self.used.append(used)
        self.models.append(list(models))
        self._refresh(index)
        return index

    def _find(self, lo: int, need: float) -> int:
        """Leftmost leaf index >= lo whose value >= need, or -1."""
        if lo >= self.size:
            return -1
        tree = self.tree
        node = lo + self.size
        if tree[node] < need:
            while True:
                while node & 1:
                    node >>= 1
                if node == 0:
                    return -1
                node += 1
                if tree[node] >= need:
                    break
        size = self.size
        while node < size:
            node *= 2
            if tree[node] < need:
                node += 1
        return node - size

    def place(self, key: str, mb: float, replicas: int) -> list[int]:
        """Put ``replicas`` copies on distinct instances, first fit; returns their indices."""
        chosen: list[int] = []
        lo = 0
        for _ in range(replicas):
            index = self._find(lo, mb)
            while index < 0:
                self._grow()
                index = self._find(lo, mb)
            while index >= len(self.used):
                self.used.append(0.0)
                self.models.append([])
            self.used[index] += mb
            self.models[index].append(key)
            self._refresh(index)
            chosen.append(index)
            lo = index + 1
        return chosen


def _pack_order(models: Iterable[ModelSpec], instance_type: InstanceSpec) -> list[ModelSpec]:
    return sorted(models, key=lambda m: (-model_mb(m, instance_type), m.key))


def _pack(
    models: Sequence[ModelSpec],
    instance_type: InstanceSpec,
    policy: PlacementPolicy,
    bins: _Bins | None = None,
) -> _Bins:
    if bins is None:
        budget = budget_mb(instance_type, policy)
        total = math.fsum(model_mb(m, instance_type) * m.replicas for m in models)
        expected = max(1, math.ceil(total / budget) if budget > 0 else 1)
        bins = _Bins(budget, policy.max_models_per_instance, expected)
    for model in _pack_order(models, instance_type):
        bins.place(model.key, model_mb(model, instance_type), model.replicas)
    return bins


def _lower_bound_instances(
    models: Sequence[ModelSpec], instance_type: InstanceSpec, policy: PlacementPolicy
) -> int:
    budget = budget_mb(instance_type, policy)
    total = math.fsum(model_mb(m, instance_type) * m.replicas for m in models)
    by_memory = math.ceil(total / budget - 1e-9) if budget > 0 else 0
    by_count = math.ceil(sum(m.replicas for m in models) / max(policy.max_models_per_instance, 1))
    by_replicas = max((m.replicas for m in models), default=0)
    return max(by_memory, by_count, by_replicas)


def _cheapest_group(
    models: Sequence[ModelSpec], instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> tuple[InstanceSpec, _Bins]:
    """Pack ``models`` on every type that holds each of them; keep the cheapest (ties by name)."""
    best: tuple[float, str, InstanceSpec, _Bins] | None = None
    for instance_type in sorted(instance_types, key=lambda t: t.name):
        if not all(_fits_alone(m, instance_type, policy) for m in models):
            continue
        bound = _lower_bound_instances(models, instance_type, policy) * instance_type.usd_per_hour
        if best is not None and bound > best[0]:
            continue  # cannot beat the best even if perfectly packed
        bins = _pack(models, instance_type, policy)
        cost = bins.open_count() * instance_type.usd_per_hour
        if best is None or (cost, instance_type.name) < (best[0], best[1]):
            best = (cost, instance_type.name, instance_type, bins)
    if best is None:
        # Name the first model (by key) that fits no type at all, else the largest.
        for model in sorted(models, key=lambda m: m.key):
            cheapest_fitting_type(model, instance_types, policy)
        model = max(models, key=lambda m: (m.host_memory_mb, m.gpu_memory_mb, m.key))
        raise CapacityExceeded(
            f"No single instance type holds every {model.kind!r} model; largest is {model.key!r}.",
            field="models",
        )
    return best[2], best[3]


def _median_mb(models: Sequence[ModelSpec]) -> float:
    sizes = sorted(m.gpu_memory_mb if m.gpu_memory_mb > 0 else m.host_memory_mb for m in models)
    if not sizes:
        return 0.0
    mid = len(sizes) // 2
    return sizes[mid] if len(sizes) % 2 else (sizes[mid - 1] + sizes[mid]) / 2


def _is_outlier(model: ModelSpec, median: float, policy: PlacementPolicy) -> bool:
    size = model.gpu_memory_mb if model.gpu_memory_mb > 0 else model.host_memory_mb
    return median > 0 and size > policy.size_ratio_limit * median


def _instance_name(endpoint: str, number: int) -> str:
    return f"{endpoint}-{number:04d}"


def _suffix(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _endpoint_from_bins(
    name: str,
    kind: str,
    mode: str,
    instance_type: InstanceSpec,
    bins: _Bins,
    names: list[str],
) -> EndpointPlan:
    capacity = capacity_mb(instance_type)
    instances = [
        InstancePlan(
            name=names[index],
            instance_type=instance_type.name,
            models=tuple(bins.models[index]),
            used_mb=bins.used[index],
            capacity_mb=capacity,
        )
        for index in range(bins.open_count())
        if bins.models[index]
    ]
    return EndpointPlan(
        name=name, kind=kind, mode=mode, instance_type=instance_type.name, instances=instances
    )


def _names_for(bins: _Bins, endpoint: str, existing_names: list[str]) -> list[str]:
    names = list(existing_names)
    number = max((_suffix(n) for n in names), default=-1) + 1
    while len(names) < bins.open_count():
        names.append(_instance_name(endpoint, number))
        number += 1
    return names


def _dedicated_endpoint(
    model: ModelSpec, instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> EndpointPlan:
    instance_type = cheapest_fitting_type(model, instance_types, policy)
    name = f"{model.kind}-{DEDICATED_MODE}-{model.key}"
    mb = model_mb(model, instance_type)
    instances = [
        InstancePlan(
            name=_instance_name(name, replica),
            instance_type=instance_type.name,
            models=(model.key,),
            used_mb=mb,
            capacity_mb=capacity_mb(instance_type),
        )
        for replica in range(model.replicas)
    ]
    return EndpointPlan(
        name=name,
        kind=model.kind,
        mode=DEDICATED_MODE,
        instance_type=instance_type.name,
        instances=instances,
    )


def dedicated_usd_per_hour(
    models: Iterable[ModelSpec], instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> float:
    """One cheapest-fitting instance per model replica: the baseline savings are measured on."""
    return math.fsum(
        cheapest_fitting_type(m, instance_types, policy).usd_per_hour * m.replicas for m in models
    )


def _shared_name(kind: str, policy: PlacementPolicy) -> str:
    return f"{kind}-{policy.mode}"


def solve(
    *,
    models: Sequence[ModelSpec],
    instance_types: Sequence[InstanceSpec],
    policy: PlacementPolicy | None = None,
    existing: PlacementPlan | None = None,
    rebalance: bool = False,
) -> PlacementPlan:
    """Place every model; see the module docstring for the rules."""
    policy = policy or PlacementPolicy()
    if not instance_types:
        raise CapacityExceeded("The instance catalog is empty.", field="instance_types")
    keys = [m.key for m in models]
    if len(set(keys)) != len(keys):
        raise DomainError("Model keys must be unique.", field="models")
    if any(m.replicas < 1 for m in models):
        raise DomainError("Every model needs at least one replica.", field="models")
    types_by_name = {t.name: t for t in instance_types}
    by_kind: dict[str, list[ModelSpec]] = {}
    for model in models:
        by_kind.setdefault(model.kind, []).append(model)

    keep = existing if (existing is not None and not rebalance) else None
    old_endpoints = {e.name: e for e in keep.endpoints} if keep else {}

    endpoints: list[EndpointPlan] = []
    for kind in sorted(by_kind):
        group = by_kind[kind]
        median = _median_mb(group)
        shared: list[ModelSpec] = []
        old_shared = old_endpoints.get(_shared_name(kind, policy))
        # Models already on the shared endpoint stay there even if the median moved.
        was_shared = {k for i in old_shared.instances for k in i.models} if old_shared else set()
        for model in sorted(group, key=lambda m: m.key):
            old = old_endpoints.get(f"{kind}-{DEDICATED_MODE}-{model.key}")
            if old is not None and len(old.instances) == model.replicas:
                endpoints.append(old)
            elif model.key in was_shared:
                shared.append(model)
            elif _is_outlier(model, median, policy):
                endpoints.append(_dedicated_endpoint(model, instance_types, policy))
            else:
                shared.append(model)
        if not shared:
            continue
        name = _shared_name(kind, policy)
        old = old_endpoints.get(name)
        if old is not None and old.instance_type in types_by_name:
            endpoints.append(_extend(old, shared, types_by_name[old.instance_type], policy))
        else:
            instance_type, bins = _cheapest_group(shared, instance_types, policy)
            endpoints.append(
                _endpoint_from_bins(
                    name, kind, policy.mode, instance_type, bins, _names_for(bins, name, [])
                )
            )

    assignments: dict[str, list[str]] = {}
    for endpoint in endpoints:
        for instance in endpoint.instances:
            for key in instance.models:
                assignments.setdefault(key, []).append(instance.name)
    cost = math.fsum(
        types_by_name[e.instance_type].usd_per_hour * len(e.instances) for e in endpoints
    )
    baseline = dedicated_usd_per_hour(models, instance_types, policy)
    savings = 1 - cost / baseline if baseline > 0 else 0.0
    return PlacementPlan(
        endpoints=endpoints,
        assignments=assignments,
        usd_per_hour=cost,
        dedicated_usd_per_hour=baseline,
        savings=savings,
    )


def _extend(
    old: EndpointPlan,
    models: Sequence[ModelSpec],
    instance_type: InstanceSpec,
    policy: PlacementPolicy,
) -> EndpointPlan:
    """Keep ``old``'s placements of models still present; add the rest into free space first."""
    by_key = {m.key: m for m in models}
    placed: dict[str, int] = {}
    budget = budget_mb(instance_type, policy)
    bins = _Bins(budget, policy.max_models_per_instance, len(old.instances) + 1)
    names: list[str] = []
    for instance in old.instances:
        kept = []
        for key in instance.models:
            model = by_key.get(key)
            if model is not None and placed.get(key, 0) < model.replicas:
                kept.append(key)
                placed[key] = placed.get(key, 0) + 1
        used = sum(model_mb(by_key[k], instance_type) for k in kept)
        bins.add_existing(kept, used)
        names.append(instance.name)
    # Extra replicas of kept models go on instances that do not hold them yet.
    for key in sorted(placed):
        model = by_key[key]
        missing = model.replicas - placed[key]
        if missing > 0:
            _place_avoiding(bins, model, model_mb(model, instance_type), missing)
    new = [m for m in models if m.key not in placed]
    for model in _pack_order(new, instance_type):
        bins.place(model.key, model_mb(model, instance_type), model.replicas)
    return _endpoint_from_bins(
        old.name,
        old.kind,
        old.mode,
        instance_type,
        bins,
        _names_for(bins, old.name, names),
    )


def _place_avoiding(bins: _Bins, model: ModelSpec, mb: float, count: int) -> None:
    lo = 0
    while count:
        index = bins._find(lo, mb)
        while index < 0:
            bins._grow()
            index = bins._find(lo, mb)
        if index < len(bins.models) and model.key in bins.models[index]:
            lo = index + 1
            continue
        while index >= len(bins.used):
            bins.used.append(0.0)
            bins.models.append([])
        bins.used[index] += mb
        bins.models[index].append(model.key)
        bins._refresh(index)
        count -= 1
        lo = index + 1
