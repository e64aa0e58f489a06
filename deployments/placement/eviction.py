"""Which loaded models make room for a new one on an instance: a pure policy, no ORM.

An instance holds models up to its memory budget. Before a load, ``plan_load`` picks the models to
unload so that what stays resident plus the incoming model fits the budget, never touching a
pinned model. On an instance with GPUs a second budget counts too: the GPU memory its models
hold (``gpu_budget_mb``), and victims are taken until both fit; without one, only host memory
counts. The default policy is least-recently-used (what SageMaker multi-model endpoints do);
the routing layer may pass another ordering. Everything here works on plain dataclasses so it can
be property-tested and benchmarked at fleet scale.

``plan_headroom`` chooses models to unload ahead of need: once what is resident crosses a high
watermark of the budget, down to a low one, so the serving runtime can unload in the background
and a cold load finds room instead of waiting for an unload (about 1.2 s on Triton).
``evictions_make_room`` tells a load that does not fit whether the unloads already under way will
make room for it, so it waits for those rather than choosing more victims.

``AccessHistory`` gives the other ordering: frequency-aware eviction for Zipf-shaped tenant
traffic (a few hot models, a long tail). Multi-model serving must load any model it is asked
for, so nothing is gained by refusing a load; the gain is in the victims. Under LRU a burst of
tail requests pushes a hot model out as soon as enough distinct cold models have been asked for
since its last request; evicting the lowest request count instead keeps the head resident and lets
the tail churn through the few slots the head leaves. In ``bench/zipf_eviction.py`` (200 models
of 114 MB, a budget for 50, 20,000 requests at Zipf s = 1.1, mean of ten seeds) that is 3,919
cold starts against LRU's 5,351 (-27 %). Why each part is the way it is, from the same runs:

- Counts survive eviction (the history keeps ``max_keys`` keys, resident or not).
  ``ResidentModel.hits`` starts again at zero after each load, so a hot model evicted once
  would come back as the next victim.
- Counts halve every ``half_life_requests`` requests. Without decay, models that were hot once
  stay resident after their traffic has gone: when popularity moves to other models halfway
  through the trace, no decay gives 4,863 cold starts (LRU 5,362), a half-life of 2,000
  requests 4,271 and 1,000 requests 4,165; on steady traffic 2,000 costs 1 % against no decay
  (3,919 vs 3,880) and 1,000 costs 3 %. 2,000 is 40 times what the instance holds.
- The count is divided by the model's memory (``weight_by_memory``, like
  GreedyDual-Size-Frequency): a budget in MB serves the most requests when it holds the most
  requests per MB. With a mix of 15, 90, 114 and 292 MB models: 3,061 cold starts against 4,024
  by count alone (LRU 5,434); with one size for all models the order is the same as by count.
  It loads more MB than by count (602,000 against 534,000; LRU 723,000), so pass
  ``weight_by_memory=False`` where a large model's cold start costs far more than a small one's
  (multi-GB LLMs).
- The models of the last ``protect_requests`` requests (the incoming one among them, when the
  caller records before it plans) are evicted last, so a model that has just loaded is not
  unloaded by the next load before it answers. Each request of protection moves the policy
  towards LRU: 2 costs 0.2 %, 8 costs 1 %, 32 costs 5 %. Set it to about the requests an
  instance receives during one cold start when loads run concurrently.

Recording is O(1); an order is O(1) per model, so a plan stays O(n log n) and deterministic for
a given history.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from deployments.exceptions import CapacityExceeded


@dataclass(frozen=True)
class ResidentModel:
    """A model loaded (or loading) on an instance, as the policy sees it."""

    key: str
    memory_mb: float
    pinned: bool = False
    # Seconds on any monotonic clock; larger is more recent. Never used → 0.
    last_used: float = 0.0
    # Requests served while resident; lets frequency-aware policies keep hot models.
    hits: int = 0
    # Still loading (or already being unloaded): its memory counts, but it cannot be chosen.
    loading: bool = False
    # Measured GPU memory (all the instance's GPUs together); 0 on a CPU or before measured.
    gpu_memory_mb: float = 0.0
    # Being unloaded (with ``loading``): its memory counts until it is gone, then comes back.
    evicting: bool = False


@dataclass(frozen=True)
class LoadPlan:
    """What to unload (in order) before loading ``incoming_mb`` more."""

    evict: tuple[str, ...]
    resident_mb_after: float
    budget_mb: float
    # GPU memory held after the load, and the GPU budget (None: the instance has no GPUs).
    gpu_mb_after: float = 0.0
    gpu_budget_mb: float | None = None

    @property
    def fits(self) -> bool:
        return self.resident_mb_after <= self.budget_mb and (
            self.gpu_budget_mb is None or self.gpu_mb_after <= self.gpu_budget_mb
        )


# Tuned on bench/zipf_eviction.py; the module docstring says why.
DEFAULT_HALF_LIFE_REQUESTS = 2_000.0
# More models than an instance holds (144 of 114 MB in 16 GB), so an evicted model is remembered
# through many evictions; 4,096 keys take about 1.2 MB.
DEFAULT_MAX_KEYS = 4_096
DEFAULT_PROTECT_REQUESTS = 2


def lru_order(model: ResidentModel) -> tuple:
    """Least recently used first; ties broken by key so plans are deterministic."""
    return (model.last_used, model.key)


def plan_load(
    *,
    resident: Iterable[ResidentModel],
    incoming_key: str,
    incoming_mb: float,
    budget_mb: float,
    order: Callable[[ResidentModel], tuple] = lru_order,
    incoming_gpu_mb: float = 0.0,
    gpu_budget_mb: float | None = None,
) -> LoadPlan:
    """Choose the models to evict so ``incoming_mb`` fits in ``budget_mb`` (and, on an instance
    with GPUs, ``incoming_gpu_mb`` in ``gpu_budget_mb``).

    Evicts the fewest models in ``order`` (least valuable first) until the incoming model fits;
    pinned and still-loading models are never chosen. Raises CapacityExceeded naming the figures
    when even evicting every candidate is not enough, so the caller never exceeds the budget.
    """
    budgets = _Budgets(budget_mb, gpu_budget_mb)
    for what, need, budget in budgets.named(incoming_mb, incoming_gpu_mb):
        if need > budget:
            raise CapacityExceeded(
                f"Model {incoming_key} needs {need:,.0f} MB{budgets.of(what)} but the "
                f"instance's whole {budgets.label(what)}budget is {budget:,.0f} MB; place it "
                "on a larger instance type.",
            )
    models = [model for model in resident if model.key != incoming_key]
    used = sum(model.memory_mb for model in models)
    gpu_used = sum(model.gpu_memory_mb for model in models)
    if budgets.fit(used + incoming_mb, gpu_used + incoming_gpu_mb):
        return budgets.plan((), used + incoming_mb, gpu_used + incoming_gpu_mb)
    candidates = sorted((m for m in models if not m.pinned and not m.loading), key=order)
    evicted: list[str] = []
    for model in candidates:
        if budgets.fit(used + incoming_mb, gpu_used + incoming_gpu_mb):
            break
        if not budgets.frees_what_is_short(model, used + incoming_mb, gpu_used + incoming_gpu_mb):
            continue  # unloading it would not make room where room is short
        evicted.append(model.key)
        used -= model.memory_mb
        gpu_used -= model.gpu_memory_mb
    if not budgets.fit(used + incoming_mb, gpu_used + incoming_gpu_mb):
        held = [m for m in models if m.pinned or m.loading]
        short = budgets.shortest(used + incoming_mb, gpu_used + incoming_gpu_mb)
        need, budget, holding = (
            (incoming_mb, budget_mb, sum(m.memory_mb for m in held))
            if short == HOST_MEMORY
            else (incoming_gpu_mb, gpu_budget_mb, sum(m.gpu_memory_mb for m in held))
        )
        raise CapacityExceeded(
            f"Model {incoming_key} needs {need:,.0f} MB{budgets.of(short)}; pinned models and "
            f"models being loaded or unloaded hold {holding:,.0f} MB of the instance's "
            f"{budget:,.0f} MB {budgets.label(short)}budget. Unpin a model, raise the budget "
            "or add an instance.",
        )
    return budgets.plan(tuple(evicted), used + incoming_mb, gpu_used + incoming_gpu_mb)


def plan_trim(
    *,
    resident: Iterable[ResidentModel],
    budget_mb: float,
    keep: str | None = None,
    order: Callable[[ResidentModel], tuple] = lru_order,
    gpu_budget_mb: float | None = None,
) -> tuple[str, ...]:
    """Models to evict so the resident set is back within budget, and within the GPU budget if
    the instance has one (after a load measured more than estimated); never the pinned ones, nor
    ``keep`` (the model just loaded)."""
    budgets = _Budgets(budget_mb, gpu_budget_mb)
    models = list(resident)
    used = sum(model.memory_mb for model in models)
    gpu_used = sum(model.gpu_memory_mb for model in models)
    evicted: list[str] = []
    candidates = sorted(
        (m for m in models if not m.pinned and not m.loading and m.key != keep), key=order
    )
    for model in candidates:
        if budgets.fit(used, gpu_used):
            break
        if not budgets.frees_what_is_short(model, used, gpu_used):
            continue
        evicted.append(model.key)
        used -= model.memory_mb
        gpu_used -= model.gpu_memory_mb
    return tuple(evicted)


def plan_headroom(
    *,
    resident: Iterable[ResidentModel],
    budget_mb: float,
    high_watermark: float,
    low_watermark: float,
    order: Callable[[ResidentModel], tuple] = lru_order,
    room_for_mb: float = 0.0,
    gpu_budget_mb: float | None = None,
    defer_to_loading: bool = False,
    keep_most_recent: bool = True,
) -> tuple[str, ...]:
    """Models to evict ahead of need, so the next cold load finds room without waiting for an
    unload.

    Nothing is chosen while what is resident (loads in flight included) stays at or under
    ``high_watermark`` of the budget (of each budget, on an instance with GPUs) and leaves at
    least ``room_for_mb`` free. Past that, the least valuable models in ``order`` are chosen
    until what stays is at or under ``low_watermark`` of the budget with ``room_for_mb`` free.
    Models already being unloaded count as gone (their memory is on its way back, and they are
    not chosen twice); pinned and loading models are never chosen, nor, with
    ``keep_most_recent``, the most recently used one (the model a request has just loaded or
    used stays, whatever the order says).

    With ``defer_to_loading``, a model worth more in ``order`` than a model still loading is not
    chosen: once that load ends, the model it brought is the cheaper victim, and the caller runs
    the pass again then. Under Zipf traffic the cold model is usually from the tail, so without
    this every cold load of a tail model would push out one of the hot models beside it
    (measured in ``bench/churn.py``: half of the answers found their model loaded, where the
    three models the budget keeps draw two thirds of the requests).
    """
    if not 0 < low_watermark <= high_watermark <= 1:
        raise ValueError("watermarks must satisfy 0 < low <= high <= 1")
    models = list(resident)
    staying = [m for m in models if not (m.loading and m.evicting)]
    used = sum(m.memory_mb for m in staying)
    gpu_used = sum(m.gpu_memory_mb for m in staying)
    room = min(room_for_mb, budget_mb)

    def above(host: float, gpu: float, fraction: float) -> bool:
        over_gpu = gpu_budget_mb is not None and gpu > fraction * gpu_budget_mb
        return host > fraction * budget_mb or over_gpu

    if not above(used, gpu_used, high_watermark) and budget_mb - used >= room:
        return ()
    candidates = [m for m in staying if not m.pinned and not m.loading]
    if candidates and keep_most_recent:
        in_use = max(candidates, key=lambda m: (m.last_used, m.key))
        candidates.remove(in_use)
    loading = [order(m) for m in staying if m.loading and not m.pinned] if defer_to_loading else []
    cheapest_loading = min(loading, default=None)
    evicted: list[str] = []
    for model in sorted(candidates, key=order):
        if not above(used, gpu_used, low_watermark) and budget_mb - used >= room:
            break
        if cheapest_loading is not None and cheapest_loading < order(model):
            break  # the model still loading is the better victim once it has loaded
        evicted.append(model.key)
        used -= model.memory_mb
        gpu_used -= model.gpu_memory_mb
    return tuple(evicted)


def evictions_make_room(
    *,
    resident: Iterable[ResidentModel],
    incoming_mb: float,
    budget_mb: float,
    incoming_gpu_mb: float = 0.0,
    gpu_budget_mb: float | None = None,
) -> bool:
    """Whether the incoming model, which does not fit now, fits once the models already being
    unloaded are gone: the load then waits for those unloads instead of choosing more victims."""
    budgets = _Budgets(budget_mb, gpu_budget_mb)
    models = list(resident)
    used = sum(m.memory_mb for m in models)
    gpu_used = sum(m.gpu_memory_mb for m in models)
    if budgets.fit(used + incoming_mb, gpu_used + incoming_gpu_mb):
        return False
    leaving = [m for m in models if m.loading and m.evicting]
    if not leaving:
        return False
    freed = sum(m.memory_mb for m in leaving)
    gpu_freed = sum(m.gpu_memory_mb for m in leaving)
    return budgets.fit(used - freed + incoming_mb, gpu_used - gpu_freed + incoming_gpu_mb)


HOST_MEMORY, GPU_MEMORY = "host memory", "GPU memory"


@dataclass(frozen=True)
class _Budgets:
    """Host memory and, on an instance with GPUs, GPU memory: what must fit in each."""

    host_mb: float
    gpu_mb: float | None

    def named(self, host: float, gpu: float) -> list[tuple[str, float, float]]:
        pairs = [(HOST_MEMORY, host, self.host_mb)]
        if self.gpu_mb is not None:
            pairs.append((GPU_MEMORY, gpu, self.gpu_mb))
        return pairs

    def fit(self, host: float, gpu: float) -> bool:
        return host <= self.host_mb and (self.gpu_mb is None or gpu <= self.gpu_mb)

    def label(self, what: str) -> str:
        """How a message names a budget: plainly "budget" where host memory is the only one."""
        return "" if self.gpu_mb is None else f"{what} "

    def of(self, what: str) -> str:
        return "" if self.gpu_mb is None else f" of {what}"

    def shortest(self, host: float, gpu: float) -> str:
        """The budget that is exceeded (host memory first)."""
        return next(what for what, need, budget in self.named(host, gpu) if need > budget)

    def frees_what_is_short(self, model: ResidentModel, host: float, gpu: float) -> bool:
        """Whether unloading ``model`` frees memory in a budget that is exceeded now (always, with
        host memory the only budget)."""
        if self.gpu_mb is None:
            return True
        return (host > self.host_mb and model.memory_mb > 0) or (
            gpu > self.gpu_mb and model.gpu_memory_mb > 0
        )

    def plan(self, evict: tuple[str, ...], host: float, gpu: float) -> LoadPlan:
        return LoadPlan(
            evict=evict,
            resident_mb_after=host,
            budget_mb=self.host_mb,
            gpu_mb_after=gpu,
            gpu_budget_mb=self.gpu_mb,
        )


class AccessHistory:
    """Decayed request counts per model key, for resident and recently evicted models alike.

    ``record(key)`` on every request to a model (before its load, if it needs one); then
    ``plan_load(..., order=history.order())`` evicts the least requested models first. Counts
    decay by half every ``half_life_requests`` requests recorded here, and the history keeps
    the ``max_keys`` most recently requested keys whether or not they are resident, so an
    evicted model that comes back keeps its count. Thread-safe: one lock, held for O(1) work.
    """

    def __init__(
        self,
        *,
        half_life_requests: float = DEFAULT_HALF_LIFE_REQUESTS,
        max_keys: int = DEFAULT_MAX_KEYS,
        protect_requests: int = DEFAULT_PROTECT_REQUESTS,
        weight_by_memory: bool = True,
    ) -> None:
        if half_life_requests <= 0:
            raise ValueError("half_life_requests must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.half_life_requests = float(half_life_requests)
        self.max_keys = max_keys
        self.protect_requests = protect_requests
        self.weight_by_memory = weight_by_memory
        self._lock = threading.Lock()
        self._requests = 0
        # key -> (count at the last request, request number of that request); oldest first.
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()

    @property
    def requests(self) -> int:
        """Requests recorded so far (the clock that decay and protection count in)."""
        return self._requests

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def record(self, key: str) -> None:
        """Count one request to ``key``."""
        with self._lock:
            self._requests += 1
            count, at = self._entries.pop(key, (0.0, self._requests))
            self._entries[key] = (self._decayed(count, at, self._requests) + 1.0, self._requests)
            if len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        """Drop ``key`` (its model was deleted): a new model under that key starts from zero."""
        with self._lock:
            self._entries.pop(key, None)

    def frequency(self, key: str) -> float:
        """Requests to ``key``, decayed to now; 0 for a key never seen or forgotten."""
        with self._lock:
            count, at = self._entries.get(key, (0.0, self._requests))
            return self._decayed(count, at, self._requests)

    def order(self, *, protect: bool = True) -> Callable[[ResidentModel], tuple]:
        """An ``order`` for plan_load/plan_trim: least valuable first, as of this call.

        Value is the decayed request count (per MB with ``weight_by_memory``); ties go to the
        least recently used, then the key. With ``protect``, a model requested within the last
        ``protect_requests`` requests goes after every other one, so a model just loaded for a
        request is not unloaded by a concurrent load before it answers. Without it (eviction
        ahead of need, where a victim is drained before it is unloaded), the count alone decides.
        """
        with self._lock:
            now = self._requests

        def value(model: ResidentModel) -> tuple:
            with self._lock:
                count, at = self._entries.get(model.key, (0.0, -(10**18)))
            # A request recorded after order() was called (another thread) makes ``at`` later
            # than ``now``: its count is current, so it is not decayed, and it is protected.
            frequency = self._decayed(count, min(at, now), now)
            if self.weight_by_memory:
                # On a GPU instance the larger figure is the GPU memory, the one that runs out.
                frequency /= max(model.memory_mb, model.gpu_memory_mb, 1.0)
            protected = protect and now - at < self.protect_requests
            return (protected, frequency, model.last_used, model.key)

        return value

    def _decayed(self, count: float, at: int, now: int) -> float:
        if count == 0.0 or at >= now:
            return count
        return count * 0.5 ** ((now - at) / self.half_life_requests)
