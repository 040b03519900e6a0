"""The budget batcher: which requests run together, and when.

A batch is padded to its longest member, so its true cost is
``len(batch) * max(member cost)``. The batcher closes a batch when one more
request would push that padded cost past the budget, at ``max_batch_size``,
or when its oldest member has waited ``max_queue_delay``. It orders by
priority, then earliest deadline, then arrival; hands back requests whose
deadline has passed instead of running them; and rejects, at admission, a
request that would not fit even alone.

Strategies: ``budget`` (the default, all of the above) and ``count``, which
closes batches on ``max_batch_size`` and ``max_queue_delay`` alone and takes
requests in urgency order regardless of size: what Triton's dynamic batcher
does, kept as the baseline the benchmark measures against.

Bucketing: each batch is built around its head (the most urgent request,
or the most urgent one that has waited out its delay) and filled with the
pending requests whose cost lies in the head's size bucket or a near one
(half-octave buckets, ``bucket_spread`` apart at most), so short requests
are not padded to long ones. ``Batch.padding_waste`` reports what is left.

When to start a batch that is not full is the scheduler's call
(`workers.scheduler`: at once while the backend is idle, else after the
delay); the batcher answers ``next_batch(force=True)`` for the former.

Pure bookkeeping: no I/O, no event loop. Time comes from an injected clock
(seconds, monotonic), so tests drive it with a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Strategy = Literal["budget", "count"]


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    """Budgets for one model on one pool. Triton's knob names where they match."""

    max_batch_size: int = 16
    max_queue_delay_microseconds: int = 5_000
    # Padded cost a batch may reach, in the model's cost unit (tokens or pixels).
    budget: int
    # A request costlier than this is rejected; between budget and this it runs alone.
    hard_limit: int
    # How many half-octave cost buckets a member may lie from its batch's head
    # (2: within a factor of 2).
    bucket_spread: int = 2
    # "count" ignores cost (no budget, no buckets): the dynamic-batcher baseline.
    strategy: Strategy = "budget"
    # Start a partial batch at once while the backend is idle instead of waiting
    # out the delay for mates that may not come (`workers.scheduler`). Only the
    # "budget" strategy does; "count" waits like Triton's dynamic batcher.
    idle_dispatch: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.budget < 1 or self.hard_limit < self.budget:
            raise ValueError("need max_batch_size >= 1, budget >= 1 and hard_limit >= budget")

    @property
    def max_queue_delay(self) -> float:
        return self.max_queue_delay_microseconds / 1e6


@dataclass(frozen=True)
class Rejection:
    reason: str


@dataclass(order=True)
class _Entry(Generic[T]):
    sort_key: tuple[int, float, int]
    item: T = field(compare=False)
    cost: int = field(compare=False)
    arrived: float = field(compare=False)
    deadline: float = field(compare=False)
    # Only entries of one group share a batch (a model version + precision build).
    group: Hashable = field(compare=False, default=None)


@dataclass(frozen=True)
class Batch(Generic[T]):
    items: list[T]
    costs: list[int]
    # When each member was added (clock seconds), in `items` order.
    arrivals: list[float]

    @property
    def padded_cost(self) -> int:
        return len(self.costs) * max(self.costs)

    @property
    def real_cost(self) -> int:
        return sum(self.costs)

    @property
    def padding_waste(self) -> float:
        """Share of the padded cost spent on padding (0 = none)."""
        return 1.0 - self.real_cost / self.padded_cost

    def __len__(self) -> int:
        return len(self.items)


class BudgetBatcher(Generic[T]):
    """Holds pending requests of one model and forms budget-bounded batches."""

    def __init__(self, *, policy: BatchPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._heap: list[_Entry[T]] = []
        self._seq = itertools.count()

    @property
    def policy(self) -> BatchPolicy:
        return self._policy

    def __len__(self) -> int:
        return len(self._heap)

    def pending_cost(self) -> int:
        return sum(e.cost for e in self._heap)

    def add(
        self,
        item: T,
        *,
        cost: int,
        priority: int = 0,
        deadline: float | None = None,
        group: Hashable = None,
    ) -> Rejection | None:
        """Queue `item`; returns a `Rejection` (and keeps nothing) if it can never run.

        Items batch only with items of the same `group` (equal and hashable).
        """
        if cost > self._policy.hard_limit:
            return Rejection(
                f"request costs {cost} units, over this pool's hard limit of "
                f"{self._policy.hard_limit}; send a smaller input"
            )
        due = math.inf if deadline is None else deadline
        seq = next(self._seq)
        entry = _Entry((-priority, due, seq), item, max(cost, 1), self._clock(), due, group)
        heapq.heappush(self._heap, entry)
        return None

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the pending items for which `predicate` holds."""
        removed = [e.item for e in self._heap if predicate(e.item)]
        if removed:
            self._heap = [e for e in self._heap if not predicate(e.item)]
            heapq.heapify(self._heap)
        return removed

    def take_expired(self) -> list[T]:
        """Remove and return every request whose deadline has passed."""
        now = self._clock()
        if not any(e.deadline <= now for e in self._heap):
            return []
        expired = [e.item for e in self._heap if e.deadline <= now]
        self._heap = [e for e in self._heap if e.deadline > now]
        heapq.heapify(self._heap)
        return expired

    def next_batch(self, *, force: bool = False) -> Batch[T] | None:
        """The next batch if one is ready now (or any pending with `force`), else None.

        Ready means: it is full (at `max_batch_size`, or a near-sized pending
        request did not fit the budget), or some pending request has waited
        `max_queue_delay`, in which case that request is in it.
        """
        if not self._heap:
            return None
        now = self._clock()
        overdue = [e for e in self._heap if now - e.arrived >= self._policy.max_queue_delay]
        chosen, full = self._plan(head=min(overdue) if overdue else None)
        if not (force or full or overdue):
            return None
        taken = {id(e) for e in chosen}
        self._heap = [e for e in self._heap if id(e) not in taken]
        heapq.heapify(self._heap)
        return Batch(
            [e.item for e in chosen], [e.cost for e in chosen], [e.arrived for e in chosen]
        )

    def next_wakeup(self) -> float | None:
        """Clock time when a batch becomes due by delay or a deadline passes."""
        if not self._heap:
            return None
        due = min(e.arrived for e in self._heap) + self._policy.max_queue_delay
        return min(due, min(e.deadline for e in self._heap))

    def _plan(self, *, head: _Entry[T] | None) -> tuple[list[_Entry[T]], bool]:
        """Greedy batch around `head` (default: the most urgent); `full` if nothing more fits."""
        policy = self._policy
        head = head or min(self._heap)
        mates = [e for e in self._heap if e is not head and e.group == head.group]
        if policy.strategy == "count":
            rest = heapq.nsmallest(policy.max_batch_size - 1, mates)
            chosen = [head, *rest]
            return chosen, len(chosen) == policy.max_batch_size
        home = _bucket(head.cost)

        # Same bucket first, then neighbours; urgency order within each. A
        # request further away waits for a batch of its own size (when it is
        # overdue, the next call makes it a head).
        others = sorted(
            (e for e in mates if abs(_bucket(e.cost) - home) <= policy.bucket_spread),
            key=lambda e: (abs(_bucket(e.cost) - home), e.sort_key),
        )
        chosen = [head]
        widest = head.cost
        for entry in others:
            if len(chosen) == policy.max_batch_size:
                return chosen, True
            width = max(widest, entry.cost)
            if (len(chosen) + 1) * width > policy.budget:
                return chosen, True
            chosen.append(entry)
            widest = width
        # Also full when not even a one-unit request could join any more.
        full = len(chosen) == policy.max_batch_size or (len(chosen) + 1) * widest > policy.budget
        return chosen, full


def _bucket(cost: int) -> int:
    """Half-octave size class: costs within a factor of sqrt(2) share a bucket."""
    return int(2 * math.log2(max(cost, 1)))
