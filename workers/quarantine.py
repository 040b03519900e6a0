"""Crash-loop quarantine: a record that was running each time a worker died is not run again.

Before a batch goes to the backend, the worker writes one record per member
to the compacted attempts topic (`sg.attempts`), keyed
`<group>|<topic>|<partition>|<offset>`, valued `<attempts>:<crc32 of the
input value>`, and waits for the acknowledgements. Once a member's result is
acknowledged, its key gets a tombstone. A worker that dies mid-batch leaves
its members' counts behind; the next incarnation (on this host or any other:
the counts live in Kafka, not on a disk a pod may lose) reads the topic from
the beginning at start, and a record whose count reached `quarantine_after`
is answered `error`/`poison` with a DLQ record (`QuarantinedError` from
admission) instead of being run. The crc guards against a recreated topic
whose offsets repeat.

`Attempts` is the bookkeeping (no I/O); `Quarantine` is the follower and the
producer around it. Without the topic (not created), quarantine is off and
says so in the log; `quarantine_after=0` turns it off on purpose.

Test hook: with `SLUICEGATE_CHAOS_STALL_REQUEST=<request_id>` in a worker's
environment (only tests and the chaos harness set it), a batch holding that
request stalls after its attempts are recorded, so a test can kill the
worker mid-batch deterministically.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer

from sluicegate.runtime.follow import Follower
from sluicegate.runtime.kafka import KafkaSettings, MissingTopicError, idempotent_producer
from sluicegate.runtime.records import Record
from sluicegate.schemas.codec import recover_request_id
from sluicegate.schemas.errors import ErrorCode, QuarantinedError

from .config import WorkerSettings

log = logging.getLogger("sluicegate.worker.quarantine")

STALL_ENV = "SLUICEGATE_CHAOS_STALL_REQUEST"


def crc(value: bytes | None) -> int:
    return zlib.crc32(value or b"")


def by_crc32(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """The attempts producer's partitioner: crc32 of the key (C) instead of aiokafka's
    murmur2 (pure Python: ~10 % of a null-model worker's samples in `make profile`,
    two thirds of it for these records). Only workers write and read this topic, and
    a key's begin record and tombstone land in the same partition, which is all
    compaction needs; Java clients' placement is not."""
    del available  # a key must keep its partition while a broker is down
    return all_partitions[zlib.crc32(key or b"") % len(all_partitions)]


class Attempts:
    """Attempt counts per input record, from the attempts topic. Pure bookkeeping."""

    def __init__(self, *, group: str) -> None:
        self._group = group
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (attempts, crc)

    def key(self, rec: Record) -> str:
        return f"{self._group}|{rec.topic}|{rec.partition}|{rec.offset}"

    def apply(self, key: str, value: bytes | None) -> None:
        """One record of the attempts topic (None: a tombstone); other groups' are ignored."""
        if not key.startswith(self._group + "|"):
            return
        if value is None:
            self._counts.pop(key, None)
            return
        try:
            n, check = value.decode().split(":", 1)
            self._counts[key] = (int(n), int(check))
        except ValueError:
            log.warning("skipped a malformed attempts record %r", key)

    def count(self, rec: Record) -> int:
        """How many times `rec` was being run when a worker stopped without answering it."""
        hit = self._counts.get(self.key(rec))
        return hit[0] if hit is not None and hit[1] == crc(rec.value) else 0

    def begin(self, rec: Record) -> tuple[str, bytes]:
        """The record to write before running `rec`: its count, one higher."""
        n = self.count(rec) + 1
        key = self.key(rec)
        self._counts[key] = (n, crc(rec.value))
        return key, f"{n}:{crc(rec.value)}".encode()

    def end(self, rec: Record) -> str | None:
        """The key to tombstone once `rec` is answered (None if it was never begun)."""
        return self.key(rec) if self._counts.pop(self.key(rec), None) is not None else None


class Quarantine:
    """Follows and writes the attempts topic for one worker; `start()` / `stop()`."""

    def __init__(
        self, *, kafka: KafkaSettings, topic: str, group: str, quarantine_after: int
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._after = quarantine_after
        self._attempts = Attempts(group=group)
        self._follower = Follower(
            kafka=kafka, topic=topic, handle=self._apply, start="beginning", name="attempts"
        )
        self._producer: AIOKafkaProducer | None = None
        self._stall = os.environ.get(STALL_ENV)

    @classmethod
    def of(cls, settings: WorkerSettings) -> Quarantine:
        """The quarantine of a worker with `settings` (its group, its attempts topic)."""
        return cls(
            kafka=settings.kafka,
            topic=settings.topics.attempts,
            group=settings.group(),
            quarantine_after=settings.quarantine_after,
        )

    @property
    def enabled(self) -> bool:
        return self._producer is not None

    async def start(self, *, timeout: float = 30.0, find_s: float = 5.0) -> None:
        """Catch up with the attempts topic; without it, log that quarantine is off."""
        if self._after <= 0:
            return
        try:
            await self._follower.start(catch_up=True, timeout=timeout, find_s=find_s)
        except MissingTopicError:
            log.warning(
                "quarantine off: topic %r does not exist; create it (compacted) with "
                "`sluicegate topics apply topics.yaml` or `sluicegate up`",
                self._topic,
            )
            return
        producer = idempotent_producer(self._kafka, linger_ms=1, partitioner=by_crc32)
        try:
            await producer.start()
        except BaseException:
            await self._follower.stop()
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            await self._follower.stop()

    def check(self, rec: Record) -> QuarantinedError | None:
        """The refusal for `rec` if it was running when `quarantine_after` workers died."""
        if not self.enabled or (n := self._attempts.count(rec)) < self._after:
            return None
        log.error(
            "quarantined %s[%d]@%d: running when %d worker(s) died",
            rec.topic,
            rec.partition,
            rec.offset,
            n,
        )
        return QuarantinedError(
            f"the record was being run each of the {n} times a worker died; "
            + ErrorCode.POISON.message
        )

    async def begin(self, records: Sequence[Record]) -> None:
        """Record an attempt for each of `records` (acknowledged) before they run."""
        if self._producer is None:
            return
        sends = [
            await self._producer.send(self._topic, value, key=key.encode())
            for key, value in map(self._attempts.begin, records)
        ]
        await asyncio.gather(*sends)
        if self._stall is not None and any(
            recover_request_id(rec.value, rec.key) == self._stall for rec in records
        ):
            log.warning("%s: stalling a batch for a test", STALL_ENV)
            await asyncio.sleep(3600)

    async def end(self, records: Iterable[Record]) -> None:
        """`records` were answered: tombstone their attempts (acknowledgement not awaited)."""
        if self._producer is None:
            return
        for rec in records:
            if (key := self._attempts.end(rec)) is not None:
                await self._producer.send(self._topic, None, key=key.encode())

    def _apply(self, rec: Record) -> None:
        if rec.key is not None:
            self._attempts.apply(rec.key.decode(errors="replace"), rec.value)
