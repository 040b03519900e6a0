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
(at-least-once: a crash re-routes the last two polls' records), or, with
`delivery = exactly_once`, in per-partition transactions with the records
they produced (`router_output.py`). The loop is pipelined: a poll settles
(its acknowledgements and commit, or its transactions) while the next poll is
fetched, decoded and handled, and the poll after that, when already fetched,
is decoded in the executor meanwhile; at most one poll is unsettled, `handle()`
still sees records in order, and a partition is only revoked after the
unsettled poll committed. Routers in one group split each
tenant's quota by their share of the request topic's partitions.

State (routes, cancels, cached results, pool health) is in memory, rebuilt
from topics at start: `sg.control` (compacted, read from the beginning),
`sg.router.state` (compacted, from the beginning: cache entries and drift
baselines, `state.py`), `sg.results` (from the end, to fill the cache),
`sg.telemetry.rollup` (from `health_ttl_s` back, for pool health). A pool watch
(`failover.py`) learns which work topics have a live consumer, so a pool whose
workers died stops getting requests, and re-routes what was forwarded to it. The
control follower, the other followers, the pool watch and the loop run in one
task group: the first to fail stops the router, and `stop()` re-raises that failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import TracerProvider

from sluicegate.runtime import tracing
from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.destinations import Destinations
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.image_fetch import ImageSources
from sluicegate.runtime.kafka import consumer as kafka_consumer
from sluicegate.runtime.kafka import idempotent_producer, read_committed_consumer
from sluicegate.runtime.lifecycle import Service
from sluicegate.runtime.records import Record
from sluicegate.runtime.supervise import serve_together, watch
from sluicegate.runtime.transactions import ExactlyOnce
from sluicegate.schemas.catalog import CATALOG
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.cost import TokenCounter

from .cache import ResultCache
from .control import ControlReader, ControlState
from .drift import DriftMonitor
from .failover import PoolWatch
from .health import PoolHealth
from .ingress import Prepared, Refused
from .liveness import PoolLiveness
from .pii import PiiMasker
from .quota import TenantQuotas
from .router_core import Outcome, Produce, RouterCore, decode_all
from .router_output import RouterListener, RouterSender, outgoing
from .router_settings import RouterSettings
from .state import RouterState

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
        self._quotas = TenantQuotas(settings=settings.quota)
        self._eos = (
            ExactlyOnce(
                kafka=settings.kafka,
                group=settings.router_group_id,
                transaction_timeout_ms=settings.transaction_timeout_ms,
                dlq_topic=settings.topics.dlq,
                results_topic=settings.topics.results,
                stage="ingress",
                max_produce_attempts=settings.max_produce_attempts,
            )
            if settings.delivery == "exactly_once"
            else None
        )
        self._control = ControlReader(
            kafka=settings.kafka,
            topic=settings.topics.control,
            state=ControlState(cancel_ttl_s=settings.cancel_ttl_s),
            on_malformed=lambda rec, exc: self._core.malformed_control(rec, exc),
        )
        liveness = PoolLiveness(ttl_s=r.liveness_ttl_s)
        health = PoolHealth(
            max_error_rate=r.max_error_rate,
            ttl_s=r.health_ttl_s,
            liveness=liveness if r.watch_interval_s else None,
            work_topic=settings.topics.work,
        )
        self._watch = PoolWatch(
            kafka=settings.kafka,
            topics=settings.topics,
            routing=r,
            models=list(CATALOG),
            liveness=liveness,
            health=health,
        )
        drift = DriftMonitor(settings=settings.drift)
        self._state = RouterState(
            topic=settings.topics.router_state,
            cache=self._cache,
            drift=drift,
            ttl_s=settings.cache_ttl_s,
        )
        self._core = RouterCore(
            topics=settings.topics,
            routing=r,
            control=self._control.state,
            quotas=self._quotas,
            health=health,
            drift=drift,
            cache=self._cache,
            tracer=tracing.get_tracer(tracer_provider),
        )
        self._limits = WireLimits(
            image_root=settings.image_root, max_ref_image_bytes=settings.images.max_bytes
        )
        self._counter: TokenCounter | None = None
        self._saving: asyncio.Task[None] | None = None
        # The last poll's acknowledgements and commit, while the next poll is handled.
        self._settling: asyncio.Future[None] | None = None
        # The next poll's records, fetched and being decoded while this one is handled.
        self._ahead: tuple[list[Record], asyncio.Future[list[Outcome]]] | None = None
        # At-least-once: next offset after what each partition's last poll handled.
        self._handled: dict[TopicPartition, int] = {}
        if self._eos is not None:
            self._eos.on_drop(self._forget)
        self._sources: ImageSources | None = None
        self._destinations = Destinations.for_kafka(settings.kafka)
        self._sender = RouterSender(core=self._core, destinations=self._destinations)

    @property
    def control(self) -> ControlReader:
        return self._control

    @property
    def stats(self) -> Counter[str]:
        return self._core.stats

    @property
    def pool_watch(self) -> PoolWatch:
        return self._watch

    @property
    def state(self) -> RouterState:
        return self._state

    @property
    def quotas(self) -> TenantQuotas:
        return self._quotas

    @property
    def exactly_once(self) -> ExactlyOnce | None:
        return self._eos

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
        make_consumer = kafka_consumer if self._eos is None else read_committed_consumer
        consumer = make_consumer(
            s.kafka,
            group_id=s.router_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        state = Follower(
            kafka=s.kafka, topic=s.topics.router_state, handle=self._state.offer,
            start="beginning", name="router-state",
        )  # fmt: skip
        followers.append(state)
        await self._control.start()
        try:
            for follower in followers:
                if follower is state:  # restored before the router takes any request
                    await state.start(catch_up=True, timeout=60, find_s=5, required=False)
                else:
                    await follower.start()
            await producer.start()
            if self._eos is not None:
                await self._eos.start()
            self._sender.producer = producer
            listener = RouterListener(
                consumer=consumer,
                topic=s.topics.requests,
                quotas=self._quotas,
                exactly_once=self._eos,
                ready=ready.set,
                revoked=self._forget,
                settle=self._quiesce,
            )
            consumer.subscribe([s.topics.requests], listener=listener)
            await consumer.start()
            log.info(
                "router reading %s as group %s (%s)",
                s.topics.requests,
                s.router_group_id,
                s.delivery,
            )
            helpers = [watch(stop, self._control), *(watch(stop, f) for f in followers)]
            if s.routing.watch_interval_s:
                helpers.append(self._watch.run(stop, producer))
            try:
                await serve_together(self._loop(stop, consumer, executor), *helpers)
            finally:
                if self._saving is not None:
                    self._saving.cancel()
                    await asyncio.wait([self._saving])  # its cancellation, not ours
                if self._eos is not None:
                    await self._eos.stop(consumer)
                await consumer.stop()
        finally:
            await producer.stop()
            await self._destinations.close()
            for follower in followers:
                await follower.stop()
            await self._control.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            sources.close()

    # -- the loop ---------------------------------------------------------

    async def _loop(
        self, stop: asyncio.Event, consumer: AIOKafkaConsumer, executor: ThreadPoolExecutor
    ) -> None:
        try:
            while not stop.is_set():
                await self._poll_once(consumer, executor)
                await self._release(consumer)
                await asyncio.gather(*await self._sender.send(self._core.tombstones()))
                await self._save_state()
            await self._settled()
        finally:
            if self._ahead is not None:  # fetched, never handled: read again by the next owner
                self._ahead[1].cancel()
                self._ahead = None
            if self._settling is not None:  # the loop failed or was cancelled meanwhile
                self._settling.cancel()
                await asyncio.wait([self._settling])  # its cancellation, not ours
                self._settling = None

    async def _settled(self) -> None:
        """Wait until the previous poll's output is acknowledged and its offsets committed
        (raises what failed there). One poll settles while the next is fetched, decoded
        and handled: the broker's round trips overlap the router's work, and at most one
        poll is ever unsettled."""
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling

    async def _quiesce(self) -> None:
        """Before partitions are revoked: let the unsettled poll commit first (its failure
        is the loop's to raise)."""
        if self._settling is not None:
            await asyncio.wait([self._settling])

    async def _save_state(self) -> None:
        """Cache entries and baselines to the state topic, from a task of their own: best
        effort (a cache, not a promise), so a missing or slow state topic never holds
        up routing. One save at a time; what comes meanwhile waits for the next."""
        if self._saving is not None and not self._saving.done():
            return
        records = self._state.records()
        if records:
            self._saving = asyncio.create_task(self._write_state(records))

    async def _write_state(self, records: list[Produce]) -> None:
        try:
            acks = await self._sender.send(records)
            await asyncio.gather(*acks)
        except KafkaError as exc:
            log.warning("router state not written to %s: %r", self._s.topics.router_state, exc)

    async def _poll_once(self, consumer: AIOKafkaConsumer, executor: ThreadPoolExecutor) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            records = await self._fetch(consumer, timeout_ms=200)
            if not records:
                await self._settled()
                if self._eos is not None:
                    await self._eos.commit(consumer)
                return
            ahead = records, self._decode(records, executor)
        records, decoding = ahead
        outcomes = await decoding
        # What is already fetched is decoded while this poll is handled: the
        # tokenizer's batch runs without the GIL, beside the loop's own work.
        following = await self._fetch(consumer, timeout_ms=0)
        if following:
            self._ahead = following, self._decode(following, executor)
        eos = self._eos
        parked = self._core.coalescer.is_parked
        if eos is not None:
            for rec, outcome in zip(records, outcomes, strict=True):
                produces = self._core.handle(rec, outcome)
                if not parked(rec):  # a parked record's offset stays open until answered
                    await eos.publish(rec, [outgoing(p) for p in produces])
            await self._settled()
            self._settling = asyncio.ensure_future(eos.commit(consumer))
            return
        sends: list[asyncio.Future[Any]] = []
        for rec, outcome in zip(records, outcomes, strict=True):
            request = outcome.request if isinstance(outcome, Prepared | Refused) else None
            sends += await self._sender.send(self._core.handle(rec, outcome), rec, request)
        await self._settled()
        self._settling = asyncio.ensure_future(self._settle(consumer, records, sends))

    async def _fetch(self, consumer: AIOKafkaConsumer, *, timeout_ms: int) -> list[Record]:
        batches = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=self._s.router_max_records
        )
        records = [rec for recs in batches.values() for rec in recs]
        if self._eos is not None:
            # Fetched while a partition was being (re)opened: the seek re-reads them.
            records = [rec for rec in records if self._eos.accept(rec)]
        return records

    def _decode(
        self, records: list[Record], executor: ThreadPoolExecutor
    ) -> asyncio.Future[list[Outcome]]:
        """Decode, validate, mask and price `records` in the executor (`decode_all`)."""
        counter, masker = self._counter, self._masker
        assert counter is not None
        limits, sources = self._limits, self._sources
        return asyncio.get_running_loop().run_in_executor(
            executor,
            lambda: decode_all(
                records, masker=masker, counter=counter, limits=limits, sources=sources
            ),
        )

    async def _settle(
        self, consumer: AIOKafkaConsumer, records: list[Record], sends: list[asyncio.Future[Any]]
    ) -> None:
        """At-least-once: once all a poll produced is acknowledged, commit its offsets."""
        await asyncio.gather(*sends)
        for rec in records:
            self._handled[TopicPartition(rec.topic, rec.partition)] = rec.offset + 1
        await self._commit(consumer, {TopicPartition(r.topic, r.partition) for r in records})

    async def _release(self, consumer: AIOKafkaConsumer) -> None:
        """Send the answers of requests that were parked behind an identical one."""
        released = self._core.take_released()
        if released:
            await self._settled()  # commits stay in poll order
        if self._eos is not None:
            for rec, produces in released:
                await self._eos.publish(rec, [outgoing(p) for p in produces])
            if released:
                await self._eos.commit(consumer)
            return
        if released:
            await asyncio.gather(*[f for _, ps in released for f in await self._sender.send(ps)])
            await self._commit(
                consumer, {TopicPartition(r.topic, r.partition) for r, _ in released}
            )

    async def _commit(self, consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> None:
        """At-least-once: commit what was handled, but never past a parked request."""
        offsets = {}
        assigned = consumer.assignment()
        for tp in tps & assigned:
            upto = self._handled.get(tp)
            if upto is None:
                continue
            low = self._core.coalescer.lowest(tp.topic, tp.partition)
            offsets[tp] = upto if low is None else min(upto, low)
        if offsets:
            await consumer.commit(offsets)

    def _forget(self, tps: list[TopicPartition]) -> None:
        """Partitions revoked or dropped: their parked requests are their next owner's."""
        self._core.coalescer.drop((tp.topic, tp.partition) for tp in tps)
        for tp in tps:
            self._handled.pop(tp, None)


__all__ = ["Router", "RouterSettings"]
