"""Router vs a bare aiokafka relay, on the same broker, in the same run.

`bench_router_vs_relay()` seeds `count` identical-sized text-embed requests
on two fresh topics, then times (i) a bare consume -> produce relay (one
consumer in a group, one idempotent producer, commit after acks: the least
any Kafka hop can do) and (ii) the ingress router (decode, validate, mask,
tokenize, quota, route) over the same records, each from joining its group
to its last record acknowledged. The ratio router/relay says what the
router's work costs on this machine; faust was reported >= 10x slower than a
plain loop, which is why the router is one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from sluicegate.runtime.kafka import KafkaSettings, idempotent_producer
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.quota import QuotaSettings, TenantQuota
from sluicegate.streams.router import Router, RouterSettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    delete_topics,
    ensure_topics,
    streams_topics,
)

_TEXT = (
    "Order {i}: two boxes of printer paper and a stapler, deliver to the loading dock by Friday."
)


async def _seed(kafka: KafkaSettings, topics: list[str], count: int) -> None:
    producer = AIOKafkaProducer(linger_ms=20, **kafka.client_kwargs())
    await producer.start()
    try:
        sends = []
        for i in range(count):
            request = InferenceRequest(
                request_id=uuid.uuid4().hex, model="text-embed", texts=[_TEXT.format(i=i)]
            )
            value, key = encode(request), request.request_id.encode()
            for topic in topics:
                sends.append(await producer.send(topic, value, key=key, headers=headers()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


class _Joined(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.at = self.at or time.perf_counter()


async def relay(kafka: KafkaSettings, source: str, sink: str, count: int) -> float:
    """Seconds a bare relay takes to move `count` records from `source` to `sink`."""
    joined = _Joined()
    consumer = AIOKafkaConsumer(
        group_id=f"{source}.relay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka.client_kwargs(),
    )
    producer = idempotent_producer(kafka, linger_ms=2)
    await producer.start()
    consumer.subscribe([source], listener=joined)
    await consumer.start()
    try:
        moved = 0
        while moved < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            sends = [
                await producer.send(sink, rec.value, key=rec.key, headers=list(rec.headers))
                for recs in batches.values()
                for rec in recs
            ]
            await asyncio.gather(*sends)
            await consumer.commit()
            moved += len(sends)
        assert joined.at is not None
        return time.perf_counter() - joined.at
    finally:
        await consumer.stop()
        await producer.stop()


async def through_router(
    settings: RouterSettings, count: int, *, router: type[Router] = Router
) -> float:
    """Seconds the router takes to route `count` records already on its request topic.

    `router`: the class to time (a developer may pass an older copy to compare).
    """
    async with router(settings=settings) as running:
        joined = time.perf_counter()
        while running.stats["routed"] + running.stats["cached"] < count:
            if not running.running:
                await running.wait()  # raises what stopped it
                raise RuntimeError("the router stopped before routing every record")
            await asyncio.sleep(0.01)
        return time.perf_counter() - joined


def bench_settings(
    kafka: KafkaSettings, topics: TopicSettings, *, group: str, delivery: str
) -> RouterSettings:
    """The benched router's settings: these topics and group, no quota to speak of."""
    return RouterSettings(
        kafka=kafka,
        topics=topics,
        router_group_id=group,
        # Unlimited quota: the bench measures the router, not the tenant's budget.
        quota=QuotaSettings(default=TenantQuota(rate=1e12, burst=1e12)),
        delivery=delivery,
    )


async def bench_router_vs_relay(
    kafka: KafkaSettings,
    *,
    count: int = 5000,
    delivery: str = "at_least_once",
    router: type[Router] = Router,
) -> dict[str, float]:
    """Rates (records/s) of the relay and the router over `count` records, and router/relay.

    `delivery` is the router's (the relay is always the plain at-least-once loop).
    """
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = TopicSettings.prefixed(prefix)
    relay_in, relay_out = f"{prefix}.relay.in", f"{prefix}.relay.out"
    names = [*default_topics(topics), *streams_topics(topics), relay_in, relay_out]
    await ensure_topics(kafka, names, compacted=compacted_topics(topics))
    try:
        await _seed(kafka, [relay_in, topics.requests], count)
        relay_s = await relay(kafka, relay_in, relay_out, count)
        settings = bench_settings(kafka, topics, group=f"{prefix}.router", delivery=delivery)
        router_s = await through_router(settings, count, router=router)
    finally:
        await delete_topics(kafka, names)
    relay_rps, router_rps = count / relay_s, count / router_s
    return {
        "count": count,
        "relay_rps": round(relay_rps, 1),
        "router_rps": round(router_rps, 1),
        "ratio": round(router_rps / relay_rps, 3),
    }
