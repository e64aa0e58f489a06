"""Which models share which instances: a pure bin-packing policy, no ORM.

Each model kind gets its own endpoint in the policy's mode, and every catalog type is tried for
it; the cheapest packing wins (ties by price, then type name). Three modes:

- ``mme`` (multi-model): models are packed first-fit-decreasing by a packing weight into
  instances of one type, filled to ``target_utilization``. On a type with GPUs each GPU is a bin
  of its own (a model lives on one GPU: ``target × memory_per_gpu_mb``), an instance holds
  ``gpu_count`` such bins, and ``InstancePlan.gpu_models`` says which GPU holds what; without
  GPUs the bin is the host memory. The weight of a model is the largest of its memory in the
  bounding dimension (GPU memory, or host memory for a model that reports none, conservatively),
  its host memory and its share of the instance's request capacity
  (``requests_per_hour_per_instance``, divided among its replicas), all in the bin's units. Host
  memory and request capacity are split evenly among an instance's GPUs, so a full instance
  never exceeds any of the three. A model hotter than a whole bin takes a bin alone: adding
  replicas is the autoscaler's job, not the packer's. A model much larger than its kind's median
  (``size_ratio_limit``) would waste the shared instances and gets a dedicated endpoint (not an
  inference component: a kind's outliers are few, and their endpoint keeps the MME contract).
  Every model's memory is reserved here, pinned or not: pinning decides eviction, which the
  serving side owns.
- ``inference-component``: each model is a component that reserves
  ``ceil(GPU memory / target × memory_per_gpu_mb)`` whole accelerators (at least one on a GPU
  type) and its host memory; components are packed by accelerators and memory, so there are no
  size outliers. Copies = replicas for pinned models and models with traffic; an unpinned model
  with no traffic scales to zero: it reserves nothing, keeps an empty assignment and is listed
  in ``scaled_to_zero`` of its endpoint and of the plan. Traffic is not a packing weight here
  because each copy's accelerators are its own; scaling copies follows traffic instead.
- ``dedicated``: one endpoint per model on the cheapest type that holds it alone (one GPU's budget
  on GPU types); the same rule prices the baseline that ``savings`` is measured against, except
  in inference-component mode, where the baseline's instance may spread one model over its GPUs.

On types with one bin per instance, a fresh packing that first fit decreasing leaves above
its lower bound is improved (``packing.improve``: best fit decreasing, minimum bin slack, a
bin-completion search for small fleets and a local search that empties the least-filled
instances), bounded by step counts so the answer never depends on the machine's speed; the
improvement is used only when it opens fewer instances. It runs where instances hold few
models (at most 16 copies per instance of the bound, 20,000 copies in all): with hundreds of
small models per instance first fit decreasing already wastes less than one model's weight
per instance. ``bounds`` gives the lower bounds the benchmark measures against.

Replicas (copies) of a model always land on distinct instances, and no instance holds more than
``max_models_per_instance`` models (thread limits broke past about 500). With an ``existing``
plan and ``rebalance=False`` nothing already placed moves: removed or scaled-to-zero models free
their space, new models fill the free space of the endpoint's instances first, then new instances
of the same type; a new model that type cannot hold gets a dedicated endpoint (MME) or is
refused until a rebalance (components). A placed model whose figures grew stays where it is, so
its instance may run over a budget until a rebalance. Everything is deterministic: ties are
broken by model key and type name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from config.errors import DomainError
from deployments.exceptions import CapacityExceeded
from deployments.placement import packing

MME_MODE = "mme"
INFERENCE_COMPONENT_MODE = "inference-component"
DEDICATED_MODE = "dedicated"
MODES = (MME_MODE, INFERENCE_COMPONENT_MODE, DEDICATED_MODE)
# SageMaker's suggested InvocationsPerInstance target, 225 a minute.
DEFAULT_REQUESTS_PER_HOUR_PER_INSTANCE = 225 * 60.0


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
    # A model larger than this × its kind's median memory gets a dedicated placement (MME only).
    size_ratio_limit: float = 4.0
    mode: str = MME_MODE
    # Requests an instance serves in an hour at the target; 0 or None: traffic does not pack.
    requests_per_hour_per_instance: float | None = DEFAULT_REQUESTS_PER_HOUR_PER_INSTANCE


@dataclass(frozen=True)
class InstancePlan:
    name: str
    instance_type: str
    models: tuple[str, ...]
    used_mb: float
    capacity_mb: float
    # Per GPU (per accelerator for components): the models it holds, and their memory.
    gpu_models: tuple[tuple[str, ...], ...] = ()
    gpu_used_mb: tuple[float, ...] = ()
    host_used_mb: float = 0.0
    requests_per_hour: float = 0.0


@dataclass(frozen=True)
class EndpointPlan:
    name: str
    kind: str
    mode: str
    instance_type: str
    instances: list[InstancePlan] = field(default_factory=list)
    # Inference components registered on the endpoint with zero copies.
    scaled_to_zero: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlacementPlan:
    endpoints: list[EndpointPlan]
    assignments: dict[str, list[str]]
    usd_per_hour: float
    dedicated_usd_per_hour: float
    savings: float
    scaled_to_zero: tuple[str, ...] = ()


def uses_gpu(instance_type: InstanceSpec) -> bool:
    """Whether GPU memory, not host memory, bounds ``instance_type``."""
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
    """The whole instance's budget in the bounding dimension (all its GPUs together)."""
    return policy.target_utilization * capacity_mb(instance_type)


def gpu_budget_mb(instance_type: InstanceSpec, policy: PlacementPolicy) -> float:
    """What one GPU of ``instance_type`` may hold at the target; 0 without GPUs."""
    if not uses_gpu(instance_type):
        return 0.0
    return policy.target_utilization * instance_type.memory_per_gpu_mb


def host_budget_mb(instance_type: InstanceSpec, policy: PlacementPolicy) -> float:
    """What the host memory of ``instance_type`` may hold at the target."""
    return policy.target_utilization * instance_type.host_memory_mb


def accelerators_needed(
    model: ModelSpec, instance_type: InstanceSpec, policy: PlacementPolicy
) -> int:
    """Whole accelerators an inference component of ``model`` reserves (0 without GPUs)."""
    if not uses_gpu(instance_type):
        return 0
    return max(1, math.ceil(model_mb(model, instance_type) / gpu_budget_mb(instance_type, policy)))


def copies(model: ModelSpec, policy: PlacementPolicy) -> int:
    """Copies to run: replicas, or none for an idle unpinned inference component."""
    if (
        policy.mode == INFERENCE_COMPONENT_MODE
        and not model.pinned
        and model.requests_per_hour <= 0
    ):
        return 0
    return model.replicas


def _validate_policy(policy: PlacementPolicy) -> None:
    if policy.mode not in MODES:
        raise DomainError(
            f"Unknown placement mode {policy.mode!r}; use one of {', '.join(MODES)}.",
            field="mode",
        )
    if not 0 < policy.target_utilization <= 1:
        raise DomainError("Target utilization must be in (0, 1].", field="target_utilization")


# --- sizes in bin units ----------------------------------------------------------------------


class Sizing:
    """How models of one mode are weighed on one instance type: bins per instance, bin budget."""

    def __init__(self, instance_type: InstanceSpec, policy: PlacementPolicy, mode: str) -> None:
        self.instance_type = instance_type
        self.policy = policy
        self.component = mode == INFERENCE_COMPONENT_MODE
        self.gpu = uses_gpu(instance_type)
        host_budget = host_budget_mb(instance_type, policy)
        if self.component and self.gpu:
            # One bin of gpu_count accelerators; host memory in accelerator units.
            self.slots = 1
            self.slot_budget = float(instance_type.gpu_count)
            self.host_scale = self.slot_budget / host_budget if host_budget > 0 else 0.0
            self.traffic_scale = 0.0
            return
        self.slots = instance_type.gpu_count if self.gpu else 1
        self.slot_budget = gpu_budget_mb(instance_type, policy) if self.gpu else host_budget
        instance_units = self.slots * self.slot_budget
        # Without GPUs the bin already is host memory.
        self.host_scale = instance_units / host_budget if (self.gpu and host_budget > 0) else 0.0
        per_instance = policy.requests_per_hour_per_instance
        self.traffic_scale = (
            instance_units / per_instance if (per_instance and not self.component) else 0.0
        )

    def memory_weight(self, model: ModelSpec) -> float:
        """Bin units the model's memory takes (accelerators for GPU components)."""
        if self.component and self.gpu:
            accelerators = accelerators_needed(model, self.instance_type, self.policy)
            return max(float(accelerators), model.host_memory_mb * self.host_scale)
        mb = model_mb(model, self.instance_type)
        if self.host_scale:
            return max(mb, model.host_memory_mb * self.host_scale)
        return mb

    def weight(self, model: ModelSpec, count: int) -> float:
        """Packing weight of one of ``count`` copies: memory or traffic share, whichever is more."""
        weight = self.memory_weight(model)
        if self.traffic_scale and model.requests_per_hour > 0 and count > 0:
            traffic = model.requests_per_hour / count * self.traffic_scale
            weight = max(weight, min(traffic, self.slot_budget))
        return weight

    def fits(self, model: ModelSpec) -> bool:
        """Whether one copy of ``model`` fits an empty instance of this type."""
        if self.slot_budget <= 0:
            return False
        return self.memory_weight(model) <= self.slot_budget * (1 + 1e-9)


def _fits_alone(model: ModelSpec, instance_type: InstanceSpec, policy: PlacementPolicy) -> bool:
    return Sizing(instance_type, policy, policy.mode).fits(model)


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
    """Instances of one type, each ``slots`` bins, filled first-fit by a max segment tree.

    A leaf holds the largest free bin of its instance (-1 once the model cap is reached). Leaves
    past the opened instances hold a full bin, so "open a new instance" is just the leftmost
    fitting leaf being an unopened one.
    """

    def __init__(self, slot_budget: float, slots: int, cap: int, expected: int = 1) -> None:
        self.slot_budget = slot_budget
        self.slots = slots
        self.cap = cap
        # Sums of float weights may land a hair over an exact fit.
        self.tolerance = slot_budget * 1e-9
        self.free: list[list[float]] = []
        self.models: list[list[str]] = []
        self.slot_models: list[list[list[str]]] = []
        self.size = 1
        while self.size < max(expected, 1):
            self.size *= 2
        self.tree = [slot_budget] * (2 * self.size)

    def open_count(self) -> int:
        return len(self.free)

    def _grow(self) -> None:
        old = self.size
        self.size *= 2
        tree = [self.slot_budget] * (2 * self.size)
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
            value = left if left > right else right
            if tree[node] == value:
                break  # nothing above changes
            tree[node] = value
            node >>= 1

    def _refresh(self, index: int) -> None:
        full = len(self.models[index]) >= self.cap
        free = self.free[index]
        self._set(index, -1.0 if full else (free[0] if self.slots == 1 else max(free)))

    def _open_to(self, index: int) -> None:
        while index >= self.size:
            self._grow()
        while index >= len(self.free):
            self.free.append([self.slot_budget] * self.slots)
            self.models.append([])
            self.slot_models.append([[] for _ in range(self.slots)])

    def put(self, index: int, key: str, weight: float, slot: int | None = None) -> None:
        """Put one copy on instance ``index``: bin ``slot``, else its first bin with room."""
        self._open_to(index)
        free = self.free[index]
        if slot is None:
            need = weight - self.tolerance
            slot = next((s for s, room in enumerate(free) if room >= need), None)
            if slot is None:  # only kept placements get here: the roomiest bin
                slot = max(range(self.slots), key=lambda s: (free[s], -s))
        free[slot] -= weight
        self.models[index].append(key)
        self.slot_models[index][slot].append(key)
        self._refresh(index)

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

    def place_each_once(self, keys: Sequence[str], weight: float) -> None:
        """Put one copy of each of ``keys``, all of ``weight``, exactly where ``place(key,
        weight, 1)`` one after another would, but touching the tree once per instance filled.

        The leftmost instance with room stays the leftmost while it has room (nothing to its
        left changed), so a run of equal models fills it in turn before the next is searched.
        """
        if not keys:
            return
        if weight > self.slot_budget + self.tolerance:
            raise CapacityExceeded(f"Model {keys[0]!r} does not fit the endpoint's instance type.")
        need = weight - self.tolerance
        position = 0
        while position < len(keys):
            index = self._find(0, need)
            while index < 0:
                self._grow()
                index = self._find(0, need)
            self._open_to(index)
            free, models, slot_models = (
                self.free[index],
                self.models[index],
                self.slot_models[index],
            )
            if self.slots == 1:  # the common case, without the search for a GPU with room
                room, held, end = free[0], len(models), len(keys)
                while position < end and held < self.cap and room >= need:
                    room -= weight
                    models.append(keys[position])
                    slot_models[0].append(keys[position])
                    position += 1
                    held += 1
                free[0] = room
            while position < len(keys) and len(models) < self.cap:
                slot = next((s for s, room in enumerate(free) if room >= need), None)
                if slot is None:
                    break
                free[slot] -= weight
                models.append(keys[position])
                slot_models[slot].append(keys[position])
                position += 1
            self._refresh(index)

    def place(self, key: str, weight: float, count: int, *, avoid_holders: bool = False) -> None:
        """Put ``count`` copies on distinct instances, first fit."""
        if weight > self.slot_budget + self.tolerance:
            raise CapacityExceeded(f"Model {key!r} does not fit the endpoint's instance type.")
        need = weight - self.tolerance
        lo = 0
        while count:
            index = self._find(lo, need)
            while index < 0:
                self._grow()
                index = self._find(lo, need)
            lo = index + 1
            if avoid_holders and index < len(self.models) and key in self.models[index]:
                continue
            self.put(index, key, weight)
            count -= 1


def _weights(models: Sequence[ModelSpec], sizing: Sizing, policy: PlacementPolicy) -> list[float]:
    return [sizing.weight(m, copies(m, policy)) for m in models]


def _pack(
    models: Sequence[ModelSpec],
    weights: Sequence[float],
    sizing: Sizing,
    policy: PlacementPolicy,
    bins: _Bins | None = None,
) -> _Bins:
    """First-fit decreasing by weight (ties by key)."""
    counts = [copies(m, policy) for m in models]
    if bins is None:
        total = math.fsum(w * c for w, c in zip(weights, counts, strict=True))
        instance_units = sizing.slots * sizing.slot_budget
        expected = max(1, math.ceil(total / instance_units) if instance_units > 0 else 1)
        bins = _Bins(sizing.slot_budget, sizing.slots, policy.max_models_per_instance, expected)
    order = sorted(range(len(models)), key=lambda i: (-weights[i], models[i].key))
    position = 0
    while position < len(order):
        i = order[position]
        if counts[i] != 1:
            if counts[i]:
                bins.place(models[i].key, weights[i], counts[i])
            position += 1
            continue
        # A run of single-copy models of one weight (common: many tenants, few sizes).
        end = position + 1
        while end < len(order) and counts[order[end]] == 1 and weights[order[end]] == weights[i]:
            end += 1
        bins.place_each_once([models[j].key for j in order[position:end]], weights[i])
        position = end
    return bins


def _copy_items(
    weights: Sequence[float], counts: Sequence[int], order: Sequence[int]
) -> tuple[list[float], list[int]]:
    """Every copy as an item, heaviest first in ``order``: its weight, and its model's place."""
    item_weights: list[float] = []
    owners: list[int] = []
    for i in order:
        item_weights.extend([weights[i]] * counts[i])
        owners.extend([i] * counts[i])
    return item_weights, owners


def _improved_bins(
    weights: Sequence[float],
    counts: Sequence[int],
    order: Sequence[int],
    sizing: Sizing,
    policy: PlacementPolicy,
    upper: int,
) -> list[list[int]] | None:
    """Fewer bins than ``upper`` (first fit decreasing's), as lists of model places, or None.

    Only for one bin per instance; it reads weights and copy counts in ``order`` alone, so
    models of equal weight and copies are interchangeable (``count_plan`` relies on it).
    """
    if sizing.slots != 1 or upper <= 1:
        return None
    # The improvement's own limits, checked before any work (the bound is at most ``upper``).
    copies_total = sum(counts)
    if copies_total > packing.IMPROVE_MAX_ITEMS:
        return None
    if copies_total > packing.IMPROVE_MAX_ITEMS_PER_BIN * upper:
        return None
    item_weights, owners = _copy_items(weights, counts, order)
    if not item_weights:
        return None
    cap = max(policy.max_models_per_instance, 1)
    lower = max(
        packing.martello_toth_l2(item_weights, sizing.slot_budget),
        math.ceil(len(item_weights) / cap),
        max(counts, default=0),
    )
    if upper <= lower:
        return None
    found = packing.improve(item_weights, owners, sizing.slot_budget, cap, upper=upper, lower=lower)
    if found is None:
        return None
    return [[owners[item] for item in bin_items] for bin_items in found]


def _improved(
    models: Sequence[ModelSpec],
    weights: Sequence[float],
    sizing: Sizing,
    policy: PlacementPolicy,
    upper: int,
) -> _Bins | None:
    """``_improved_bins`` for named models, as the bins ``_pack`` returns."""
    counts = [copies(m, policy) for m in models]
    order = sorted(range(len(models)), key=lambda i: (-weights[i], models[i].key))
    found = _improved_bins(weights, counts, order, sizing, policy, upper)
    if found is None:
        return None
    bins = _Bins(sizing.slot_budget, sizing.slots, policy.max_models_per_instance, len(found))
    for index, places in enumerate(found):
        for place in places:
            bins.put(index, models[place].key, weights[place], 0)
    return bins


def _lower_bound_instances(
    models: Sequence[ModelSpec], weights: Sequence[float], sizing: Sizing, policy: PlacementPolicy
) -> int:
    counts = [copies(m, policy) for m in models]
    instance_units = sizing.slots * sizing.slot_budget
    total = math.fsum(w * c for w, c in zip(weights, counts, strict=True))
    by_weight = math.ceil(total / instance_units - 1e-9) if instance_units > 0 else 0
    by_count = math.ceil(sum(counts) / max(policy.max_models_per_instance, 1))
    by_replicas = max(counts, default=0)
    return max(by_weight, by_count, by_replicas)


def _cheapest_group(
    models: Sequence[ModelSpec],
    instance_types: Sequence[InstanceSpec],
    policy: PlacementPolicy,
    mode: str,
) -> tuple[Sizing, _Bins]:
    """Pack ``models`` on every type that holds each of them; keep the cheapest."""
    candidates = []
    for instance_type in instance_types:
        sizing = Sizing(instance_type, policy, mode)
        if not all(sizing.fits(m) for m in models):
            continue
        weights = _weights(models, sizing, policy)
        bound = _lower_bound_instances(models, weights, sizing, policy)
        candidates.append(
            (bound * instance_type.usd_per_hour, instance_type.usd_per_hour, instance_type.name)
            + (sizing, weights)
        )
    # Most promising first, so the bound prunes the rest.
    candidates.sort(key=lambda c: c[:3])
    best: tuple[float, float, str, Sizing, _Bins] | None = None
    for bound, price, name, sizing, weights in candidates:
        if best is not None and bound > best[0]:
            break  # cannot beat the best even if perfectly packed
        bins = _pack(models, weights, sizing, policy)
        better = _improved(models, weights, sizing, policy, bins.open_count())
        if better is not None:
            bins = better
        cost = bins.open_count() * price
        if best is None or (cost, price, name) < best[:3]:
            best = (cost, price, name, sizing, bins)
    if best is None:
        # Name the first model (by key) that fits no type at all, else the largest.
        for model in sorted(models, key=lambda m: m.key):
            cheapest_fitting_type(model, instance_types, policy)
        model = max(models, key=lambda m: (m.host_memory_mb, m.gpu_memory_mb, m.key))
        raise CapacityExceeded(
            f"No single instance type holds every {model.kind!r} model; largest is {model.key!r}.",
            field="models",
        )
    return best[3], best[4]


def _size(model: ModelSpec) -> float:
    return model.gpu_memory_mb if model.gpu_memory_mb > 0 else model.host_memory_mb


def median_mb(models: Sequence[ModelSpec]) -> float:
    """The median size (GPU memory, else host memory) of ``models``; 0 for none."""
    sizes = sorted(_size(m) for m in models)
    if not sizes:
        return 0.0
    mid = len(sizes) // 2
    return sizes[mid] if len(sizes) % 2 else (sizes[mid - 1] + sizes[mid]) / 2


def is_outlier(model: ModelSpec, median: float, policy: PlacementPolicy) -> bool:
    """Whether ``model`` is too large for its kind's shared endpoint (MME: dedicated)."""
    return median > 0 and _size(model) > policy.size_ratio_limit * median


def _instance_name(endpoint: str, number: int) -> str:
    return f"{endpoint}-{number:04d}"


def _suffix(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _instance_plan(
    name: str,
    sizing: Sizing,
    keys: list[str],
    slot_keys: list[list[str]],
    by_key: dict[str, ModelSpec],
    policy: PlacementPolicy,
) -> InstancePlan:
    instance_type = sizing.instance_type
    mb = {k: model_mb(by_key[k], instance_type) for k in keys}
    gpu_models: tuple[tuple[str, ...], ...] = ()
    gpu_used: tuple[float, ...] = ()
    if sizing.gpu and sizing.component:
        # Accelerators are handed out in order; which ones is SageMaker's choice anyway.
        accelerators: list[list[str]] = [[] for _ in range(instance_type.gpu_count)]
        used = [0.0] * instance_type.gpu_count
        next_free = 0
        for key in keys:
            count = accelerators_needed(by_key[key], instance_type, policy)
            for offset in range(count):
                number = (next_free + offset) % instance_type.gpu_count
                accelerators[number].append(key)
                used[number] += mb[key] / count
            next_free += count
        gpu_models = tuple(tuple(a) for a in accelerators)
        gpu_used = tuple(used)
    elif sizing.gpu:
        gpu_models = tuple(tuple(s) for s in slot_keys)
        gpu_used = tuple(math.fsum(mb[k] for k in s) for s in slot_keys)
    return InstancePlan(
        name=name,
        instance_type=instance_type.name,
        models=tuple(keys),
        used_mb=math.fsum(mb.values()),
        capacity_mb=capacity_mb(instance_type),
        gpu_models=gpu_models,
        gpu_used_mb=gpu_used,
        host_used_mb=math.fsum(by_key[k].host_memory_mb for k in keys),
        requests_per_hour=math.fsum(
            by_key[k].requests_per_hour / max(copies(by_key[k], policy), 1) for k in keys
        ),
    )


def _endpoint_from_bins(
    name: str,
    kind: str,
    mode: str,
    sizing: Sizing,
    bins: _Bins,
    names: list[str],
    models: Sequence[ModelSpec],
    policy: PlacementPolicy,
) -> EndpointPlan:
    by_key = {m.key: m for m in models}
    instances = [
        _instance_plan(
            names[index], sizing, bins.models[index], bins.slot_models[index], by_key, policy
        )
        for index in range(bins.open_count())
        if bins.models[index]
    ]
    idle = tuple(sorted(m.key for m in models if copies(m, policy) == 0))
    return EndpointPlan(
        name=name,
        kind=kind,
        mode=mode,
        instance_type=sizing.instance_type.name,
        instances=instances,
        scaled_to_zero=idle,
    )


def _names_for(bins: _Bins, endpoint: str, existing_names: list[str]) -> list[str]:
    names = list(existing_names)
    number = max((_suffix(n) for n in names), default=-1) + 1
    while len(names) < bins.open_count():
        names.append(_instance_name(endpoint, number))
        number += 1
    return names


def _dedicated_name(model: ModelSpec) -> str:
    return f"{model.kind}-{DEDICATED_MODE}-{model.key}"


def _dedicated_endpoint(
    model: ModelSpec, instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> EndpointPlan:
    dedicated = PlacementPolicy(
        target_utilization=policy.target_utilization,
        max_models_per_instance=1,
        mode=DEDICATED_MODE,
        requests_per_hour_per_instance=None,
    )
    instance_type = cheapest_fitting_type(model, instance_types, dedicated)
    sizing = Sizing(instance_type, dedicated, DEDICATED_MODE)
    bins = _Bins(sizing.slot_budget, sizing.slots, 1, model.replicas)
    bins.place(model.key, sizing.memory_weight(model), model.replicas)
    name = _dedicated_name(model)
    return _endpoint_from_bins(
        name,
        model.kind,
        DEDICATED_MODE,
        sizing,
        bins,
        _names_for(bins, name, []),
        [model],
        dedicated,
    )


def dedicated_usd_per_hour(
    models: Iterable[ModelSpec], instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> float:
    """One cheapest-fitting instance per model replica: the baseline savings are measured on.

    Which type holds a model alone depends on its memory only, so each distinct size is looked
    up once (fleets of thousands of models have far fewer sizes).
    """
    prices: dict[tuple[float, float], float] = {}

    def price(model: ModelSpec) -> float:
        size = (model.host_memory_mb, model.gpu_memory_mb)
        if size not in prices:
            prices[size] = cheapest_fitting_type(model, instance_types, policy).usd_per_hour
        return prices[size]

    return math.fsum(price(m) * m.replicas for m in models)


def lower_bound_usd_per_hour(
    models: Iterable[ModelSpec], instance_types: Sequence[InstanceSpec], policy: PlacementPolicy
) -> float:
    """No placement costs less: every copy's weight at its cheapest rate, or the model cap."""
    sizings = [Sizing(t, policy, policy.mode) for t in instance_types]
    by_weight: list[float] = []
    by_count: list[float] = []
    for model in models:
        count = copies(model, policy)
        if not count:
            continue
        rates = [
            s.weight(model, count) / (s.slots * s.slot_budget) * s.instance_type.usd_per_hour
            for s in sizings
            if s.fits(model)
        ]
        if not rates:
            cheapest_fitting_type(model, instance_types, policy)  # raises, naming the model
        by_weight.append(min(rates) * count)
        cheapest = min(s.instance_type.usd_per_hour for s in sizings if s.fits(model))
        by_count.append(cheapest * count / max(policy.max_models_per_instance, 1))
    return max(math.fsum(by_weight), math.fsum(by_count))


def shared_name(kind: str, policy: PlacementPolicy) -> str:
    """The name of ``kind``'s shared endpoint in the policy's mode."""
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
    _validate_policy(policy)
    if not instance_types:
        raise CapacityExceeded("The instance catalog is empty.", field="instance_types")
    keys = [m.key for m in models]
    if len(set(keys)) != len(keys):
        raise DomainError("Model keys must be unique.", field="models")
    if any(m.replicas < 1 for m in models):
        raise DomainError("Every model needs at least one replica.", field="models")
    # Sorted so that the catalog's order never changes the answer.
    instance_types = sorted(instance_types, key=lambda t: t.name)
    types_by_name = {t.name: t for t in instance_types}
    by_kind: dict[str, list[ModelSpec]] = {}
    for model in models:
        by_kind.setdefault(model.kind, []).append(model)

    keep = existing if (existing is not None and not rebalance) else None
    old_endpoints = {e.name: e for e in keep.endpoints} if keep else {}

    endpoints: list[EndpointPlan] = []
    for kind in sorted(by_kind):
        group = sorted(by_kind[kind], key=lambda m: m.key)
        if policy.mode == DEDICATED_MODE:
            for model in group:
                old = old_endpoints.get(_dedicated_name(model))
                if old is not None and len(old.instances) == model.replicas:
                    endpoints.append(old)
                else:
                    endpoints.append(_dedicated_endpoint(model, instance_types, policy))
            continue
        name = shared_name(kind, policy)
        old_shared = old_endpoints.get(name)
        if old_shared is not None and old_shared.instance_type not in types_by_name:
            old_shared = None
        old_sizing = (
            Sizing(types_by_name[old_shared.instance_type], policy, policy.mode)
            if old_shared is not None
            else None
        )
        # Models already on the shared endpoint stay there even if the median moved.
        was_shared = {k for i in old_shared.instances for k in i.models} if old_shared else set()
        was_shared.update(old_shared.scaled_to_zero if old_shared else ())
        median = median_mb(group)
        shared: list[ModelSpec] = []
        for model in group:
            old = old_endpoints.get(_dedicated_name(model))
            if old is not None and len(old.instances) == model.replicas:
                endpoints.append(old)
            elif model.key in was_shared:
                shared.append(model)
            elif policy.mode == MME_MODE and is_outlier(model, median, policy):
                endpoints.append(_dedicated_endpoint(model, instance_types, policy))
            elif old_sizing is not None and not old_sizing.fits(model):
                # The endpoint's type cannot hold it; a rebalance may pick another type.
                if policy.mode != MME_MODE:
                    raise CapacityExceeded(
                        f"Model {model.key!r} does not fit {old_sizing.instance_type.name}; "
                        "rebalance to choose another instance type.",
                        field="models",
                    )
                endpoints.append(_dedicated_endpoint(model, instance_types, policy))
            else:
                shared.append(model)
        if not shared:
            continue
        if old_shared is not None and old_sizing is not None:
            endpoints.append(_extend(old_shared, shared, old_sizing, policy))
        else:
            sizing, bins = _cheapest_group(shared, instance_types, policy, policy.mode)
            endpoints.append(
                _endpoint_from_bins(
                    name,
                    kind,
                    policy.mode,
                    sizing,
                    bins,
                    _names_for(bins, name, []),
                    shared,
                    policy,
                )
            )

    assignments: dict[str, list[str]] = {}
    idle: list[str] = []
    for endpoint in endpoints:
        for key in endpoint.scaled_to_zero:
            assignments[key] = []
        idle.extend(endpoint.scaled_to_zero)
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
        scaled_to_zero=tuple(sorted(idle)),
    )


@dataclass(frozen=True)
class ModelGroup:
    """``count`` models of one kind alike in everything multi-model packing reads: memory and
    traffic (a what-if over a large fleet packs groups, not models)."""

    kind: str
    host_memory_mb: float
    gpu_memory_mb: float = 0
    requests_per_hour: float = 0.0
    count: int = 1


@dataclass(frozen=True)
class EndpointCount:
    """One endpoint of a counted plan: how many instances it opens and models it holds."""

    name: str
    kind: str
    mode: str
    instance_type: str
    instances: int
    models: int


@dataclass(frozen=True)
class PlanCounts:
    """What ``solve`` would open, without saying which model goes where."""

    endpoints: list[EndpointCount]
    usd_per_hour: float


def count_plan(
    *,
    groups: Sequence[ModelGroup],
    instance_types: Sequence[InstanceSpec],
    policy: PlacementPolicy,
    replicas: int = 1,
) -> PlanCounts:
    """The instances and models per endpoint, and the cost, of a fresh multi-model plan of
    ``groups`` (each model with ``replicas`` copies): exactly ``solve``'s, in time that grows
    with the number of groups and instances rather than models.

    First fit decreasing reads only a model's weight, and models of one weight are
    interchangeable, so a group's models are placed as one run; a kind's outliers (its median
    is taken over every model) each get the dedicated endpoint ``solve`` would give them, listed
    together as one row per kind and type.
    """
    _validate_policy(policy)
    if policy.mode != MME_MODE:
        raise DomainError("Plans are counted for the multi-model mode only.", field="mode")
    if not instance_types:
        raise CapacityExceeded("The instance catalog is empty.", field="instance_types")
    if replicas < 1:
        raise DomainError("Every model needs at least one replica.", field="replicas")
    instance_types = sorted(instance_types, key=lambda t: t.name)
    by_kind: dict[str, list[ModelGroup]] = {}
    for group in groups:
        if group.count > 0:
            by_kind.setdefault(group.kind, []).append(group)
    endpoints: list[EndpointCount] = []
    cost = 0.0
    for kind in sorted(by_kind):
        kind_groups = by_kind[kind]
        median = _weighted_median_mb(kind_groups)
        shared: list[ModelGroup] = []
        dedicated: dict[str, tuple[InstanceSpec, int]] = {}
        for group in kind_groups:
            model = _group_model(group, replicas)
            if not is_outlier(model, median, policy):
                shared.append(group)
                continue
            instance_type = cheapest_fitting_type(
                model,
                instance_types,
                PlacementPolicy(
                    target_utilization=policy.target_utilization,
                    max_models_per_instance=1,
                    mode=DEDICATED_MODE,
                    requests_per_hour_per_instance=None,
                ),
            )
            _, models = dedicated.get(instance_type.name, (instance_type, 0))
            dedicated[instance_type.name] = (instance_type, models + group.count)
        for name in sorted(dedicated):
            instance_type, models = dedicated[name]
            endpoints.append(
                EndpointCount(
                    name=f"{kind}-{DEDICATED_MODE} × {models}",
                    kind=kind,
                    mode=DEDICATED_MODE,
                    instance_type=name,
                    instances=models * replicas,
                    models=models,
                )
            )
            cost += instance_type.usd_per_hour * models * replicas
        if not shared:
            continue
        sizing, open_instances = _cheapest_count(shared, instance_types, policy, replicas)
        models = sum(group.count for group in shared)
        endpoints.append(
            EndpointCount(
                name=shared_name(kind, policy),
                kind=kind,
                mode=policy.mode,
                instance_type=sizing.instance_type.name,
                instances=open_instances,
                models=models,
            )
        )
        cost += sizing.instance_type.usd_per_hour * open_instances
    return PlanCounts(endpoints=endpoints, usd_per_hour=cost)


def _group_model(group: ModelGroup, replicas: int) -> ModelSpec:
    return ModelSpec(
        key=f"{group.kind} of {group.host_memory_mb} MB",
        kind=group.kind,
        host_memory_mb=group.host_memory_mb,
        gpu_memory_mb=group.gpu_memory_mb,
        requests_per_hour=group.requests_per_hour,
        replicas=replicas,
    )


def _weighted_median_mb(groups: Sequence[ModelGroup]) -> float:
    """``median_mb`` of the models the groups stand for."""
    sizes = sorted((_size(_group_model(g, 1)), g.count) for g in groups)
    total = sum(count for _, count in sizes)
    if not total:
        return 0.0

    def nth(index: int) -> float:
        seen = 0
        for size, count in sizes:
            seen += count
            if index < seen:
                return size
        return sizes[-1][0]

    mid = total // 2
    return nth(mid) if total % 2 else (nth(mid - 1) + nth(mid)) / 2


def _cheapest_count(
    groups: Sequence[ModelGroup],
    instance_types: Sequence[InstanceSpec],
    policy: PlacementPolicy,
    replicas: int,
) -> tuple[Sizing, int]:
    """``_cheapest_group`` over groups: the type and instance count ``solve`` would pick."""
    candidates = []
    for instance_type in instance_types:
        sizing = Sizing(instance_type, policy, policy.mode)
        models = [_group_model(g, replicas) for g in groups]
        if not all(sizing.fits(m) for m in models):
            continue
        weights = [sizing.weight(m, replicas) for m in models]
        # Summed copy by copy, as the per-model bound does, to the same last bit.
        total = math.fsum(
            itertools.chain.from_iterable(
                itertools.repeat(w * replicas, g.count)
                for w, g in zip(weights, groups, strict=True)
            )
        )
        instance_units = sizing.slots * sizing.slot_budget
        copies_total = replicas * sum(g.count for g in groups)
        bound = max(
            math.ceil(total / instance_units - 1e-9) if instance_units > 0 else 0,
            math.ceil(copies_total / max(policy.max_models_per_instance, 1)),
            replicas,
        )
        candidates.append(
            (bound * instance_type.usd_per_hour, instance_type.usd_per_hour, instance_type.name)
            + (sizing, weights, total)
        )
    candidates.sort(key=lambda c: c[:3])
    best: tuple[float, float, str, Sizing, int] | None = None
    for bound, price, name, sizing, weights, total in candidates:
        if best is not None and bound > best[0]:
            break
        instance_units = sizing.slots * sizing.slot_budget
        expected = max(1, math.ceil(total / instance_units) if instance_units > 0 else 1)
        bins = _Bins(sizing.slot_budget, sizing.slots, policy.max_models_per_instance, expected)
        by_weight: dict[float, int] = {}
        for weight, group in zip(weights, groups, strict=True):
            by_weight[weight] = by_weight.get(weight, 0) + group.count
        for weight in sorted(by_weight, reverse=True):
            if replicas == 1:
                bins.place_each_once([None] * by_weight[weight], weight)
            else:
                for _ in range(by_weight[weight]):
                    bins.place(None, weight, replicas)
        opened = bins.open_count()
        if sizing.slots == 1 and opened > 1:
            # The improvement reads each model's weight and copies, heaviest first: the same
            # items ``solve`` hands it, whatever the models are called.
            ordered = sorted(by_weight, reverse=True)
            model_weights = [w for w in ordered for _ in range(by_weight[w])]
            found = _improved_bins(
                model_weights,
                [replicas] * len(model_weights),
                range(len(model_weights)),
                sizing,
                policy,
                opened,
            )
            if found is not None:
                opened = len(found)
        cost = opened * price
        if best is None or (cost, price, name) < best[:3]:
            best = (cost, price, name, sizing, opened)
    if best is None:
        for group in groups:
            cheapest_fitting_type(_group_model(group, replicas), instance_types, policy)
        raise CapacityExceeded(
            f"No single instance type holds every {groups[0].kind!r} model.", field="models"
        )
    return best[3], best[4]


def _extend(
    old: EndpointPlan,
    models: Sequence[ModelSpec],
    sizing: Sizing,
    policy: PlacementPolicy,
) -> EndpointPlan:
    """Keep ``old``'s placements of models still present; add the rest into free space first."""
    by_key = {m.key: m for m in models}
    wanted = {m.key: copies(m, policy) for m in models}
    weight = {m.key: sizing.weight(m, wanted[m.key]) for m in models}
    placed: dict[str, int] = {}
    bins = _Bins(
        sizing.slot_budget, sizing.slots, policy.max_models_per_instance, len(old.instances) + 1
    )
    names: list[str] = []
    for index, instance in enumerate(old.instances):
        slot_of = {}
        if sizing.slots > 1 and len(instance.gpu_models) == sizing.slots:
            for slot, held in enumerate(instance.gpu_models):
                for key in held:
                    slot_of.setdefault(key, slot)
        bins._open_to(index)
        for key in instance.models:
            if key in by_key and placed.get(key, 0) < wanted[key]:
                bins.put(index, key, weight[key], slot_of.get(key))
                placed[key] = placed.get(key, 0) + 1
        names.append(instance.name)
    # Extra copies of kept models go on instances that do not hold them yet.
    for key in sorted(placed):
        missing = wanted[key] - placed[key]
        if missing > 0:
            bins.place(key, weight[key], missing, avoid_holders=True)
    new = [m for m in models if m.key not in placed]
    _pack(new, [weight[m.key] for m in new], sizing, policy, bins)
    return _endpoint_from_bins(
        old.name,
        old.kind,
        old.mode,
        sizing,
        bins,
        _names_for(bins, old.name, names),
        models,
        policy,
    )
