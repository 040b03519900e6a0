"""Idle dispatch in a simulated worker: the scheduler, a fake clock, a modelled backend.

A discrete-event loop stands in for the engine (admission in chunks, batches
at a backend whose latency is a + b x padded cost, `schedule()` after every
event and at every due time), so what idle dispatch does to latency at low
load and to packing and drain time under a backlog is checked exactly,
without a broker, a Triton or a loaded machine's noise. Times are simulated.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from dataclasses import dataclass, field

from sluicegate.workers.batcher import Batch, BatchPolicy
from sluicegate.workers.scheduler import Job, Scheduler
from tests.unit.test_scheduler import P0, WALL_MS, FakeClock, job

# The CPU text pool's shape: ~5 ms a call plus 0.05 ms a padded token, 2 slots.
CALL_S, PER_UNIT_S = 0.005, 0.00005


@dataclass
class Run:
    waits: list[float] = field(default_factory=list)  # batch start - queued, seconds
    sizes: list[int] = field(default_factory=list)
    end: float = 0.0  # when the last batch finished


def simulate(arrivals: list[float], costs: list[int], *, idle_dispatch: bool, chunk: int) -> Run:
    """Jobs arrive at `arrivals` (s), are admitted `chunk` at a time (1 ms each chunk)."""
    clock = FakeClock()
    start = clock.now
    policy = BatchPolicy(
        max_batch_size=64,
        max_queue_delay_microseconds=10_000,
        budget=2_048,
        hard_limit=4_096,
        bucket_spread=0,
        idle_dispatch=idle_dispatch,
    )
    sched = Scheduler(
        policy=policy, clock=clock, max_in_flight_batches=2, max_pending_requests=10_000
    )
    sched.assigned([P0])
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(at: float, kind: str, payload: object) -> None:
        nonlocal seq
        heapq.heappush(events, (at, seq, kind, payload))
        seq += 1

    # Records fetched together are admitted together, like the engine's poll batches.
    k = 0
    while k < len(arrivals):
        group = [i for i in range(k, min(k + chunk, len(arrivals))) if arrivals[i] <= arrivals[k]]
        group = group or [k]
        push(start + arrivals[k], "fetch", group)
        k = group[-1] + 1
    run = Run()
    tick: list[float] = []  # the earliest wake-up already scheduled

    def dispatch() -> None:
        for batch in sched.schedule().batches:
            run.sizes.append(len(batch))
            run.waits.extend(clock.now - a for a in batch.arrivals)
            push(clock.now + CALL_S + PER_UNIT_S * batch.padded_cost, "done", batch)
        if sched.pending and not sched.saturated:
            # The engine's loop sleeps until the batcher's next due time.
            due = clock.now + sched.next_wakeup_in()
            if not tick or due < tick[0]:
                tick[:] = [due]
                push(due, "tick", None)

    while events:
        at, _, kind, payload = heapq.heappop(events)
        clock.now = at
        if kind == "tick" and tick and tick[0] == at:
            tick.clear()
        if kind == "fetch":
            assert isinstance(payload, list)
            ticket = sched.begin_admission(len(payload))
            push(at + 0.001, "admitted", (ticket, payload))
            continue
        if kind == "admitted":
            ticket, members = payload  # type: ignore[misc]
            sched.end_admission(ticket)
            for i in members:
                j = job(f"r{i}", cost=costs[i])
                assert sched.queue(Job(record=j.record, admitted=j.admitted, arrived=at),
                                   now_ms=WALL_MS) is None  # fmt: skip
        elif kind == "done":
            assert isinstance(payload, Batch)
            sched.finished(payload)
            run.end = max(run.end, at - start)
        dispatch()
    assert sum(run.sizes) == len(arrivals)
    return run


def text_costs(n: int, seed: int = 11) -> list[int]:
    rng = random.Random(seed)
    return [min(250, max(3, round(math.exp(rng.gauss(math.log(11), 1.17))))) for _ in range(n)]


def poisson(rate: float, n: int, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def test_at_low_load_a_request_no_longer_waits_the_delay() -> None:
    arrivals, costs = poisson(100, 500), text_costs(500)
    eager = simulate(arrivals, costs, idle_dispatch=True, chunk=200)
    waiting = simulate(arrivals, costs, idle_dispatch=False, chunk=200)
    # Arrivals that find the backend idle start at once; the others wait for
    # the running batch (~6 ms), not the 10 ms delay.
    assert sum(w == 0 for w in eager.waits) >= 0.4 * len(eager.waits)
    assert statistics.median(eager.waits) <= 0.002
    assert statistics.median(waiting.waits) >= 0.009  # most of the 10 ms delay
    assert statistics.median(eager.sizes) == 1


def test_under_a_backlog_batches_pack_as_before_and_drain_no_later() -> None:
    n = 1_000
    costs = text_costs(n)
    eager = simulate([0.0] * n, costs, idle_dispatch=True, chunk=200)
    waiting = simulate([0.0] * n, costs, idle_dispatch=False, chunk=200)
    # No throughput loss: the backlog drains as fast, in as few batches (±2 %).
    assert eager.end <= waiting.end * 1.02
    assert len(eager.sizes) <= len(waiting.sizes) * 1.02
    assert statistics.mean(eager.sizes) >= 0.98 * statistics.mean(waiting.sizes)
