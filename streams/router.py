"""The ingress router: `sg.requests` in, `sg.work.<model>.<pool>` out.

A plain aiokafka loop (one consumer in group `sg.router`, one idempotent
producer): faust agents were reported >= 10x slower than a plain loop on
this hop, and `sluicegate bench router` measures the loop against a bare
relay. For each record: decode and validate (shared codec), mask PII, check
and price against the model, then in order: cancelled? cached? over the
tenant's quota? and finally route (pool, precision, version, shadow copy).
Every record ends in exactly one of: forwarded to a work topic, or answered
by the router itself (error + DLQ record, rejected, or a cached result).
Those decisions are `RouterCore`'s (`router_core.py`, no I/O); this module
is the loop around it: fetch, decide, produce, commit.

Offsets are committed after everything a poll produced is acknowledged
(at-least-once: a crash re-routes the last poll's records).

State (routes, cancels, cached results, pool health) is in memory, rebuilt
from topics at start: `sg.control` (compacted, read from the beginning),
`sg.results` (from the end, for the cache), `sg.telemetry.rollup` (from
`health_ttl_s` back, for pool health). The control follower, the other
followers and the loop run in one task group: the first to fail stops the
router, and `stop()` re-raises that failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.trace import TracerProvider

from sluicegate.runtime import tracing
from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.kafka import OnFirstAssignment, idempotent_producer
from sluicegate.runtime.kafka import consumer as kafka_consumer
from sluicegate.runtime.lifecycle import Service
from sluicegate.runtime.supervise import serve_together, watch
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.cost import TokenCounter

from .cache import ResultCache
from .control import ControlReader, ControlState
from .drift import DriftMonitor
from .health import PoolHealth
from .pii import PiiMasker
from .quota import TenantQuotas
from .router_core import Produce, RouterCore, decode_all
from .router_settings import RouterSettings

log = logging.getLogger("sluicegate.router")


class Router(Service):
    """Routes until stopped; ready once it joined its group.

    `stats` counts outcomes (routed, cached, rejected...).
    """

    def __init__(
        self,
        *,
        settings: RouterSettings,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._s = settings
        self._masker = PiiMasker(settings=settings.pii)
        self._cache = ResultCache(ttl_s=settings.cache_ttl_s) if settings.cache_ttl_s else None
        r = settings.routing
        self._control = ControlReader(
            kafka=settings.kafka,
            topic=settings.topics.control,
            state=ControlState(cancel_ttl_s=settings.cancel_ttl_s),
        )
        self._core = RouterCore(
            topics=settings.topics,
            routing=r,
            control=self._control.state,
            quotas=TenantQuotas(settings=settings.quota),
            health=PoolHealth(max_error_rate=r.max_error_rate, ttl_s=r.health_ttl_s),
            drift=DriftMonitor(settings=settings.drift),
            cache=self._cache,
            tracer=tracing.get_tracer(tracer_provider),
        )
        self._limits = WireLimits(
            image_root=settings.image_root, max_ref_image_bytes=settings.images.max_bytes
        )
        self._counter: TokenCounter | None = None
        self._sources: ImageSources | None = None
        self._producer: AIOKafkaProducer | None = None

    @property
    def control(self) -> ControlReader:
        return self._control

    @property
    def stats(self) -> Counter[str]:
        return self._core.stats

    async def _serve(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        s = self._s
        executor = ThreadPoolExecutor(s.router_threads, thread_name_prefix="sg-router")
        loop = asyncio.get_running_loop()
        self._counter = await loop.run_in_executor(executor, TokenCounter)
        sources = self._sources = ImageSources(settings=s.images)
        followers = [
            Follower(
                kafka=s.kafka,
                topic=s.topics.telemetry_rollup,
                handle=self._core.offer_rollup,
                start=now_ms() - int(s.routing.health_ttl_s * 1000),
                name="router-health",
            )
        ]
        if self._cache is not None:
            followers.append(
                Follower(
                    kafka=s.kafka,
                    topic=s.topics.results,
                    handle=self._core.offer_result,
                    name="cache",
                )
            )
        producer = idempotent_producer(s.kafka, linger_ms=2)
        consumer = kafka_consumer(
            s.kafka,
            group_id=s.router_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._control.start()
        try:
            for follower in followers:
                await follower.start()
            await producer.start()
            self._producer = producer
            consumer.subscribe([s.topics.requests], listener=OnFirstAssignment(ready.set))
            await consumer.start()
            log.info("router reading %s as group %s", s.topics.requests, s.router_group_id)
            try:
                await serve_together(
                    self._loop(stop, consumer, executor),
                    watch(stop, self._control),
                    *(watch(stop, follower) for follower in followers),
                )
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
            for follower in followers:
                await follower.stop()
            await self._control.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            sources.close()

    # -- the loop ---------------------------------------------------------

    async def _loop(
        self, stop: asyncio.Event, consumer: AIOKafkaConsumer, executor: ThreadPoolExecutor
    ) -> None:
        while not stop.is_set():
            await self._poll_once(consumer, executor)
            await asyncio.gather(*await self._send(self._core.tombstones()))

    async def _poll_once(self, consumer: AIOKafkaConsumer, executor: ThreadPoolExecutor) -> None:
        batches = await consumer.getmany(timeout_ms=200, max_records=self._s.router_max_records)
        records = [rec for recs in batches.values() for rec in recs]
        if not records:
            return
        counter, masker = self._counter, self._masker
        assert counter is not None
        loop = asyncio.get_running_loop()
        limits, sources = self._limits, self._sources
        outcomes = await loop.run_in_executor(
            executor,
            lambda: decode_all(
                records, masker=masker, counter=counter, limits=limits, sources=sources
            ),
        )
        sends: list[asyncio.Future[Any]] = []
        for rec, outcome in zip(records, outcomes, strict=True):
            sends += await self._send(self._core.handle(rec, outcome))
        await asyncio.gather(*sends)
        await consumer.commit()

    async def _send(self, records: list[Produce]) -> list[asyncio.Future[Any]]:
        """Hand `records` to the producer in order; the futures resolve once acknowledged."""
        assert self._producer is not None
        return [
            await self._producer.send(p.topic, p.value, key=p.key, headers=p.headers)
            for p in records
        ]


__all__ = ["Router", "RouterSettings"]
