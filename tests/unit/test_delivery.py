"""At-least-once delivery with a fake producer and consumer: which offsets it commits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.runtime.transactions import Outgoing
from sluicegate.workers.output.delivery import AtLeastOnce
from tests.fakes import FakeRecord

TOPIC = "sg.work.text-embed.default"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def rec(offset: int, tp: TopicPartition = P0) -> FakeRecord:
    return FakeRecord(tp.topic, tp.partition, offset)


class FakeProducer:
    """Acknowledges a message when the test says so (`ack`), or at once with `auto_ack`."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.sent: list[tuple[str, bytes | None]] = []
        self.unacked: list[asyncio.Future[Any]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[Any]
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, value))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        else:
            self.unacked.append(fut)
        return fut

    def ack(self) -> None:
        for fut in self.unacked:
            fut.set_result(None)
        self.unacked.clear()


@dataclass
class FakeConsumer:
    assigned: set[TopicPartition] = field(default_factory=lambda: {P0, P1})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def result(offset: int) -> list[Outgoing]:
    return [Outgoing(topic="sg.results", value=b"%d" % offset)]


def make(producer: FakeProducer | None = None) -> tuple[AtLeastOnce, FakeProducer, FakeConsumer]:
    producer = producer or FakeProducer()
    return AtLeastOnce(kafka=KafkaSettings(), producer=producer), producer, FakeConsumer()


async def test_commits_only_up_to_the_lowest_unacknowledged_offset() -> None:
    delivery, producer, consumer = make(FakeProducer(auto_ack=False))
    for offset in range(4):
        assert delivery.accept(rec(offset))
    # Batches finish out of order: 0 and 1 still wait for their acks ...
    slow = [asyncio.create_task(delivery.publish(rec(o), result(o))) for o in (0, 1)]
    await asyncio.sleep(0)
    # ... while 2 and 3 are acknowledged at once.
    producer.auto_ack = True
    for o in (2, 3):
        await delivery.publish(rec(o), result(o))
    await delivery.commit(consumer)
    assert consumer.commits == [{P0: 0}]  # nothing past offset 0
    producer.ack()
    await asyncio.gather(*slow)
    await delivery.commit(consumer)
    assert consumer.commits[-1] == {P0: 4}


async def test_a_gap_holds_the_commit_back_until_it_fills() -> None:
    delivery, _, consumer = make()
    for offset in range(3):
        delivery.accept(rec(offset))
    await delivery.publish(rec(2), result(2))
    await delivery.publish(rec(1), result(1))
    await delivery.commit(consumer)
    assert consumer.commits == [{P0: 0}]  # offset 0 unanswered: nothing past it
    await delivery.publish(rec(0), result(0))
    await delivery.commit(consumer)
    assert consumer.commits[-1] == {P0: 3}
    await delivery.commit(consumer)
    assert len(consumer.commits) == 2  # nothing new, nothing committed


async def test_best_effort_messages_do_not_hold_the_offset() -> None:
    delivery, producer, consumer = make(FakeProducer(auto_ack=False))
    delivery.accept(rec(0))
    telemetry = Outgoing(topic="sg.telemetry", value=b"t", required=False)
    task = asyncio.create_task(delivery.publish(rec(0), [*result(0), telemetry]))
    await asyncio.sleep(0)
    assert [t for t, _ in producer.sent] == ["sg.results"]  # telemetry after the result's ack
    producer.ack()
    await task  # returns without the telemetry's acknowledgement
    assert [t for t, _ in producer.sent] == ["sg.results", "sg.telemetry"]
    assert producer.unacked  # the telemetry's
    await delivery.commit(consumer)
    assert consumer.commits == [{P0: 1}]


async def test_only_assigned_partitions_are_committed_and_revoke_commits_then_forgets() -> None:
    delivery, _, consumer = make()
    for tp in (P0, P1):
        delivery.accept(rec(0, tp))
        await delivery.publish(rec(0, tp), result(0))
    consumer.assigned = {P1}
    await delivery.commit(consumer)
    assert consumer.commits == [{P1: 1}]
    await delivery.revoked(consumer, [P0])
    assert consumer.commits[-1] == {P0: 1}
    assert delivery.lag({P0: 5, P1: 5}) == {P1: 4}  # P0 forgotten


async def test_a_commit_refused_by_a_rebalance_is_not_fatal() -> None:
    """The group moved on: the next owner re-reads from the last commit (at-least-once)."""
    from aiokafka.errors import CommitFailedError

    from sluicegate.workers.output.delivery import _commit

    class Refusing:
        async def commit(self, offsets: object) -> None:
            raise CommitFailedError("the group has already rebalanced")

    tp = TopicPartition("sg.work.text-embed.cpu", 0)
    assert await _commit(Refusing(), {tp: 5}) is False  # type: ignore[arg-type]
