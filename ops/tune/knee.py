"""`sluicegate tune`'s pure half: the ladder of batches to time, and the knee.

No I/O: `ladder` builds the batches from a request mix and a policy, `knee`
reads the timings. Both are unit-tested with made-up numbers.

The ladder: batches as the batcher would form them (one size bucket, within
the policy's `bucket_spread` of it), of 1, 2, 4, ... members (or the sizes
given), while the padded cost stays within the hard limit. Members come from
the mix's bucket nearest ``hard_limit / max_batch_size`` (so the top rung can
reach the hard limit); when no item lies there, the most common bucket.

The knee: throughput is real cost per second of a batch's median latency.
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

__all__ = ["Rung", "Timing", "knee", "ladder", "tuned_budget"]

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
    latencies_s: tuple[float, ...]  # one per timed call

    @property
    def latency_s(self) -> float:
        return statistics.median(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Real cost per second (tokens/s or pixels/s)."""
        return self.rung.real_cost / self.latency_s


def _bucket(cost: int) -> int:
    # The batcher's half-octave classes (workers/batcher.py).
    return int(2 * math.log2(max(cost, 1)))


def ladder(
    costs: Sequence[int], policy: BatchPolicy, *, sizes: Sequence[int] | None = None
) -> list[Rung]:
    """Batches of growing size from a mix with these `costs` (see the module docstring)."""
    if not costs:
        raise ValueError("the request mix is empty")
    aim = _bucket(max(1, policy.hard_limit // policy.max_batch_size))
    buckets = [_bucket(c) for c in costs]
    present = set(buckets)
    home = min(present, key=lambda b: (abs(b - aim), -buckets.count(b)))
    if abs(home - aim) > policy.bucket_spread:
        home = max(present, key=buckets.count)  # nothing near the aim: the commonest
    pool = [i for i, b in enumerate(buckets) if abs(b - home) <= policy.bucket_spread]
    if sizes is None:
        sizes = [2**k for k in range(int(math.log2(policy.max_batch_size)) + 1)]
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
