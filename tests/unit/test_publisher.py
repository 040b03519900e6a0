"""The publisher over at-least-once delivery with a fake producer: what one batch writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from opentelemetry.trace import INVALID_SPAN

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result, decode_telemetry
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.models import InferenceRequest, Status, Timings
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
    # Replies to the results topic go out together, reply_to ones each on their own.
    assert sorted((t, decode_result(v or b"").request_id) for t, v in results) == [
        ("my.results", "b"),
        (TOPICS.results, "a"),
        (TOPICS.results, "c"),
    ]
    assert [t for t, _ in producer.sent].count(TOPICS.dlq) == 1
    telemetry = [decode_telemetry(v or b"") for t, v in producer.sent if t == TOPICS.telemetry]
    # One telemetry record for the whole batch, after the results; it carries
    # each member's request telemetry as arrays, in batch order.
    [batch] = telemetry
    assert batch.kind == "batch" and [t for t, _ in producer.sent][-1] == TOPICS.telemetry
    assert batch.request_ids == ["a", "b", "c"]
    assert batch.statuses == [Status.OK, Status.OK, Status.ERROR]
    members = batch.members()
    assert [(m.kind, m.request_id, m.status) for m in members] == [
        ("request", "a", Status.OK),
        ("request", "b", Status.OK),
        ("request", "c", Status.ERROR),
    ]
    assert publisher.results_produced == 3


async def test_a_folded_member_reports_what_its_own_request_event_reported() -> None:
    publisher, delivery, producer = make()
    request = InferenceRequest(request_id="a", model="text-embed", texts=["x"])
    timings = Timings(queue_ms=3.5, compute_ms=7.25, batch_size=1)
    result = ANSWERS.result(request, Status.OK, timings=timings)
    cost = Cost(tokens=5, pixels=0, units=5)
    reply = Reply(rec(0), result, None, None, cost=cost)
    delivery.accept(reply.record)
    event = ANSWERS.batch_event([cost], padded_cost=5, queue_ms=3.5, compute_ms=7.25)

    await publisher.publish([reply], (event, INVALID_SPAN))

    [batch] = [decode_telemetry(v or b"") for t, v in producer.sent if t == TOPICS.telemetry]
    [member] = batch.members()
    own = ANSWERS.request_event(result, cost)
    same = ("model", "pool", "worker", "model_version", "status", "request_id", "batch_size")
    assert {f: getattr(member, f) for f in same} == {f: getattr(own, f) for f in same}
    figures = ("tokens", "pixels", "queue_ms", "compute_ms")
    assert {f: getattr(member, f) for f in figures} == {f: getattr(own, f) for f in figures}


async def test_a_reply_published_alone_still_sends_its_own_request_event() -> None:
    publisher, delivery, producer = make()
    reply = ok(0, "alone")
    delivery.accept(reply.record)
    await publisher.publish([reply])  # a refusal or an expiry: no batch
    [event] = [decode_telemetry(v or b"") for t, v in producer.sent if t == TOPICS.telemetry]
    assert (event.kind, event.request_id, event.request_ids) == ("request", "alone", None)


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


async def test_a_batch_member_answered_unwritable_sends_its_own_event_not_a_member_entry() -> None:
    producer = RefusingProducer("tiny.results")
    delivery = AtLeastOnce(kafka=KafkaSettings(), producer=producer)
    observer = WorkerObserver(model="text-embed", pool="default", topic="work", budget=100)
    publisher = Publisher(
        delivery=delivery, topics=TOPICS, answers=ANSWERS, observer=observer, clock=lambda: 0.0
    )
    replies = [ok(0, "fine"), ok(1, "big", reply_to="tiny.results")]
    for reply in replies:
        delivery.accept(reply.record)
    event = ANSWERS.batch_event([], padded_cost=2, queue_ms=0.0, compute_ms=1.0)

    await publisher.publish(replies, (event, INVALID_SPAN))

    telemetry = [decode_telemetry(v or b"") for t, v in producer.sent if t == TOPICS.telemetry]
    own = [e for e in telemetry if e.kind == "request"]
    [batch] = [e for e in telemetry if e.kind == "batch"]
    # The replaced result (reply_to_unwritable, an error) is what its event reports.
    assert [(e.request_id, e.status) for e in own] == [("big", Status.ERROR)]
    assert batch.request_ids == ["fine"]


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


async def test_a_batch_to_the_results_topic_is_acknowledged_before_its_offsets_are_done() -> None:
    publisher, delivery, producer = make()
    replies = [ok(i, f"r{i}") for i in range(3)]
    for reply in replies:
        delivery.accept(reply.record)
    assert delivery.lag({P0: 3}) == {P0: 3}
    event = ANSWERS.batch_event([], padded_cost=3, queue_ms=0.0, compute_ms=1.0)
    await publisher.publish(replies, (event, INVALID_SPAN))
    assert delivery.lag({P0: 3}) == {P0: 0}  # all three acknowledged, then done
    topics = [t for t, _ in producer.sent]
    assert topics == [TOPICS.results] * 3 + [TOPICS.telemetry]
    assert publisher.results_produced == 3
