"""Exactly-once output: one transactional producer per input partition.

Shared by the workers (`workers.output`) and the router (`streams.router`),
which may not import each other: it lives on the runtime floor.

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

A message that can never be written (unknown or illegal topic, not
authorised, record too large: `permanent()`) would abort its partition's
transaction forever. Its input offset gets `max_produce_attempts`
transactions; after that the message is replaced by a DLQ record (code
`reply_to_unwritable`, the original bytes unless they were the problem) and,
when it answers a request (`Outgoing.answers`), an error result on the
results topic, so the partition moves on and the request still ends in
exactly one result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.models import Status

from .destinations import permanent
from .kafka import KafkaSettings, transactional_producer
from .records import Record
from .results import ResultBuilder

log = logging.getLogger("sluicegate.transactions")

# The record itself was too large: its DLQ copy leaves the original bytes out.
_TOO_LARGE = frozenset(
    {"MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError"}
)


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """One record to write (a result, a work or DLQ record, a telemetry event)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # At-least-once: the input offset waits for this record's acknowledgement.
    # False for telemetry, which is best effort there (exactly-once sends it
    # in the transaction like everything else).
    required: bool = True
    # The request id this record answers or carries (a result, a work record):
    # if it can never be written, that request gets an error result instead.
    answers: str | None = None


async def probe(kafka: KafkaSettings) -> None:
    """Bootstrap once; raises `KafkaConnectError` (unreachable, bad credentials, bad TLS)."""
    client = AIOKafkaClient(**kafka.client_kwargs())
    try:
        await client.bootstrap()
    except KafkaConnectionError as exc:
        raise kafka.connect_error(exc) from exc
    finally:
        await client.close()


def tp_of(rec: Record) -> TopicPartition:
    return TopicPartition(rec.topic, rec.partition)


@dataclass(kw_only=True)
class _Strike:
    """Transactions lost to a permanent produce error of one input offset's output."""

    count: int
    topic: str
    error: str


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

    `dlq_topic` / `results_topic` turn on the bounded handling of records
    that can never be written (module docstring); `stage` names the DLQ stage.

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
        dlq_topic: str | None = None,
        results_topic: str | None = None,
        stage: str = "deliver",
        max_produce_attempts: int = 3,
    ) -> None:
        self._kafka = kafka
        self._dlq = dlq_topic
        self._results = results_topic
        self._stage = stage
        self._max_attempts = max_produce_attempts
        self._strikes: dict[tuple[TopicPartition, int], _Strike] = {}
        self._answers = ResultBuilder(worker=f"{group}-transactions")
        self._group = group
        self._on_drop = on_drop
        self._timeout_ms = transaction_timeout_ms
        self._parts: dict[TopicPartition, _Partition] = {}
        # Partitions whose producer must be (re)opened, and when to try next.
        self._reopen: dict[TopicPartition, float] = {}
        self.transactions = 0  # committed, for tests and logs
        self.reinitialised = 0  # producers replaced after an error
        self.rerouted = 0  # unwritable records sent to the DLQ instead

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
        strike = self._strikes.get((tp_of(rec), rec.offset))
        if strike is not None and strike.count >= self._max_attempts and self._dlq is not None:
            messages = self._reroute(rec, messages, strike)
        part.answered[rec.offset] = list(messages)

    async def publish_many(self, items: Sequence[tuple[Record, Sequence[Outgoing]]]) -> None:
        for rec, messages in items:  # bookkeeping only: sent when the transaction commits
            await self.publish(rec, messages)

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
        origins: list[tuple[int | None, Outgoing]] = [
            (o, m) for o in ready for m in part.answered[o]
        ]
        origins += [(None, m) for m in part.loose[:loose]]
        producer = part.producer
        try:
            await producer.begin_transaction()
            acks = []
            for origin, m in origins:
                try:
                    acks.append(await producer.send(m.topic, m.value, key=m.key, headers=m.headers))
                except KafkaError as exc:
                    self._strike(tp, origin, m, exc)
                    raise
            # Collect every acknowledgement (a fenced producer fails them all) and
            # raise the first failure.
            results = await asyncio.gather(*acks, return_exceptions=True)
            failures = [
                (origin, m, r)
                for (origin, m), r in zip(origins, results, strict=False)
                if isinstance(r, BaseException)
            ]
            if failures:
                for origin, m, r in failures:
                    if isinstance(r, Exception):
                        self._strike(tp, origin, m, r)
                raise failures[0][2]
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
            self._strikes.pop((tp, o), None)
        del part.loose[:loose]
        part.committed = max(part.committed, upto)
        self.transactions += 1

    # -- records that can never be written ------------------------------------------

    def _strike(
        self,
        tp: TopicPartition,
        origin: int | None,
        message: Outgoing,
        exc: Exception,
    ) -> None:
        """Count a permanent failure against the input offset whose output it was."""
        if not permanent(exc) or self._dlq is None:
            return
        if origin is None:
            return  # batch telemetry: dropped with the partition's state when it rewinds
        strike = self._strikes.setdefault(
            (tp, origin), _Strike(count=0, topic=message.topic, error=type(exc).__name__)
        )
        strike.count += 1
        log.warning(
            "output of %s[%d]@%d cannot be written to %s (%s), attempt %d of %d",
            tp.topic,
            tp.partition,
            origin,
            message.topic,
            type(exc).__name__,
            strike.count,
            self._max_attempts,
        )

    def _reroute(
        self, rec: Record, messages: Sequence[Outgoing], strike: _Strike
    ) -> list[Outgoing]:
        """`messages`, those for the unwritable topic replaced by a DLQ record (and an
        error result for the request they answer)."""
        assert self._dlq is not None
        too_large = strike.error in _TOO_LARGE
        out: list[Outgoing] = []
        for m in messages:
            if m.topic != strike.topic:
                out.append(m)
                continue
            self.rerouted += 1
            reason = (
                f"{ErrorCode.REPLY_TO_UNWRITABLE.message} (topic {m.topic!r}: {strike.error} "
                f"after {strike.count} attempts)"
            )
            letter = DeadLetter(
                code=ErrorCode.REPLY_TO_UNWRITABLE,
                message=reason,
                error_class=strike.error,
                stage=self._stage,
                source_topic=rec.topic,
                source_partition=rec.partition,
                source_offset=rec.offset,
                request_id=m.answers,
            )
            passed = [(k, v) for k, v in m.headers if not k.startswith("sg-dlq-")]
            value = b"" if too_large else m.value
            out.append(
                Outgoing(
                    topic=self._dlq, value=value, key=m.key, headers=passed + letter.to_headers()
                )
            )
            fits = m.topic != self._results or too_large
            if m.answers is not None and self._results is not None and fits:
                result = self._answers.failure(
                    m.answers,
                    status=Status.ERROR,
                    code=ErrorCode.REPLY_TO_UNWRITABLE,
                    message=reason,
                )
                out.append(
                    Outgoing(
                        topic=self._results,
                        value=encode(result),
                        key=m.answers.encode(),
                        headers=headers(),
                        answers=m.answers,
                    )
                )
        return out

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
