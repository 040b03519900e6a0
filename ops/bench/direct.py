"""(a) The ceiling: the same budget batches sent straight to a backend, no Kafka.

The worker's batcher and in-flight limit, driven by the benchmark's arrivals
in this process; what the Kafka pipeline is measured against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from sluicegate.workers.backends.base import InferenceBackend
from sluicegate.workers.batcher import Batch, BatchPolicy, BudgetBatcher
from sluicegate.workers.errors import BackendError

from .points import BatchStat, Point, summarise
from .workload import Item, Workload

__all__ = ["run_direct"]


async def run_direct(
    backend: InferenceBackend,
    workload: Workload,
    *,
    mode: str,
    policy: BatchPolicy,
    arrivals: Sequence[float],
    offered_rps: float,
    max_in_flight: int,
    max_latency_s: float,
    first_index: int = 0,
    on_done: Callable[[], None] | None = None,
) -> Point:
    """Feed `arrivals` (offsets, s) through the batcher into `backend`; measure each answer."""
    clock = time.monotonic
    batcher: BudgetBatcher[str] = BudgetBatcher(policy=policy, clock=clock)
    items: dict[str, Item] = {}
    sent_at: dict[str, float] = {}
    done: dict[str, tuple[float, str]] = {}
    batches: list[BatchStat] = []
    wake = asyncio.Event()
    slots = asyncio.Semaphore(max_in_flight)
    running: set[asyncio.Task[None]] = set()
    start = clock()

    async def feed() -> None:
        for k, offset in enumerate(arrivals):
            delay = start + offset - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            rid = f"d{first_index + k}"
            item = workload.item(first_index + k)
            items[rid] = item
            sent_at[rid] = start + offset
            batcher.add(rid, cost=item.cost, deadline=start + offset + max_latency_s)
            wake.set()

    async def run(batch: Batch[str]) -> None:
        try:
            inputs = [items[rid].inputs for rid in batch.items]
            try:
                outputs = await backend.infer(workload.model, inputs)
                status = "ok" if len(outputs) == len(batch) else "error"
            except BackendError:
                status = "error"
            now = clock()
            for rid in batch.items:
                done[rid] = (now, status)
                if on_done:
                    on_done()
            batches.append(BatchStat(len(batch), batch.real_cost, batch.padded_cost))
        finally:
            slots.release()
            wake.set()

    feeder = asyncio.create_task(feed())
    while not (feeder.done() and len(batcher) == 0 and not running):
        for rid in batcher.take_expired():
            done[rid] = (clock(), "expired")
        while not slots.locked():
            batch = batcher.next_batch()
            if batch is None:
                break
            await slots.acquire()
            task = asyncio.create_task(run(batch))
            running.add(task)
            task.add_done_callback(running.discard)
        wake.clear()
        due = batcher.next_wakeup()
        timeout = 0.05 if due is None else max(0.0005, min(0.05, due - clock()))
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            pass
    await feeder
    return summarise(
        mode=mode,
        workload=workload.name,
        offered_rps=offered_rps,
        sent_at=sent_at,
        done=done,
        batches=batches,
    )
