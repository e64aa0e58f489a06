"""Which loaded models make room for a new one on an instance: a pure policy, no ORM.

An instance holds models up to its memory budget. Before a load, ``plan_load`` picks the models to
unload so that what stays resident plus the incoming model fits the budget, never touching a
pinned model. The default policy is least-recently-used (what SageMaker multi-model endpoints do);
the routing layer may pass another ordering. Everything here works on plain dataclasses so it can
be property-tested and benchmarked at fleet scale.
"""

from __future__ import annotations

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
    # Still loading: its memory counts, but it cannot be evicted until the load finishes.
    loading: bool = False


@dataclass(frozen=True)
class LoadPlan:
    """What to unload (in order) before loading ``incoming_mb`` more."""

    evict: tuple[str, ...]
    resident_mb_after: float
    budget_mb: float

    @property
    def fits(self) -> bool:
        return self.resident_mb_after <= self.budget_mb


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
) -> LoadPlan:
    """Choose the models to evict so ``incoming_mb`` fits in ``budget_mb``.

    Evicts the fewest models in ``order`` (least valuable first) until the incoming model fits;
    pinned and still-loading models are never chosen. Raises CapacityExceeded naming the figures
    when even evicting every candidate is not enough, so the caller never exceeds the budget.
    """
    if incoming_mb > budget_mb:
        raise CapacityExceeded(
            f"Model {incoming_key} needs {incoming_mb:,.0f} MB but the instance's whole budget "
            f"is {budget_mb:,.0f} MB; place it on a larger instance type.",
        )
    models = [model for model in resident if model.key != incoming_key]
    used = sum(model.memory_mb for model in models)
    if used + incoming_mb <= budget_mb:
        return LoadPlan(evict=(), resident_mb_after=used + incoming_mb, budget_mb=budget_mb)
    candidates = sorted((m for m in models if not m.pinned and not m.loading), key=order)
    evicted: list[str] = []
    for model in candidates:
        if used + incoming_mb <= budget_mb:
            break
        evicted.append(model.key)
        used -= model.memory_mb
    if used + incoming_mb > budget_mb:
        held = sum(m.memory_mb for m in models if m.pinned or m.loading)
        raise CapacityExceeded(
            f"Model {incoming_key} needs {incoming_mb:,.0f} MB; pinned and loading models hold "
            f"{held:,.0f} MB of the instance's {budget_mb:,.0f} MB budget. Unpin a model, raise "
            "the budget or add an instance.",
        )
    return LoadPlan(evict=tuple(evicted), resident_mb_after=used + incoming_mb, budget_mb=budget_mb)


def plan_trim(
    *,
    resident: Iterable[ResidentModel],
    budget_mb: float,
    keep: str | None = None,
    order: Callable[[ResidentModel], tuple] = lru_order,
) -> tuple[str, ...]:
    """Models to evict so the resident set is back within budget (after a load measured more than
    estimated); never the pinned ones, nor ``keep`` (the model just loaded)."""
    models = list(resident)
    used = sum(model.memory_mb for model in models)
    evicted: list[str] = []
    candidates = sorted(
        (m for m in models if not m.pinned and not m.loading and m.key != keep), key=order
    )
    for model in candidates:
        if used <= budget_mb:
            break
        evicted.append(model.key)
        used -= model.memory_mb
    return tuple(evicted)
