"""The publisher over at-least-once delivery with a fake producer: what one batch writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from opentelemetry.trace import INVALID_SPAN

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result, decode_telemetry
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.workers.answers import Answers, dead_letter
from sluicegate.workers.output import AtLeastOnce, Publisher, Reply
from sluicegate.workers.tracing import WorkerObserver

from .test_delivery import P0, FakeProducer, rec

TOPICS = TopicSettings()
ANSWERS = Answers(model="text-embed", pool="default", worker="test:1")


def make() -> tuple[Publisher, AtLeastOnce, FakeProducer]:
    producer = FakeProducer()
    delivery = AtLeastOnce(kafka=KafkaSettings(), producer=producer)
    observer = WorkerObserver(model="text-embed", pool="default", topic="work", budget=100)
    publisher = Publisher(
        delivery=delivery, topics=TOPICS, answers=ANSWERS, observer=observer, clock=lambda: 0.0
    )
    return publisher, delivery, producer


def ok(offset: int, rid: str, reply_to: str | None = None) -> Reply:
    request = InferenceRequest(request_id=rid, model="text-embed", texts=["x"], reply_to=reply_to)
    return Reply(rec(offset), ANSWERS.result(request, Status.OK), None, reply_to)


async def test_one_batch_publishes_each_result_its_dead_letter_and_the_batch_event() -> None:
    publisher, delivery, producer = make()
    request = InferenceRequest(request_id="c", model="text-embed", texts=["x"])
    failed = ANSWERS.failure(request, Status.ERROR, "invalid_input", "bad")
    poison = Reply(rec(2), failed, dead_letter(rec(2), ValueError("bad"), "infer"), None)
    replies = [ok(0, "a"), ok(1, "b", reply_to="my.results"), poison]
    for reply in replies:
        delivery.accept(reply.record)
    event = ANSWERS.batch_event([], padded_cost=30, queue_ms=1.0, compute_ms=2.0)

    await publisher.publish(replies, (event, INVALID_SPAN))

    results = [(t, v) for t, v in producer.sent if t in (TOPICS.results, "my.results")]
    assert [(t, decode_result(v or b"").request_id) for t, v in results] == [
        (TOPICS.results, "a"),
        ("my.results", "b"),
        (TOPICS.results, "c"),
    ]
    assert [t for t, _ in producer.sent].count(TOPICS.dlq) == 1
    telemetry = [decode_telemetry(v or b"") for t, v in producer.sent if t == TOPICS.telemetry]
    assert [e.kind for e in telemetry] == ["request"] * 3 + ["batch"]  # the batch's last
    assert publisher.results_produced == 3


async def test_a_record_without_a_request_id_gets_only_a_dead_letter() -> None:
    publisher, delivery, producer = make()
    delivery.accept(rec(0))
    dlq = dead_letter(rec(0), ValueError("not msgpack"), "admit")
    await publisher.publish([Reply(rec(0), None, dlq, None)])
    assert [t for t, _ in producer.sent] == [TOPICS.dlq]
    assert publisher.results_produced == 0


class RefusingProducer(FakeProducer):
    """Refuses every record for one topic, as a broker does one too large for it."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[Any]
    ) -> asyncio.Future[Any]:
        fut = await super().send(topic, value, key=key, headers=headers)
        if topic == self.refused:
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(MessageSizeTooLargeError())
        return fut


async def test_a_reply_to_that_refuses_the_record_gets_the_result_on_the_results_topic() -> None:
    producer = RefusingProducer("tiny.results")
    delivery = AtLeastOnce(kafka=KafkaSettings(), producer=producer)
    observer = WorkerObserver(model="text-embed", pool="default", topic="work", budget=100)
    publisher = Publisher(
        delivery=delivery, topics=TOPICS, answers=ANSWERS, observer=observer, clock=lambda: 0.0
    )
    reply = ok(4, "big", reply_to="tiny.results")
    delivery.accept(reply.record)

    await publisher.publish([reply])  # does not raise: the loop goes on

    (result,) = [decode_result(v or b"") for t, v in producer.sent if t == TOPICS.results]
    assert result.request_id == "big" and result.error is not None
    assert (
        result.error.code == "reply_to_unwritable" and "(the result was ok)" in result.error.message
    )
    assert [t for t, _ in producer.sent].count(TOPICS.dlq) == 1
    assert delivery.lag({P0: 5}) == {P0: 0}  # its offset is done: committable


async def test_a_failure_on_the_results_topic_itself_still_stops_the_worker() -> None:
    producer = RefusingProducer(TOPICS.results)
    delivery = AtLeastOnce(kafka=KafkaSettings(), producer=producer)
    observer = WorkerObserver(model="text-embed", pool="default", topic="work", budget=100)
    publisher = Publisher(
        delivery=delivery, topics=TOPICS, answers=ANSWERS, observer=observer, clock=lambda: 0.0
    )
    reply = ok(0, "a")
    delivery.accept(reply.record)
    with pytest.raises(MessageSizeTooLargeError):
        await publisher.publish([reply])  # the results topic itself: nowhere else to go
