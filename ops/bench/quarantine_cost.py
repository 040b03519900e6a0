"""What crash-loop quarantine costs a worker: on vs off, same broker, same run.

`bench_quarantine()` seeds `count` text-embed requests on a work topic of its
own, then times an in-process worker with the null backend (no model: the
engine's own overhead, where the attempts records weigh most) from start to
its last result read (from joining its group), with `quarantine_after=3` and with quarantine off,
`rounds` times each, alternating which goes first. The ratio on/off is the figure; absolute times
depend on the machine.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from sluicegate.runtime.kafka import KafkaSettings, idempotent_producer
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.models import InferenceRequest
from sluicegate.workers.backends.inprocess import NullBackend
from sluicegate.workers.config import BatchSettings, WorkerSettings
from sluicegate.workers.engine import Worker

from .kafka_run import bench_topics


async def _one(kafka: KafkaSettings, count: int, quarantine_after: int) -> float:
    async with bench_topics(kafka, "quarantine") as run:
        topics = run.topics
        work = topics.work("text-embed", "cpu")
        producer = idempotent_producer(kafka, linger_ms=5)
        await producer.start()
        try:
            sends = [
                await producer.send(
                    work,
                    encode(InferenceRequest(request_id=f"q{i}", model="text-embed", texts=["x"])),
                    key=f"q{i}".encode(),
                    headers=headers(),
                )
                for i in range(count)
            ]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        results = AIOKafkaConsumer(
            topics.results, auto_offset_reset="earliest", **kafka.client_kwargs()
        )
        await results.start()
        settings = WorkerSettings(
            kafka=kafka,
            topics=topics,
            backend="null",
            group_id=f"{run.group}.{uuid.uuid4().hex[:4]}",
            quarantine_after=quarantine_after,
            batch=BatchSettings(max_queue_delay_microseconds=2000),
        )
        worker = Worker(settings=settings, backend=NullBackend())
        try:
            await worker.start()  # joined: the seeded records start flowing now
            t0 = time.perf_counter()
            seen = 0
            while seen < count:
                batch = await results.getmany(timeout_ms=500)
                seen += sum(len(v) for v in batch.values())
            return time.perf_counter() - t0
        finally:
            await worker.stop()
            await results.stop()


async def bench_quarantine(kafka: KafkaSettings, *, count: int, rounds: int = 2) -> dict[str, Any]:
    on: list[float] = []
    off: list[float] = []
    for i in range(rounds):  # alternate which goes first: no order bias
        for after in (0, 3) if i % 2 == 0 else (3, 0):
            (on if after else off).append(await _one(kafka, count, after))
    return {
        "requests": count,
        "rounds": rounds,
        "seconds_off": [round(s, 3) for s in off],
        "seconds_on": [round(s, 3) for s in on],
        "ratio_on_off": round(statistics.median(on) / statistics.median(off), 3),
    }
