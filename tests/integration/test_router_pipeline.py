"""The router's pipelined loop on the real broker: one poll settles (acknowledged and
committed, or its transactions committed) while the next is fetched, decoded and handled.

Many small polls (router_max_records=100) so that settling, prefetching and decoding
ahead overlap many times: every request is routed exactly once, masked ones masked,
clean ones forwarded as the very bytes the client sent, and once the input stops
the last poll's offsets are committed too.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from sluicegate.runtime.kafka import KafkaSettings, admin_client, partitions_of
from sluicegate.schemas.codec import decode_request, encode
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings

from .streams_helpers import TopicReader, produce_requests, running_router

pytestmark = pytest.mark.integration

COUNT = 1200


async def _committed_everything(kafka: KafkaSettings, topic: str, group: str) -> None:
    """Wait (bounded) until `group` has committed the end offset of every partition."""
    admin = admin_client(kafka)
    await admin.start()
    try:
        tps = await partitions_of(admin, topic)
    finally:
        await admin.close()
    assert tps, f"{topic} has no partitions"
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka.client_kwargs())
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while True:
            committed = {tp: await consumer.committed(tp) for tp in tps}
            if all(committed[tp] == ends[tp] for tp in tps):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"committed {committed}, end offsets {ends}")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_many_pipelined_polls_route_each_request_once_and_commit_them_all(
    kafka: KafkaSettings, topics: TopicSettings, delivery: str
) -> None:
    requests = [
        InferenceRequest(
            request_id=f"p{i}-{uuid.uuid4().hex[:8]}",
            model="text-embed",
            texts=[f"ticket {i}: write to user{i}@example.org" if i % 10 == 0 else f"note {i}"],
        )
        for i in range(COUNT)
    ]
    sent = {r.request_id: encode(r) for r in requests}
    with_pii = {r.request_id for i, r in enumerate(requests) if i % 10 == 0}
    work = topics.work("text-embed", "cpu")
    async with (
        TopicReader(kafka, work) as reader,
        running_router(kafka, topics, router_max_records=100, delivery=delivery) as router,
    ):
        await produce_requests(kafka, topics.requests, requests)
        records = await reader.wait_count(COUNT, timeout=180)
        await _committed_everything(kafka, topics.requests, f"{topics.requests}.router")
        await asyncio.sleep(1.0)  # anything routed twice would be on the topic by now
        records = list(reader.records)
        assert router.stats["routed"] == COUNT
    ids = [decode_request(rec.value, list(rec.headers)).request_id for rec in records]
    assert sorted(ids) == sorted(sent), "every request routed, and only once"
    for rec in records:
        routed = decode_request(rec.value, list(rec.headers))
        if routed.request_id in with_pii:
            assert "@example.org" not in routed.texts[0] and "[pii.email." in routed.texts[0]
        else:
            assert rec.value == sent[routed.request_id]  # forwarded as sent: no re-encode
