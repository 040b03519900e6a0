"""How a worker's output reaches Kafka and when an input offset counts as done.

Two implementations behind one interface, chosen by `WorkerSettings.delivery`:

- :class:`AtLeastOnce` (default): one idempotent producer; a record's offset
  counts as done once its result (and DLQ record) is acknowledged, and the
  consumer commits up to the lowest offset not yet done. After a crash the
  records past the last commit run again: their results may repeat, with the
  same `request_id`, the same status and the same outputs (a consumer dedupes
  by `request_id`; see docs/delivery.md).
- :class:`~.transactions.ExactlyOnce`: one transactional producer per input
  partition; results, telemetry, DLQ records and the input offsets go out in
  one transaction, so a `read_committed` reader sees each result once.

The engine calls `on_drop` once before `start`; then, in this order for each
record: `accept` (on read; False means "drop it, it is not ours to answer
now"), then exactly one `publish` with every message the input produces (the
`Publisher` in `.publisher` makes those calls); `commit` from the poll loop;
`assigned` / `revoked` from the rebalance listener; `stop` once at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaConnectionError,
    RebalanceInProgressError,
)

from sluicegate.runtime.kafka import KafkaSettings, idempotent_producer
from sluicegate.runtime.records import Record
from sluicegate.runtime.transactions import Outgoing, tp_of

from .offsets import OffsetTracker

log = logging.getLogger("sluicegate.worker.delivery")


class Delivery(Protocol):
    """The output side of a worker; see the module docstring for the call order."""

    async def start(self) -> None:
        """Connect; raises `KafkaConnectError` naming the settings to fix."""
        ...

    async def stop(self, consumer: AIOKafkaConsumer) -> None: ...

    def accept(self, rec: Record) -> bool:
        """Start tracking `rec`; False if it must be dropped unanswered (not ours now)."""
        ...

    def on_drop(self, callback: Callable[[list[TopicPartition]], None]) -> None:
        """`callback(partitions)` whenever this drops partitions' state outside a rebalance.

        Called once by the engine, before `start`; the engine then forgets the
        partitions' queued requests too.
        """
        ...

    async def publish(self, rec: Record, messages: Sequence[Outgoing]) -> None:
        """Every message `rec` produces. Called at most once per accepted record."""
        ...

    async def publish_many(self, items: Sequence[tuple[Record, Sequence[Outgoing]]]) -> None:
        """`publish(rec, messages)` for each item; one call for a whole batch's replies."""
        ...

    async def attach(self, anchor: Record, message: Outgoing) -> None:
        """A record that belongs to no single input (batch telemetry), sent with `anchor`'s."""
        ...

    async def commit(self, consumer: AIOKafkaConsumer) -> None: ...

    def lag(self, highwater: dict[TopicPartition, int | None]) -> dict[TopicPartition, int]:
        """Records not yet answered per partition: high watermark minus the lowest unanswered."""
        ...

    async def assigned(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> None: ...

    async def revoked(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> None: ...


class Producer(Protocol):
    """The part of `AIOKafkaProducer` at-least-once delivery uses (a seam for tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> asyncio.Future[Any]:
        """Enqueue one message; the returned future resolves on its acknowledgement."""
        ...


class AtLeastOnce:
    """Idempotent producer, acknowledged-then-committed offsets (see module docstring)."""

    def __init__(self, *, kafka: KafkaSettings, producer: Producer | None = None) -> None:
        # 1 MiB batches: aiokafka's 16 KiB default holds ~4 text-embed results (384
        # floats each) and sends one batch per partition at a time, which bounded a
        # worker at ~180 results/s against a fast (simulated) GPU; docs/scaling.md.
        self._producer: Producer = producer or idempotent_producer(
            kafka, linger_ms=2, max_batch_size=1 << 20
        )
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._kafka = kafka

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            await self._producer.stop()
            raise self._kafka.connect_error(exc) from exc

    async def stop(self, consumer: AIOKafkaConsumer) -> None:
        await self._producer.stop()

    def on_drop(self, callback: Callable[[list[TopicPartition]], None]) -> None:
        return None  # never drops a partition by itself

    def accept(self, rec: Record) -> bool:
        self._offsets.track(tp_of(rec), rec.offset)
        return True

    async def publish(self, rec: Record, messages: Sequence[Outgoing]) -> None:
        acks = [await self._send(m) for m in messages if m.required]
        await asyncio.gather(*acks)
        self._offsets.done(tp_of(rec), rec.offset)
        for message in messages:
            if not message.required:
                await self._send(message)  # enqueued; its acknowledgement is not awaited

    async def publish_many(self, items: Sequence[tuple[Record, Sequence[Outgoing]]]) -> None:
        # One gather for every acknowledgement of the batch: no task or gather per record.
        acks = [await self._send(m) for _, messages in items for m in messages if m.required]
        await asyncio.gather(*acks)
        for rec, _ in items:
            self._offsets.done(tp_of(rec), rec.offset)
        for _, messages in items:
            for message in messages:
                if not message.required:
                    await self._send(message)  # enqueued; its acknowledgement is not awaited

    async def attach(self, anchor: Record, message: Outgoing) -> None:
        await self._send(message)

    async def _send(self, m: Outgoing) -> asyncio.Future[Any]:
        return await self._producer.send(m.topic, m.value, key=m.key, headers=m.headers)

    def lag(self, highwater: dict[TopicPartition, int | None]) -> dict[TopicPartition, int]:
        return self._offsets.lag(highwater)

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        offsets = {tp: off for tp, off in self._offsets.committable().items() if tp in assigned}
        if offsets and await _commit(consumer, offsets):
            self._offsets.mark_committed(offsets)

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        return None

    async def revoked(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        revoked = set(partitions)
        offsets = {tp: o for tp, o in self._offsets.committable().items() if tp in revoked}
        if offsets:
            await _commit(consumer, offsets)
        self._offsets.forget(partitions)


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
    """Commit `offsets`; False if the group moved on meanwhile.

    A commit refused because the group rebalanced (a new generation, or one in
    progress) is not a failure of this worker: the partitions' next owner reads
    from the last committed offset, and at-least-once allows those records to
    run again. Anything else still raises.
    """
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError) as exc:
        log.warning("commit of %d partition(s) refused by a rebalance: %r", len(offsets), exc)
        return False
    return True
