"""`sluicegate tune`'s pure half: the ladder of batches to time, and the knee.

No I/O: `ladder` builds the batches from a request mix and a policy, `knee`
reads the timings. Both are unit-tested with made-up numbers.

The ladder: batches as the batcher would form them (one size bucket, within
the policy's `bucket_spread` of it), of 1, 2, 4, ... ``max(max_batch_size, 4)``
members (or the sizes given), while the padded cost stays within the hard
limit. Members come from the mix's most common size bucket: the typical
request, whose batches the budget mostly shapes (per-call overhead weighs
more on short texts than on long ones, so the bucket matters).

The knee: every rung runs the same items (the largest rung's members, cut
into batches of the rung's size: `cover`), and its throughput is their real
cost per second of calls.
The smallest padded cost reaching `fraction` (default 0.9) of the best
throughput is the budget: past it a bigger batch buys almost nothing but
latency. When that is a single item (throughput flat or falling with batch
size: the CPU OCR case), the tuned policy runs one item per batch. The delay
is half the knee batch's latency (at least 0.5 ms, at most 100 ms; 0 for
single items): the scheduler waits it only while the backend is busy, so a
request's wait stays below half a batch's service time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sluicegate.workers.batcher import BatchPolicy
from sluicegate.workers.tuned import TunedBudget

__all__ = ["Rung", "Timing", "cover", "knee", "ladder", "tuned_budget"]

MIN_DELAY_US = 500
MAX_DELAY_US = 100_000


@dataclass(frozen=True, kw_only=True)
class Rung:
    """One batch to time: indices into the mix."""

    members: tuple[int, ...]
    costs: tuple[int, ...]

    @property
    def padded_cost(self) -> int:
        return len(self.costs) * max(self.costs)

    @property
    def real_cost(self) -> int:
        return sum(self.costs)


@dataclass(frozen=True, kw_only=True)
class Timing:
    rung: Rung
    latencies_s: tuple[float, ...]  # one per timed batch call
    real_cost: int  # summed over every timed call
    seconds: float  # summed over every timed call

    @property
    def latency_s(self) -> float:
        """The median batch latency."""
        return statistics.median(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Real cost per second (tokens/s or pixels/s) over every timed call."""
        return self.real_cost / self.seconds


def _bucket(cost: int) -> int:
    # The batcher's half-octave classes (workers/batcher.py).
    return int(2 * math.log2(max(cost, 1)))


def ladder(
    costs: Sequence[int], policy: BatchPolicy, *, sizes: Sequence[int] | None = None
) -> list[Rung]:
    """Batches of growing size from a mix with these `costs` (see the module docstring)."""
    if not costs:
        raise ValueError("the request mix is empty")
    # At least 4: a policy of one item per batch is measured again, not assumed.
    top = max(policy.max_batch_size, 4)
    buckets = [_bucket(c) for c in costs]
    # The typical request's bucket (ties: the smaller): what most batches hold.
    home = min(set(buckets), key=lambda b: (-buckets.count(b), b))
    pool = [i for i, b in enumerate(buckets) if abs(b - home) <= policy.bucket_spread]
    if sizes is None:
        sizes = [2**k for k in range(int(math.log2(top)) + 1)]
    rungs: list[Rung] = []
    for n in sorted(set(sizes)):
        if n < 1:
            raise ValueError(f"batch sizes must be >= 1, got {n}")
        members = tuple(pool[k % len(pool)] for k in range(n))  # cycle a small bucket
        rung = Rung(members=members, costs=tuple(costs[i] for i in members))
        if rung.padded_cost > policy.hard_limit and rungs:
            break
        rungs.append(rung)
    return rungs


def cover(rung: Rung, items: Sequence[int]) -> list[tuple[int, ...]]:
    """`items` (the largest rung's members) cut into batches of `rung`'s size.

    Every rung runs the same items, so a rung's throughput is not its first
    member's luck (one OCR page may hold three times the text of another).
    The last batch is filled up from the start when it falls short.
    """
    n = len(rung.members)
    return [
        tuple(items[(start + k) % len(items)] for k in range(n))
        for start in range(0, len(items), n)
    ]


def knee(timings: Sequence[Timing], *, fraction: float = 0.9) -> Timing:
    """The smallest padded cost reaching `fraction` of the best throughput."""
    if not timings:
        raise ValueError("no timings to find a knee in")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    best = max(t.throughput for t in timings)
    ordered = sorted(timings, key=lambda t: t.rung.padded_cost)
    return next(t for t in ordered if t.throughput >= fraction * best)


def tuned_budget(
    timings: Sequence[Timing], policy: BatchPolicy, *, fraction: float = 0.9
) -> TunedBudget:
    """What the workers should run with: budget, batch size and delay at the knee."""
    found = knee(timings, fraction=fraction)
    single = len(found.rung.costs) == 1
    delay_us = round(found.latency_s * 1e6 / 2)
    measured = {
        "fraction": fraction,
        "knee_padded_cost": found.rung.padded_cost,
        "knee_batch_size": len(found.rung.costs),
        "knee_latency_ms": round(found.latency_s * 1000, 2),
        "best_throughput": round(max(t.throughput for t in timings), 1),
        "rungs": [
            {
                "batch_size": len(t.rung.costs),
                "padded_cost": t.rung.padded_cost,
                "real_cost": t.rung.real_cost,
                "latency_ms": round(t.latency_s * 1000, 2),
                "throughput": round(t.throughput, 1),
            }
            for t in sorted(timings, key=lambda t: t.rung.padded_cost)
        ],
    }
    return TunedBudget(
        budget=found.rung.padded_cost,
        max_batch_size=1 if single else policy.max_batch_size,
        max_queue_delay_microseconds=0
        if single
        else min(MAX_DELAY_US, max(MIN_DELAY_US, delay_us)),
        measured=measured,
    )
