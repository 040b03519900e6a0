"""Routers that scale out, on the real broker: one quota across two routers,
exactly-once routing through a rebalance, and a record that can never be
written dead-lettered after bounded transactions instead of blocking its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from sluicegate.runtime.kafka import KafkaSettings, admin_client
from sluicegate.runtime.transactions import ExactlyOnce, Outgoing
from sluicegate.schemas.codec import decode_request, decode_result, encode, headers
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.quota import QuotaSettings, TenantQuota
from tests.fakes import FakeRecord

from .streams_helpers import produce_requests, running_router
from .test_exactly_once import read_committed

pytestmark = pytest.mark.integration

TEXT = "a steady stream of identical small requests for the quota test"
RATE, BURST = 400.0, 400.0  # cost units per second, and at once


async def _all_records(kafka: KafkaSettings, *topics: str, expect: int) -> list[Any]:
    """Every record of `topics` (read_uncommitted), once `expect` arrived and it went quiet."""
    consumer = AIOKafkaConsumer(
        *topics, auto_offset_reset="earliest", enable_auto_commit=False, **kafka.client_kwargs()
    )
    await consumer.start()
    out: list[Any] = []
    try:
        async with asyncio.timeout(120):
            quiet = 0
            while len(out) < expect or quiet < 4:
                batch = await consumer.getmany(timeout_ms=500)
                got = [r for rs in batch.values() for r in rs]
                out += got
                quiet = 0 if got else quiet + 1
    finally:
        await consumer.stop()
    return out


async def _until(predicate: object, what: str, timeout: float = 90) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)


async def test_two_routers_hold_one_quota(kafka: KafkaSettings, topics: TopicSettings) -> None:
    """Two routers, one group: the tenant gets its configured rate, not twice it."""
    quota = QuotaSettings(tenants={"metered": TenantQuota(rate=RATE, burst=BURST)})
    units = TokenCounter().count([TEXT])[0]
    opts = {"quota": quota, "cache_ttl_s": 0}
    async with (
        running_router(kafka, topics, **opts) as a,
        running_router(kafka, topics, **opts) as b,
    ):
        await _until(
            lambda: a.quotas.share < 1 and b.quotas.share < 1,
            "both routers hold a share of the request partitions",
        )
        assert a.quotas.share + b.quotas.share == pytest.approx(1.0)
        # Send at 5x the quota for ~12 s, paced, so both routers are over it throughout.
        per_s = 5 * RATE / units
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 12:
            due = int((time.monotonic() - started) * per_s) - sent
            if due > 0:
                batch = [
                    InferenceRequest(
                        request_id=uuid.uuid4().hex, model="text-embed", tenant="metered",
                        texts=[TEXT],
                    )
                    for _ in range(due)
                ]  # fmt: skip
                await produce_requests(kafka, topics.requests, batch)
                sent += due
            await asyncio.sleep(0.05)
        work = topics.work("text-embed", "cpu")
        outputs = await _all_records(kafka, work, topics.results, expect=sent)
        stats = a.stats + b.stats
    routed = [r for r in outputs if r.topic == work]
    refused = [r for r in outputs if r.topic == topics.results]
    assert len(routed) + len(refused) == sent, "every request ends in one record"
    assert stats["routed"] == len(routed) and stats["over_quota"] == len(refused)
    assert all(decode_result(r.value, r.headers).error.code == "over_quota" for r in refused)
    # The routers' admitting window: first to last record they wrote (broker timestamps
    # of the producer's create time, taken when each decision was made).
    stamps = [r.timestamp for r in outputs]
    window_s = (max(stamps) - min(stamps)) / 1000
    allowed = BURST + RATE * window_s
    admitted = len(routed) * units
    error = admitted / allowed - 1
    print(
        f"quota with 2 routers: admitted {admitted:.0f} units in {window_s:.1f} s, "
        f"allowed {allowed:.0f} (burst {BURST:.0f} + {RATE:.0f}/s); error {error:+.1%}; "
        f"sent {sent}, routed {len(routed)}, refused {len(refused)}"
    )
    # Each router keeping the whole quota would admit about +100 %.
    assert abs(error) < 0.25, f"quota error {error:+.1%} with two routers"


async def test_exactly_once_routing_survives_a_router_leaving(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    """Two transactional routers; one leaves mid-stream: every request is routed once."""
    work = topics.work("text-embed", "cpu")
    opts = {"delivery": "exactly_once", "cache_ttl_s": 0}
    first = [
        InferenceRequest(request_id=uuid.uuid4().hex, model="text-embed", texts=[f"eos {i}"])
        for i in range(150)
    ]
    second = [
        InferenceRequest(request_id=uuid.uuid4().hex, model="text-embed", texts=[f"eos {i}"])
        for i in range(150, 300)
    ]
    async with running_router(kafka, topics, **opts) as stays:
        async with running_router(kafka, topics, **opts) as leaves:
            await _until(
                lambda: stays.quotas.share < 1 and leaves.quotas.share < 1, "both assigned"
            )
            await produce_requests(kafka, topics.requests, first)
            await _until(
                lambda: stays.stats["routed"] + leaves.stats["routed"] >= 100, "first routed"
            )
        await produce_requests(kafka, topics.requests, second)
        routed = await read_committed(kafka, work, expect=300, timeout=120)
        eos = stays.exactly_once
        assert eos is not None and eos.transactions >= 1
    ids = Counter(decode_request(v, h).request_id for v, h in routed if v is not None)
    sent = {r.request_id for r in first + second}
    assert set(ids) == sent, f"lost {len(sent - set(ids))}"
    assert max(ids.values()) == 1, f"duplicated {sum(n - 1 for n in ids.values())}"


async def test_an_unwritable_record_is_dead_lettered_after_bounded_transactions(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    """A result too large for its topic: 2 aborted transactions, then DLQ + error result."""
    tiny = f"{topics.results}.tiny"
    admin = admin_client(kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(tiny, 1, 1, topic_configs={"max.message.bytes": "2048"})]
        )
    finally:
        await admin.close()
    source = topics.requests
    group = f"{topics.requests}.unwritable"
    tp = TopicPartition(source, 0)
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(source, b"input", partition=0, headers=headers())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka.client_kwargs())
    consumer.assign([tp])
    await consumer.start()
    eos = ExactlyOnce(
        kafka=kafka,
        group=group,
        dlq_topic=topics.dlq,
        results_topic=topics.results,
        stage="ingress",
        max_produce_attempts=2,
    )
    rid = uuid.uuid4().hex
    big = Outgoing(topic=tiny, value=b"x" * 10_000, key=rid.encode(), answers=rid)
    try:
        await eos.start()
        await eos.assigned(consumer, [tp])
        for attempt in range(3):  # 2 strikes, then the third pass re-routes
            start = (await consumer.committed(tp)) or 0
            rec = FakeRecord(topic=source, partition=0, offset=start)
            assert eos.accept(rec), f"attempt {attempt}: the partition is open"
            await eos.publish(rec, [big])
            await eos.commit(consumer)
            if eos.transactions:
                break
            assert eos.reinitialised == attempt + 1 and not eos.accept(rec)
            await eos.commit(consumer)  # reopens it, rewound to the committed offset
        assert eos.transactions == 1 and eos.rerouted == 1 and attempt == 2
    finally:
        await eos.stop(consumer)
        with contextlib.suppress(Exception):
            await consumer.stop()
    ((value, hdrs),) = await read_committed(kafka, topics.dlq, expect=1, timeout=60)
    letter = DeadLetter.from_headers(hdrs)
    assert letter.code == "reply_to_unwritable" and letter.request_id == rid
    assert letter.error_class in {"MessageSizeTooLargeError", "RecordTooLargeError"}
    assert value == b"", "a record too large is dead-lettered without its bytes"
    ((rv, rh),) = await read_committed(kafka, topics.results, expect=1, timeout=60)
    result = decode_result(rv, rh)
    assert result.request_id == rid and result.status is Status.ERROR
    assert result.error is not None and result.error.code == "reply_to_unwritable"
    assert "create the topic" in result.error.message
    assert await read_committed(kafka, tiny, expect=0, timeout=30) == []


async def test_the_result_cache_survives_a_router_restart(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    """Router 1 caches a result and stops; router 2 answers an identical request from it."""
    first = InferenceRequest(request_id=uuid.uuid4().hex, model="text-embed", texts=["cache me"])
    again = first.model_copy(update={"request_id": uuid.uuid4().hex})
    async with running_router(kafka, topics) as before:
        await produce_requests(kafka, topics.requests, [first])
        await _until(lambda: before.stats["routed"] == 1, "routed")
        computed = InferenceResult(
            request_id=first.request_id, status=Status.OK, model="text-embed",
            outputs={"embedding": [0.5, 0.25]}, produced_ms=time.time_ns() // 1_000_000,
        )  # fmt: skip
        producer = AIOKafkaProducer(**kafka.client_kwargs())
        await producer.start()
        try:  # as the worker would answer it
            await producer.send_and_wait(
                topics.results, encode(computed), key=computed.request_id.encode(),
                headers=headers(),
            )  # fmt: skip
        finally:
            await producer.stop()
        saved = await _all_records(kafka, topics.router_state, expect=1)
        assert [r.key[:6] for r in saved] == [b"cache/"]
    async with running_router(kafka, topics) as after:
        assert after.state.restored == 1
        await produce_requests(kafka, topics.requests, [again])
        await _until(lambda: after.stats["cached"] == 1, "answered from the restored cache")
    answers = await _all_records(kafka, topics.results, expect=2)
    answer = next(
        decode_result(r.value, r.headers) for r in answers if r.key == again.request_id.encode()
    )
    assert answer.cached and answer.outputs == {"embedding": [0.5, 0.25]}
    assert after.stats["routed"] == 0
