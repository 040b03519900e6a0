"""(e) The system's own overhead: the null-model worker against a bare aiokafka relay.

The relay is the least a Kafka consume -> produce service can do with
at-least-once delivery: fetch, produce each record unchanged, wait for the
acks, commit. The null worker does everything sluicegate does (decode,
validate, tokenize and price, batch, build and produce a result and
telemetry, track offsets) except run a model. Both drain the same backlog;
the rate is records out per second between the first and the last output.

Run as a process: ``python -m sluicegate.ops.bench.relay SOURCE SINK GROUP READY``
with ``SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS`` set; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sluicegate.runtime.kafka import KafkaSettings, idempotent_producer, wait_for_partitions
from sluicegate.schemas.codec import headers

__all__ = ["count_outputs", "produce_backlog", "relay"]


async def relay(kafka: KafkaSettings, *, source: str, sink: str, group: str, ready: Path) -> None:
    kw = kafka.client_kwargs()
    producer = idempotent_producer(kafka, linger_ms=2)
    consumer = AIOKafkaConsumer(
        source, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest", **kw
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await producer.start()
    await consumer.start()
    await asyncio.to_thread(ready.touch)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=200)
            acks = [
                await producer.send(sink, rec.value, key=rec.key, headers=list(rec.headers))
                for records in batches.values()
                for rec in records
            ]
            await asyncio.gather(*acks)
            if batches:
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
    finally:
        await consumer.stop()
        await producer.stop()


async def produce_backlog(kafka: KafkaSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **kafka.client_kwargs())
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=f"b{i}".encode(), headers=headers())
        await producer.flush()
    finally:
        await producer.stop()


async def count_outputs(
    kafka: KafkaSettings, topic: str, *, expected: int, timeout_s: float
) -> tuple[int, float]:
    """Read `topic` from the start until `expected` records; (count, records per second)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **kafka.client_kwargs())
    await consumer.start()
    try:
        parts = await wait_for_partitions(kafka, topic, timeout=5.0)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = 0
        first = last = 0.0
        give_up = time.monotonic() + timeout_s
        while seen < expected and time.monotonic() < give_up:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for rec in records:
                    seen += 1
                    # Broker append time of each output: independent of this reader's pace.
                    ts = rec.timestamp / 1000
                    first = ts if seen == 1 else min(first, ts)
                    last = max(last, ts)
        rate = (seen - 1) / (last - first) if seen > 1 and last > first else 0.0
        return seen, rate
    finally:
        await consumer.stop()


def main() -> None:
    source, sink, group, ready = sys.argv[1:5]
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="SLUICEGATE_", env_nested_delimiter="__", extra="ignore"
        )
        kafka: KafkaSettings = KafkaSettings()

    asyncio.run(relay(_Env().kafka, source=source, sink=sink, group=group, ready=Path(ready)))


if __name__ == "__main__":
    main()
