"""Exactly-once delivery against the real broker and Triton.

A worker in `exactly_once` mode answers every record once, visible to a
`read_committed` reader, with the input offsets committed in the same
transactions; and a zombie that lost its partition is fenced by the per-
partition transactional id (aiokafka sends no group metadata, aiokafka #844).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.runtime.transactions import ExactlyOnce, Outgoing, transactional_id
from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from tests.fakes import FakeRecord

from .conftest import WorkerFactory

pytestmark = pytest.mark.integration


async def read_committed(
    kafka: KafkaSettings, topic: str, *, expect: int, timeout: float = 90
) -> list[tuple[bytes | None, list[tuple[str, bytes]]]]:
    """Every committed record of `topic`, once at least `expect` arrived and it went quiet."""
    consumer = AIOKafkaConsumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        **kafka.client_kwargs(),
    )
    await consumer.start()
    out: list[tuple[bytes | None, list[tuple[str, bytes]]]] = []
    try:
        async with asyncio.timeout(timeout):
            quiet = 0
            while len(out) < expect or quiet < 4:
                batch = await consumer.getmany(timeout_ms=500)
                got = [(r.value, list(r.headers)) for rs in batch.values() for r in rs]
                out += got
                quiet = 0 if got else quiet + 1
    finally:
        await consumer.stop()
    return out


async def produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(acks="all", **kafka.client_kwargs())
    await producer.start()
    try:
        acks = [await producer.send(topic, v, key=k, headers=headers()) for k, v in records]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def test_exactly_once_worker_answers_each_record_once_with_offsets_in_the_transaction(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    work = topics.work("text-embed", "cpu")
    requests = [
        InferenceRequest(request_id=f"eos-{i}", model="text-embed", texts=[f"sentence {i}"])
        for i in range(40)
    ]
    records = [(r.request_id.encode(), encode(r)) for r in requests]
    records.append((b"eos-garbage", b"\xc1 not msgpack"))
    async with run_worker("text-embed", options={"delivery": "exactly_once"}) as worker:
        await produce(kafka, work, records)
        await read_committed(kafka, topics.results, expect=41)  # all answered...
        delivery = worker.delivery
    # ...and after the worker stopped (its last transactions), still once each.
    results = [
        decode_result(v, h) for v, h in await read_committed(kafka, topics.results, expect=41)
    ]
    counts = Counter(r.request_id for r in results)
    assert set(counts) == {r.request_id for r in requests} | {"eos-garbage"}
    assert max(counts.values()) == 1, counts.most_common(3)
    assert all(r.status is Status.OK for r in results if r.request_id != "eos-garbage")
    dlq = await read_committed(kafka, topics.dlq, expect=1)
    assert [v for v, _ in dlq] == [b"\xc1 not msgpack"]

    # The input offsets travelled in the transactions: the group's committed
    # offsets reach the end of every work partition.
    assert isinstance(delivery, ExactlyOnce) and delivery.transactions >= 1
    probe = AIOKafkaConsumer(
        group_id=f"{topics.work_prefix}.text-embed.group", **kafka.client_kwargs()
    )
    await probe.start()
    try:
        tps = [TopicPartition(work, p) for p in range(3)]
        ends = await probe.end_offsets(tps)
        async with asyncio.timeout(30):
            while True:
                committed = {tp: await probe.committed(tp) or 0 for tp in tps}
                if committed == ends:
                    break
                await asyncio.sleep(0.5)
    finally:
        await probe.stop()


async def test_a_zombie_is_fenced_by_the_per_partition_transactional_id(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    """Two writers claim one input partition; only the later one's output commits."""
    work = topics.work("text-embed", "cpu")
    group = f"{topics.work_prefix}.fence"
    tp = TopicPartition(work, 0)
    await produce(kafka, work, [(b"k", b"v")] * 4)  # partition 0 may get none; offsets are fake

    def consumer() -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka.client_kwargs())
        c.assign([tp])
        return c

    zombie_consumer, owner_consumer = consumer(), consumer()
    await zombie_consumer.start()
    await owner_consumer.start()
    dropped: list[list[TopicPartition]] = []
    zombie = ExactlyOnce(kafka=kafka, group=group, on_drop=dropped.append)
    owner = ExactlyOnce(kafka=kafka, group=group, on_drop=lambda _: None)
    try:
        await zombie.assigned(zombie_consumer, [tp])
        start = (await zombie_consumer.committed(tp)) or 0
        rec = FakeRecord(topic=work, partition=0, offset=start)
        assert zombie.accept(rec)
        await zombie.publish(rec, [Outgoing(topic=topics.results, value=b"from-the-zombie")])

        # The partition moves on: the new owner's init_transactions bumps the epoch.
        await owner.assigned(owner_consumer, [tp])
        zombie_consumer.unsubscribe()  # the zombie no longer holds it (and must not reopen it)
        await zombie.commit(zombie_consumer)
        assert dropped == [[tp]], "the fenced zombie must drop the partition's state"
        assert not zombie.accept(rec)

        assert owner.accept(rec)
        await owner.publish(rec, [Outgoing(topic=topics.results, value=b"from-the-owner")])
        await owner.commit(owner_consumer)
        assert owner.transactions == 1
        # The transaction's offset becomes visible once its markers are written
        # (a moment after commit_transaction returns; without KIP-447's
        # require_stable a fetch can still see the old value).
        async with asyncio.timeout(30):
            while True:
                if await owner_consumer.committed(tp) == start + 1:
                    break
                await asyncio.sleep(0.2)
    finally:
        await zombie.stop(zombie_consumer)
        await owner.stop(owner_consumer)
        await zombie_consumer.stop()
        await owner_consumer.stop()

    values = [v for v, _ in await read_committed(kafka, topics.results, expect=1, timeout=30)]
    assert values == [b"from-the-owner"]
    assert transactional_id(group, tp) == f"{group}-{work}-0"
