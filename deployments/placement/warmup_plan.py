"""What a warm-up pass does on one instance: a pure policy, no ORM.

Three policies (``WARMUP_POLICY``):

- ``hourly-all``: every placed model gets a warm-up request each pass; a loaded one is warmed,
  a cold one that is pinned or live is loaded and warmed when it fits the budget without
  evicting anything (a warm-up never makes another tenant's model cold);
- ``hourly-skip-recent`` (the default until predictive warm-ups were measured): the same, but
  a model used within the skip window is left alone, since real traffic keeps it warm;
- ``predictive``: models are warmed for the traffic they are likely to get. Each model has its
  probability of being asked for before the next pass (``deployments.placement.forecast``); the
  cold ones at or above ``min_probability`` are loaded (one warm-up request each, the most
  likely first) into the free room, and where room is short, in place of loaded models less
  likely to be called (never one more likely, never a pinned one, never one used within the
  skip window; a cold pinned model is loaded first, whatever its forecast). Loaded models get no
  request: they are warm already, and a model unlikely to be called is left to go cold instead
  of paying for its warm-ups.

``plan_warmups`` returns the decision; the serving side carries it out (unloads first, then
loads, then requests).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

HOURLY_ALL = "hourly-all"
HOURLY_SKIP_RECENT = "hourly-skip-recent"
PREDICTIVE = "predictive"
POLICIES = (HOURLY_ALL, HOURLY_SKIP_RECENT, PREDICTIVE)


@dataclass(frozen=True)
class WarmupCandidate:
    """A model placed on the instance, as a warm-up pass sees it."""

    key: str
    memory_mb: float
    loaded: bool
    # Pinned, or the live version of its deployment: worth loading when cold.
    wanted: bool = True
    pinned: bool = False
    recently_used: bool = False
    # The chance it is asked for before the next pass (predictive only).
    probability: float = 0.0


@dataclass(frozen=True)
class WarmupDecision:
    # Loaded models to send a warm-up request.
    warm: tuple[str, ...] = ()
    # Cold models to load and warm, in this order.
    load: tuple[str, ...] = ()
    # Loaded models to unload first, to make room for ``load``.
    evict: tuple[str, ...] = ()
    # Cold models left cold for lack of room.
    no_room: tuple[str, ...] = ()
    # Cold models left cold: neither pinned nor live, or (predictive) unlikely to be called.
    skipped: tuple[str, ...] = ()
    # Models left alone as used within the skip window (hourly-skip-recent).
    recent: tuple[str, ...] = ()

    @property
    def requests(self) -> int:
        """Warm-up requests the pass sends."""
        return len(self.warm) + len(self.load)


def plan_warmups(
    *,
    policy: str,
    candidates: Iterable[WarmupCandidate],
    budget_mb: float,
    resident_mb: float,
    min_probability: float = 0.5,
) -> WarmupDecision:
    """The warm-up pass for one instance whose models (the candidates, and any others counted
    in ``resident_mb``) hold ``resident_mb`` of its ``budget_mb`` (``math.inf`` where the
    backend finds room by itself).

    The hourly policies take the candidates in the order given (the caller's priority: the
    first cold model to fit is loaded); the predictive one orders them by their forecast.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown warm-up policy {policy!r}; choose one of {', '.join(POLICIES)}.")
    if policy == PREDICTIVE:
        models = sorted(candidates, key=lambda m: m.key)
        return _predictive(models, budget_mb, resident_mb, min_probability)
    warm: list[str] = []
    load: list[str] = []
    no_room: list[str] = []
    skipped: list[str] = []
    recent: list[str] = []
    free = budget_mb - resident_mb
    for model in candidates:
        if policy == HOURLY_SKIP_RECENT and model.recently_used:
            recent.append(model.key)
        elif model.loaded:
            warm.append(model.key)
        elif not model.wanted:
            skipped.append(model.key)
        elif model.memory_mb <= free:
            load.append(model.key)
            free -= model.memory_mb
        else:
            no_room.append(model.key)
    return WarmupDecision(
        warm=tuple(warm),
        load=tuple(load),
        no_room=tuple(no_room),
        skipped=tuple(skipped),
        recent=tuple(recent),
    )


def _predictive(
    models: list[WarmupCandidate], budget_mb: float, resident_mb: float, min_probability: float
) -> WarmupDecision:
    # A pinned model is kept loaded whatever its forecast: it counts as certain to be called.
    models = [replace(m, probability=1.0) if m.pinned else m for m in models]
    # The most likely first; ties by key, so a plan is deterministic.
    wanted = sorted(
        (m for m in models if not m.loaded and m.wanted and m.probability >= min_probability),
        key=lambda m: (-m.probability, m.key),
    )
    # Victims: the least likely loaded models first; never a pinned one, nor one used within
    # the skip window (whatever its history says, it is being called now).
    victims = sorted(
        (m for m in models if m.loaded and not m.pinned and not m.recently_used),
        key=lambda m: (m.probability, m.key),
    )
    free = budget_mb - resident_mb
    load: list[str] = []
    evict: list[str] = []
    no_room: list[str] = []
    for model in wanted:
        taken = 0
        freed = 0.0
        while free + freed < model.memory_mb and taken < len(victims):
            if victims[taken].probability >= model.probability:
                break  # never push out a model at least as likely to be called
            freed += victims[taken].memory_mb
            taken += 1
        if free + freed < model.memory_mb:
            no_room.append(model.key)
            continue
        evict.extend(v.key for v in victims[:taken])
        victims = victims[taken:]
        free += freed - model.memory_mb
        load.append(model.key)
    chosen = set(load) | set(no_room)
    skipped = tuple(m.key for m in models if not m.loaded and m.key not in chosen)
    return WarmupDecision(
        load=tuple(load), evict=tuple(evict), no_room=tuple(no_room), skipped=skipped
    )
