"""Packing copies into bins with fewer bins than first fit decreasing: pure and deterministic.

Items are copies of models: a weight (the solver's packing weight, in bin units) and an owner
(copies of one model share an owner and never share a bin). A bin holds at most ``cap`` items
and weighs at most ``capacity``. ``improve`` keeps the better of best fit decreasing and Gupta
and Ho's minimum bin slack (each bin in turn takes the largest item left and the set of others
that fills it most), then, while it has more bins than the lower bound:

- for small fleets, a bin-completion search (Korf, 2002): bins are filled one at a time, each
  with the largest item left and a set of others, most-full sets first, within a waste budget
  of ``bins × capacity − total weight`` for the lower bound's bin count;
- ruin and recreate: the emptiest bins (a bin's worth of room between them) and a few others
  drawn with a fixed seed are repacked by that search into one bin fewer;
- a local search in the spirit of Falkenauer's dominance moves: the least-filled bins are
  emptied into a pool, every other bin trades items with the pool where that fills it more (one
  or two of its items for one or two of the pool's), the pool is put back best fit, and the
  best packing seen is kept.

Every search is bounded by counts of steps, never by the clock, and draws only from generators
with fixed seeds, so the same input gives the same bins on any machine. The solver uses the
answer only when it has fewer bins than first fit decreasing. ``continuous_bound`` and
``martello_toth_l2`` are the lower bounds.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence

from sortedcontainers import SortedList

# Float sums of exact fits land a hair over: a bin is full at capacity × (1 + 1e-9).
RELATIVE_TOLERANCE = 1e-9
# Above this many copies no improvement is tried: first fit decreasing's own waste is a small
# share of a large fleet, and the solve must stay within seconds at 100k models.
IMPROVE_MAX_ITEMS = 20_000
# With many small models per bin, first fit decreasing already fills bins to within one
# model's weight and the searches below only cost time: they run where each bin holds few.
IMPROVE_MAX_ITEMS_PER_BIN = 16
EXACT_SEARCH_MAX_ITEMS_PER_BIN = 6
# Above this many items the exhaustive search is not tried (the local search is).
EXACT_SEARCH_MAX_ITEMS = 1500
EXACT_SEARCH_NODES = 100_000
# Repacking a few bins at a time: rounds, and search steps each.
RECREATE_ROUNDS = (200, 1500)
# Rounds = this ÷ items, within RECREATE_ROUNDS: small fleets search longer per item.
RECREATE_ITEM_ROUNDS = 200_000
# All repacks together stop after this many search steps (about a second).
RECREATE_TOTAL_NODES = 600_000
RECREATE_NODES = 4_000
# How many full bins join the emptiest ones in a repack: up to the first, widening to the
# second after failures.
RECREATE_EXTRA_BINS = (6, 16)
MINIMUM_SLACK_NODES_PER_BIN = 200
# Local search steps: item comparisons, about a microsecond each.
LOCAL_SEARCH_STEPS = 400_000
# A fleet whose total is exactly a whole number of bins (each bin of the optimum full) is also
# searched for a perfect packing, fail first, up to this many items and search steps (about
# three seconds).
PERFECT_SEARCH_MAX_ITEMS = 200
PERFECT_SEARCH_STEPS = 3_000_000
# Pair moves are tried only while bins and the pool are this small (their cost is quadratic).
PAIR_MOVE_MAX_ITEMS = 48


def continuous_bound(sizes: Sequence[float], capacity: float) -> int:
    """``⌈Σ sizes / capacity⌉``: bins needed if items could be cut anywhere."""
    if not sizes:
        return 0
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    return max(1, math.ceil(math.fsum(sizes) / capacity - RELATIVE_TOLERANCE))


def martello_toth_l2(sizes: Sequence[float], capacity: float) -> int:
    """Martello–Toth ``L2`` for one dimension: a lower bound on bins of ``capacity``, ≥ L1."""
    if not sizes:
        return 0
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    tolerance = capacity * RELATIVE_TOLERANCE
    ascending = sorted(sizes)
    prefix = [0.0, *itertools.accumulate(ascending)]
    count = len(ascending)
    half = capacity / 2

    def above(limit: float) -> int:
        """Index of the first item larger than ``limit`` (+ tolerance)."""
        return bisect.bisect_right(ascending, limit + tolerance)

    big = above(half)  # items from here on are larger than C/2: a bin each
    best = continuous_bound(ascending, capacity)
    thresholds = {0.0, *(w for w in ascending[:big] if w > 0)}
    for alpha in sorted(thresholds):
        lone = above(capacity - alpha)  # J1 = [lone, count)
        j1 = count - lone
        j2 = lone - big if lone > big else 0
        j2_sum = prefix[lone] - prefix[big] if lone > big else 0.0
        # J3: items in [alpha, C/2].
        start = bisect.bisect_left(ascending, alpha - tolerance) if alpha > 0 else 0
        j3_sum = prefix[big] - prefix[start]
        room = j2 * capacity - j2_sum
        extra = max(0, math.ceil((j3_sum - room) / capacity - RELATIVE_TOLERANCE))
        best = max(best, j1 + j2 + extra)
    return best


def best_fit_decreasing(
    weights: Sequence[float], owners: Sequence[int], capacity: float, cap: int
) -> list[list[int]]:
    """Each item (in the given order, heaviest first) into the fullest bin it fits."""
    tolerance = capacity * RELATIVE_TOLERANCE
    rooms: SortedList = SortedList()
    bins: list[list[int]] = []
    held: list[set[int]] = []
    room_of: list[float] = []
    for item, weight in enumerate(weights):
        owner = owners[item]
        position = rooms.bisect_left((weight - tolerance, -1))
        chosen = -1
        while position < len(rooms):
            room, index = rooms[position]
            if owner not in held[index]:
                chosen = index
                rooms.remove((room, index))
                break
            position += 1
        if chosen < 0:
            chosen = len(bins)
            bins.append([])
            held.append(set())
            room_of.append(capacity)
        bins[chosen].append(item)
        held[chosen].add(owner)
        room_of[chosen] -= weight
        if len(bins[chosen]) < cap:
            rooms.add((room_of[chosen], chosen))
    return bins


def improve(
    weights: Sequence[float],
    owners: Sequence[int],
    capacity: float,
    cap: int,
    *,
    upper: int,
    lower: int,
    exact_nodes: int = EXACT_SEARCH_NODES,
    local_steps: int = LOCAL_SEARCH_STEPS,
) -> list[list[int]] | None:
    """Bins (lists of item indices) fewer than ``upper``, or None if none was found.

    ``weights`` must be non-increasing; ``lower`` is a lower bound on the bins needed (the
    search stops when it is met).
    """
    if upper <= lower or not weights or len(weights) > IMPROVE_MAX_ITEMS:
        return None
    if len(weights) > IMPROVE_MAX_ITEMS_PER_BIN * max(lower, 1):
        return None
    best = best_fit_decreasing(weights, owners, capacity, cap)
    if len(best) > lower:
        slack = minimum_bin_slack(weights, owners, capacity, cap)
        if len(slack) < len(best):
            best = slack
    exact = (
        len(weights) <= EXACT_SEARCH_MAX_ITEMS
        and len(weights) <= EXACT_SEARCH_MAX_ITEMS_PER_BIN * lower
    )
    if len(best) > lower and exact:
        found = bin_completion(weights, owners, capacity, cap, bins=lower, nodes=exact_nodes)
        if found is not None:
            best = found
    if len(best) > lower and exact and len(weights) <= PERFECT_SEARCH_MAX_ITEMS:
        found = perfect_packing(
            weights, owners, capacity, cap, bins=lower, nodes=PERFECT_SEARCH_STEPS
        )
        if found is not None:
            best = found
    if len(best) > lower and len(weights) <= EXACT_SEARCH_MAX_ITEMS_PER_BIN * lower:
        best = ruin_and_recreate(weights, owners, capacity, cap, best, lower)
    if len(best) > lower:
        best = LocalSearch(weights, owners, capacity, cap).run(best, lower, local_steps)
    return best if len(best) < upper else None


def ruin_and_recreate(
    weights: Sequence[float],
    owners: Sequence[int],
    capacity: float,
    cap: int,
    bins: list[list[int]],
    lower: int,
    *,
    rounds: int | None = None,
    nodes: int = RECREATE_NODES,
) -> list[list[int]]:
    """Take out the emptiest bins (at least a bin's worth of free room between them) and a
    few others drawn by a fixed seed, and repack their items into one bin fewer with the
    bin-completion search; keep every success. Few items per bin only (the search's cost)."""
    tolerance = capacity * RELATIVE_TOLERANCE
    rng = random.Random(0)
    if rounds is None:
        rounds = RECREATE_ITEM_ROUNDS // max(len(weights), 1)
        rounds = min(max(rounds, RECREATE_ROUNDS[0]), RECREATE_ROUNDS[1])
    current = [list(b) for b in bins]
    stale = 0
    spent = [0]
    for _ in range(rounds):
        if len(current) <= lower or spent[0] >= RECREATE_TOTAL_NODES:
            break
        rooms = [capacity - sum(weights[i] for i in b) for b in current]
        if sum(rooms) < capacity - tolerance:
            break  # no bin's worth of room anywhere: nothing to gain
        by_room = sorted(range(len(current)), key=lambda b: (-rooms[b], b))
        taken: list[int] = []
        room = 0.0
        for index in by_room:
            if room >= capacity - tolerance and rng.random() < 0.5:
                break
            taken.append(index)
            room += rooms[index]
        others = [b for b in range(len(current)) if b not in set(taken)]
        # Small neighbourhoods while they succeed, wider after each run of failures.
        widest = min(RECREATE_EXTRA_BINS[0] + stale // 10, RECREATE_EXTRA_BINS[1])
        for _ in range(rng.randint(1, widest)):
            if others:
                taken.append(others.pop(rng.randrange(len(others))))
        pool = sorted((i for b in taken for i in current[b]), key=lambda i: (-weights[i], i))
        repacked = bin_completion(
            [weights[i] for i in pool],
            [owners[i] for i in pool],
            capacity,
            cap,
            bins=len(taken) - 1,
            nodes=nodes,
            spent=spent,
        )
        if repacked is None:
            stale += 1
            continue
        stale = 0
        kept = [current[b] for b in range(len(current)) if b not in set(taken)]
        current = kept + [[pool[j] for j in b] for b in repacked]
    return current


def minimum_bin_slack(
    weights: Sequence[float],
    owners: Sequence[int],
    capacity: float,
    cap: int,
    *,
    nodes_per_bin: int = MINIMUM_SLACK_NODES_PER_BIN,
) -> list[list[int]]:
    """Gupta and Ho's minimum bin slack: each bin in turn takes the largest item left and the
    set of others that leaves it least room (searched heaviest first, within a step count)."""
    tolerance = capacity * RELATIVE_TOLERANCE
    unused: SortedList = SortedList((w, i) for i, w in enumerate(weights))
    bins: list[list[int]] = []
    while unused:
        weight, first = unused.pop(-1)
        best_room, best_set = capacity - weight, []
        current: list[tuple[float, int]] = []
        owners_in = {owners[first]}
        budget = [nodes_per_bin]

        def extend(
            below: int,
            room: float,
            current: list = current,
            owners_in: set = owners_in,
            budget: list = budget,
        ) -> bool:
            """Add items left of position ``below``; True once the bin is exactly full."""
            nonlocal best_room, best_set
            if room < best_room:
                best_room, best_set = room, list(current)
            if room <= tolerance:
                return True
            if len(current) + 1 >= cap or not unused:
                return False
            # The best single item: the largest that fits.
            position = min(below, unused.bisect_right((room + tolerance, float("inf"))))
            while position > 0 and budget[0] > 0:
                position -= 1
                budget[0] -= 1
                entry = unused[position]
                if owners[entry[1]] not in owners_in:
                    if room - entry[0] < best_room:
                        best_room, best_set = room - entry[0], [*current, entry]
                        if best_room <= tolerance:
                            return True
                    break
            smallest = unused[0][0]
            if room < 2 * smallest - tolerance or len(current) + 2 >= cap:
                return False
            # Two or more: an item that leaves room for at least the smallest one.
            position = min(below, unused.bisect_right((room - smallest + tolerance, float("inf"))))
            previous = None
            while position > 0 and budget[0] > 0:
                position -= 1
                budget[0] -= 1
                entry = unused[position]
                if entry[0] == previous or owners[entry[1]] in owners_in:
                    continue
                previous = entry[0]
                current.append(entry)
                owners_in.add(owners[entry[1]])
                done = extend(position, room - entry[0])
                owners_in.discard(owners[entry[1]])
                current.pop()
                if done:
                    return True
            return False

        extend(len(unused), capacity - weight)
        for entry in best_set:
            unused.remove(entry)
        bins.append([first, *(i for _, i in best_set)])
    return bins


def bin_completion(
    weights: Sequence[float],
    owners: Sequence[int],
    capacity: float,
    cap: int,
    *,
    bins: int,
    nodes: int,
    spent: list[int] | None = None,
) -> list[list[int]] | None:
    """``bins`` bins that hold every item, or None (none exist, or not found in ``nodes``)."""
    tolerance = capacity * RELATIVE_TOLERANCE
    waste_budget = bins * capacity - sum(weights) + tolerance * bins
    if waste_budget < 0:
        return None
    count = len(weights)
    used = [False] * count
    chosen: list[list[int]] = []
    budget = [nodes]

    descending = [-w for w in weights]  # ascending, for bisect

    def completions(
        first: int, room: float, slots: int, owners_in: set[int], waste_left: float
    ) -> list[list[int]]:
        """Sets of unused items after ``first`` that fit ``room`` and leave at most
        ``waste_left`` of it, fullest first."""
        found: list[tuple[float, list[int]]] = []
        current: list[int] = []
        smallest = next((weights[i] for i in range(count - 1, -1, -1) if not used[i]), 0.0)

        def extend(start: int, room: float, slots: int) -> None:
            if budget[0] <= 0:
                return
            budget[0] -= 1
            most = slots if smallest <= 0 else min(slots, int((room + tolerance) / smallest))
            added = False
            previous_weight = None
            begin = max(start, bisect.bisect_left(descending, -room - tolerance))
            for item in range(begin, count) if most > 0 else ():
                weight = weights[item]
                if used[item] or owners[item] in owners_in or weight == previous_weight:
                    continue
                # Even ``most`` items of this weight (the largest left) would waste too much.
                if room - most * weight > waste_left + tolerance:
                    break
                previous_weight = weight
                added = True
                current.append(item)
                owners_in.add(owners[item])
                extend(item + 1, room - weight, slots - 1)
                owners_in.discard(owners[item])
                current.pop()
                if budget[0] <= 0:
                    return
            if not added and room <= waste_left + tolerance:
                found.append((room, list(current)))

        extend(first + 1, room, slots)
        # Fullest first; equally full sets in a fixed pseudo-random order (item order alone
        # keeps pairing the largest items first, which dead-ends more often).
        found.sort(key=lambda pair: (pair[0], tiebreak.get(tuple(pair[1]), 0.0)))
        return [items for _, items in found]

    def search(waste_left: float, bins_left: int) -> bool:
        first = next((i for i in range(count) if not used[i]), -1)
        if first < 0:
            return True
        if bins_left <= 0 or budget[0] <= 0:
            return False
        used[first] = True
        room = capacity - weights[first]
        for others in completions(first, room, cap - 1, {owners[first]}, waste_left):
            waste = room - sum(weights[i] for i in others)
            if waste > waste_left + tolerance:
                break  # sorted by waste
            for item in others:
                used[item] = True
            chosen.append([first, *others])
            if search(waste_left - max(waste, 0.0), bins_left - 1):
                return True
            chosen.pop()
            for item in others:
                used[item] = False
            if budget[0] <= 0:
                break
        used[first] = False
        return False

    tiebreak = _SeededOrder(random.Random(0))
    found = search(waste_budget, bins)
    if spent is not None:
        spent[0] += nodes - max(budget[0], 0)
    return [list(b) for b in chosen] if found else None


def perfect_packing(
    weights: Sequence[float],
    owners: Sequence[int],
    capacity: float,
    cap: int,
    *,
    bins: int,
    nodes: int,
    spent: list[int] | None = None,
) -> list[list[int]] | None:
    """``bins`` exactly full bins that hold every item, or None (the items do not add up to
    ``bins`` full bins, none exist, or none was found in ``nodes`` steps).

    Every item must then share a bin with a set of others that fills it exactly, so each step
    fills the bin of the item with the fewest such sets (fail first: an item with none ends the
    branch at once), trying its sets in turn. ``weights`` must be non-increasing.
    """
    tolerance = capacity * RELATIVE_TOLERANCE
    if bins <= 0 or abs(bins * capacity - math.fsum(weights)) > tolerance * bins:
        return None
    count = len(weights)
    descending = [-w for w in weights]  # ascending, for bisect
    used = [False] * count
    budget = [nodes]
    chosen: list[list[int]] = []

    def exact_sets(item: int, limit: int) -> list[tuple[int, ...]]:
        """Sets of other unused items that fill ``item``'s bin exactly (at most ``limit``)."""
        found: list[tuple[int, ...]] = []
        current: list[int] = []
        owners_in = {owners[item]}

        def extend(start: int, room: float, slots: int) -> None:
            budget[0] -= 1
            if room <= 8 * tolerance:
                found.append(tuple(current))
                return
            if slots <= 0 or budget[0] <= 0 or len(found) >= limit:
                return
            previous = None
            for other in range(
                max(start, bisect.bisect_left(descending, -room - tolerance)), count
            ):
                if used[other] or other == item or owners[other] in owners_in:
                    continue
                weight = weights[other]
                if weight == previous:
                    continue  # the same weight again completes the bin the same way
                if weight * slots < room - tolerance:
                    break  # even ``slots`` items this heavy (the heaviest left) fall short
                previous = weight
                current.append(other)
                owners_in.add(owners[other])
                extend(other + 1, room - weight, slots - 1)
                owners_in.discard(owners[other])
                current.pop()
                if budget[0] <= 0 or len(found) >= limit:
                    return

        extend(0, capacity - weights[item], cap - 1)
        return found

    def search(bins_left: int) -> bool:
        if bins_left == 0:
            return True
        if budget[0] <= 0:
            return False
        best: tuple[int, list[tuple[int, ...]]] | None = None
        seen: set[float] = set()
        for item in range(count):
            if used[item] or weights[item] in seen:
                continue
            seen.add(weights[item])
            sets = exact_sets(item, len(best[1]) if best else nodes)
            if not sets or budget[0] <= 0:
                return False
            if best is None or len(sets) < len(best[1]):
                best = (item, sets)
                if len(sets) == 1:
                    break
        if best is None:
            return False
        item, sets = best
        used[item] = True
        for others in sets:
            for other in others:
                used[other] = True
            chosen.append([item, *others])
            if search(bins_left - 1):
                return True
            chosen.pop()
            for other in others:
                used[other] = False
            if budget[0] <= 0:
                break
        used[item] = False
        return False

    found = search(bins)
    if spent is not None:
        spent[0] += nodes - max(budget[0], 0)
    return [list(b) for b in chosen] if found else None


class _SeededOrder(dict):
    """A fixed pseudo-random rank per completion, drawn when first asked for."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def get(self, key, default=None):
        if key not in self:
            self[key] = self.rng.random()
        return self[key]


class LocalSearch:
    """Empty the least-filled bins, let the others take the pool's items where that fills them
    more, put the rest back best fit; keep the best packing seen."""

    def __init__(
        self, weights: Sequence[float], owners: Sequence[int], capacity: float, cap: int
    ) -> None:
        self.weights = weights
        self.owners = owners
        self.capacity = capacity
        self.cap = cap
        self.tolerance = capacity * RELATIVE_TOLERANCE
        self.steps = 0

    def run(self, bins: list[list[int]], lower: int, steps: int) -> list[list[int]]:
        best = [list(b) for b in bins]
        current = [list(b) for b in bins]
        stale = 0
        rounds = 0
        while len(best) > lower and self.steps < steps and stale < 30:
            rounds += 1
            emptied = 1 + stale % 3
            current = self.round(current, emptied)
            if len(current) < len(best):
                best = [list(b) for b in current]
                stale = 0
            else:
                stale += 1
        return best

    def load(self, items: list[int]) -> float:
        return sum(self.weights[i] for i in items)

    def round(self, bins: list[list[int]], emptied: int) -> list[list[int]]:
        weights = self.weights
        self.steps += len(weights)
        loads = [self.load(b) for b in bins]
        order = sorted(range(len(bins)), key=lambda b: (loads[b], len(bins[b]), b))
        emptied = min(emptied, len(bins))
        pool_items = sorted(
            (i for b in order[:emptied] for i in bins[b]), key=lambda i: (-weights[i], i)
        )
        pool = SortedList((weights[i], i) for i in pool_items)
        kept = [bins[b] for b in order[emptied:]]
        kept_loads = [loads[b] for b in order[emptied:]]
        for index in range(len(kept)):
            if not pool:
                break
            kept_loads[index] = self.fill(kept[index], kept_loads[index], pool)
        # The pool back, heaviest first, best fit into the kept bins, then into new ones.
        rooms = SortedList(
            (self.capacity - load, index)
            for index, load in enumerate(kept_loads)
            if len(kept[index]) < self.cap
        )
        held = [{self.owners[i] for i in b} for b in kept]
        leftover: list[int] = []
        for _, item in reversed(list(pool)):
            weight, owner = weights[item], self.owners[item]
            position = rooms.bisect_left((weight - self.tolerance, -1))
            placed = False
            while position < len(rooms):
                self.steps += 1
                room, index = rooms[position]
                if owner not in held[index]:
                    rooms.remove((room, index))
                    kept[index].append(item)
                    held[index].add(owner)
                    if len(kept[index]) < self.cap:
                        rooms.add((room - weight, index))
                    placed = True
                    break
                position += 1
            if not placed:
                leftover.append(item)
        leftover.sort(key=lambda i: (-weights[i], i))
        extra = best_fit_decreasing(
            [weights[i] for i in leftover],
            [self.owners[i] for i in leftover],
            self.capacity,
            self.cap,
        )
        self.steps += len(leftover)
        return kept + [[leftover[j] for j in b] for b in extra]

    def fill(self, items: list[int], load: float, pool: SortedList) -> float:
        """Trade items of one bin with the pool while that fills the bin more."""
        weights, owners = self.weights, self.owners
        while pool:
            slack = self.capacity - load + self.tolerance
            owners_in = {owners[i] for i in items}
            best_gain, best_move = 0.0, None
            # One pool item in (when there is room to hold one more).
            if len(items) < self.cap:
                position = pool.bisect_right((slack, float("inf"))) - 1
                while position >= 0:
                    self.steps += 1
                    weight, item = pool[position]
                    if owners[item] not in owners_in:
                        if weight > best_gain:
                            best_gain, best_move = weight, ((), (item,))
                        break
                    position -= 1
            # One of the bin's items for one of the pool's.
            for out in items:
                self.steps += 1
                out_weight = weights[out]
                position = pool.bisect_right((out_weight + slack, float("inf"))) - 1
                while position >= 0:
                    weight, item = pool[position]
                    if weight <= out_weight:
                        break
                    self.steps += 1
                    if owners[item] not in owners_in or owners[item] == owners[out]:
                        if weight - out_weight > best_gain:
                            best_gain, best_move = weight - out_weight, ((out,), (item,))
                        break
                    position -= 1
            if len(pool) <= PAIR_MOVE_MAX_ITEMS and len(items) <= PAIR_MOVE_MAX_ITEMS:
                gain, move = self.pair_moves(items, slack, owners_in, pool)
                if gain > best_gain:
                    best_gain, best_move = gain, move
            if best_move is None or best_gain <= self.tolerance:
                return load
            out, into = best_move
            for item in out:
                items.remove(item)
                pool.add((weights[item], item))
            for item in into:
                pool.remove((weights[item], item))
                items.append(item)
            load += best_gain
        return load

    def pair_moves(
        self, items: list[int], slack: float, owners_in: set[int], pool: SortedList
    ) -> tuple[float, tuple[tuple[int, ...], tuple[int, ...]] | None]:
        """The best trade of one or two bin items for one or two pool items, pairs included."""
        weights, owners = self.weights, self.owners
        pool_list = list(pool)
        best_gain, best_move = 0.0, None
        outs: list[tuple[float, tuple[int, ...]]] = [(weights[i], (i,)) for i in items]
        outs += [
            (weights[a] + weights[b], (a, b)) for x, a in enumerate(items) for b in items[x + 1 :]
        ]
        ins: list[tuple[float, tuple[int, ...]]] = [(w, (i,)) for w, i in pool_list]
        ins += [
            (pool_list[x][0] + pool_list[y][0], (pool_list[x][1], pool_list[y][1]))
            for x in range(len(pool_list))
            for y in range(x + 1, len(pool_list))
            if owners[pool_list[x][1]] != owners[pool_list[y][1]]
        ]
        ins.sort()
        in_weights = [w for w, _ in ins]
        for out_weight, out in outs:
            limit = min(2, self.cap - (len(items) - len(out)))
            left = {owners[i] for i in items if i not in out}
            position = bisect.bisect_right(in_weights, out_weight + slack) - 1
            while position >= 0:
                self.steps += 1
                weight, into = ins[position]
                if weight - out_weight <= best_gain:
                    break
                if len(into) <= limit and not any(owners[i] in left for i in into):
                    best_gain, best_move = weight - out_weight, (out, into)
                    break
                position -= 1
        return best_gain, best_move
