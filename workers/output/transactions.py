"""Exactly-once delivery: one transactional producer per input partition.

Each transaction carries, for one input partition, the results, DLQ records
and telemetry of a *contiguous* run of input offsets and the consumer offset
just past that run (`send_offsets_to_transaction`). Batches finish out of
order, so answers past a gap wait in memory until the gap fills: a record's
output becomes visible exactly when its offset is committed, never before,
never after. A `read_committed` reader therefore sees each result once.

Zombie fencing. aiokafka sends no consumer-group metadata with the offsets
(no KIP-447, aiokafka #844), so a worker that lost a partition could still
commit. Instead every input partition has its own transactional id,
`{group}-{topic}-{partition}` (faust's pattern, the KIP-98 way): whoever is
assigned the partition calls `init_transactions` with that id, which aborts
or completes the previous owner's open transaction and bumps the epoch; the
old owner's next commit fails with `ProducerFenced`. Only after that does the
new owner read the committed offset and seek to it, so it starts exactly
where the last committed transaction ended.

Indefinite errors (a timeout, a broker gone mid-commit) leave the outcome of
a transaction unknown. The producer is then closed and re-initialised (the
Jepsen advice); re-initialising settles the unknown transaction, and the
partition is rewound to the committed offset and its in-memory state
dropped, so whatever did not commit runs again. Records fetched while a
partition is being (re)opened are dropped; the seek re-reads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from sluicegate.runtime.kafka import KafkaSettings, transactional_producer
from sluicegate.runtime.records import Record

from .delivery import Outgoing, probe, tp_of

log = logging.getLogger("sluicegate.worker.transactions")

# Seconds between attempts to reopen a partition whose producer failed.
_REOPEN_BACKOFF_S = 1.0


def transactional_id(group: str, tp: TopicPartition) -> str:
    """The transactional id that fences every other writer for input partition `tp`."""
    return f"{group}-{tp.topic}-{tp.partition}"


@dataclass(kw_only=True)
class _Partition:
    producer: AIOKafkaProducer
    # Next offset to read after everything committed so far.
    committed: int
    # Next offset to read after everything accepted so far.
    high: int
    pending: set[int] = field(default_factory=set)  # accepted, not answered
    answered: dict[int, list[Outgoing]] = field(default_factory=dict)  # answered, not committed
    loose: list[Outgoing] = field(default_factory=list)  # attached after their anchor committed
    # One transaction at a time per producer: the poll loop and the rebalance
    # listener may both want to commit.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def upto(self) -> int:
        return min(self.pending) if self.pending else self.high


class ExactlyOnce:
    """Transactional output per input partition (see module docstring).

    The `on_drop` callback (the constructor's, or the engine's through
    `on_drop()`) is called whenever this object drops a partition's state
    outside a rebalance (fenced, or rewound after an indefinite error), so the
    engine can forget the partition's queued requests too.
    """

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        group: str,
        on_drop: Callable[[list[TopicPartition]], None] = lambda _: None,
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        self._kafka = kafka
        self._group = group
        self._on_drop = on_drop
        self._timeout_ms = transaction_timeout_ms
        self._parts: dict[TopicPartition, _Partition] = {}
        # Partitions whose producer must be (re)opened, and when to try next.
        self._reopen: dict[TopicPartition, float] = {}
        self.transactions = 0  # committed, for tests and logs
        self.reinitialised = 0  # producers replaced after an error

    async def start(self) -> None:
        await probe(self._kafka)

    async def stop(self, consumer: AIOKafkaConsumer) -> None:
        await self.revoked(consumer, list(self._parts))
        self._reopen.clear()

    def on_drop(self, callback: Callable[[list[TopicPartition]], None]) -> None:
        self._on_drop = callback

    # -- records ------------------------------------------------------------

    def accept(self, rec: Record) -> bool:
        part = self._parts.get(tp_of(rec))
        if part is None or rec.offset < part.high:
            # Not open (yet), or already read before a rewind's seek took effect.
            return False
        part.pending.add(rec.offset)
        part.high = rec.offset + 1
        return True

    def lag(self, highwater: dict[TopicPartition, int | None]) -> dict[TopicPartition, int]:
        return {
            tp: max(0, high - self._parts[tp].upto())
            for tp, high in highwater.items()
            if high is not None and tp in self._parts
        }

    async def publish(self, rec: Record, messages: Sequence[Outgoing]) -> None:
        part = self._parts.get(tp_of(rec))
        if part is None or rec.offset not in part.pending:
            return  # the partition was dropped or rewound since: its new reader answers
        part.pending.discard(rec.offset)
        part.answered[rec.offset] = list(messages)

    async def attach(self, anchor: Record, message: Outgoing) -> None:
        part = self._parts.get(tp_of(anchor))
        if part is None:
            return
        if anchor.offset in part.answered:
            part.answered[anchor.offset].append(message)
        elif anchor.offset >= part.committed:
            part.loose.append(message)

    # -- transactions ---------------------------------------------------------

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit one transaction per partition with something new; reopen failed ones."""
        now = time.monotonic()
        due = [tp for tp, at in self._reopen.items() if at <= now]
        assigned = consumer.assignment()
        for tp in due:
            del self._reopen[tp]
            if tp in assigned:
                await self._open(consumer, tp)
        await asyncio.gather(*(self._flush(consumer, tp) for tp in list(self._parts)))

    async def _flush(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        part = self._parts.get(tp)
        if part is None:
            return
        async with part.lock:
            if self._parts.get(tp) is part:
                await self._transact(consumer, tp, part)

    async def _transact(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, part: _Partition
    ) -> None:
        upto = part.upto()
        if upto <= part.committed and not part.loose:
            return
        ready = sorted(o for o in part.answered if o < upto)
        loose = len(part.loose)  # more may be attached while this transaction runs
        messages = [m for o in ready for m in part.answered[o]] + part.loose[:loose]
        producer = part.producer
        try:
            await producer.begin_transaction()
            acks = [
                await producer.send(m.topic, m.value, key=m.key, headers=m.headers)
                for m in messages
            ]
            # Collect every acknowledgement (a fenced producer fails them all) and
            # raise the first failure.
            failures = [
                r for r in await asyncio.gather(*acks, return_exceptions=True) if r is not None
            ]
            failures = [f for f in failures if isinstance(f, BaseException)]
            if failures:
                raise failures[0]
            if upto > part.committed:
                offsets = {tp: OffsetAndMetadata(upto, "")}
                await producer.send_offsets_to_transaction(offsets, self._group)
            await producer.commit_transaction()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(consumer, tp, exc)
            return
        if self._parts.get(tp) is not part:
            return  # dropped by a rebalance while committing
        for o in ready:
            del part.answered[o]
        del part.loose[:loose]
        part.committed = max(part.committed, upto)
        self.transactions += 1

    async def _failed(self, consumer: AIOKafkaConsumer, tp: TopicPartition, exc: Exception) -> None:
        """A transaction failed: drop the partition's state and reopen it (fences, rewinds)."""
        fenced = "Fenced" in type(exc).__name__ or "ProducerEpoch" in type(exc).__name__
        log.warning(
            "transaction on %s[%d] failed (%s: %s); %s",
            tp.topic,
            tp.partition,
            type(exc).__name__,
            exc,
            "another worker owns it now"
            if fenced
            else "re-initialising its producer and rewinding to the committed offset",
        )
        await self._drop(tp)
        self.reinitialised += 1
        self._on_drop([tp])
        # Reopen only while the group still gives us the partition: a fenced
        # zombie that lost it never reopens (that would fence the rightful owner).
        if tp in consumer.assignment():
            self._reopen[tp] = time.monotonic() + (_REOPEN_BACKOFF_S if fenced else 0.0)

    # -- ownership ----------------------------------------------------------------

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        await asyncio.gather(*(self._open(consumer, tp) for tp in partitions))

    async def revoked(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Commit what is contiguous, then let the partitions go (the new owner fences us)."""
        for tp in partitions:
            self._reopen.pop(tp, None)
            part = self._parts.get(tp)
            if part is None:
                continue
            async with part.lock:
                if self._parts.get(tp) is part:
                    await self._transact(consumer, tp, part)
                    await self._drop(tp)

    async def _open(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        """Fence earlier writers of `tp`, then seek to its committed offset."""
        await self._drop(tp)
        producer = transactional_producer(
            self._kafka,
            transactional_id=transactional_id(self._group, tp),
            transaction_timeout_ms=self._timeout_ms,
            linger_ms=2,
        )
        try:
            await producer.start()  # init_transactions: settles the previous owner's
            committed = await consumer.committed(tp)
            if committed is None:
                committed = (await consumer.beginning_offsets([tp]))[tp]
            if tp not in consumer.assignment():
                await producer.stop()
                return
            consumer.seek(tp, committed)
        except asyncio.CancelledError:
            await producer.stop()
            raise
        except (KafkaError, OSError) as exc:
            log.warning(
                "cannot open %s[%d] for transactions (%s: %s); retrying in %.0f s",
                tp.topic,
                tp.partition,
                type(exc).__name__,
                exc,
                _REOPEN_BACKOFF_S,
            )
            await producer.stop()
            self._reopen[tp] = time.monotonic() + _REOPEN_BACKOFF_S
            return
        self._parts[tp] = _Partition(producer=producer, committed=committed, high=committed)
        log.info("opened %s[%d] at offset %d", tp.topic, tp.partition, committed)

    async def _drop(self, tp: TopicPartition) -> None:
        part = self._parts.pop(tp, None)
        if part is not None:
            try:
                await part.producer.stop()
            except KafkaError as exc:
                log.info("closing the producer of %s[%d]: %s", tp.topic, tp.partition, exc)
