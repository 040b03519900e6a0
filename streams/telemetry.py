"""The telemetry rollup process (`sluicegate telemetry`).

Reads `sg.telemetry` (consumer group `sg.telemetry.rollup`), folds events
into tumbling windows (10 s and 1 min) per model x pool x version, pairs
primary and shadow results into `ShadowDiff`s, publishes both on
`sg.telemetry.rollup` and serves the latest as Prometheus metrics on
`/metrics`, with every pool's backlog cost (`backlog.py`, what KEDA scales
on). A plain aiokafka loop with in-memory windows: rollups are
telemetry, so a crash loses at most the open windows (offsets are
auto-committed), and open windows are flushed on a clean stop. It also
follows `sg.control` and watches each route's guards (`guards.py`): when a
canary breaks one over a window, it publishes the rollback to `sg.control`
itself and a `rollback` event on `sg.telemetry.rollup` saying why. The
bookkeeping is `RollupCore`'s (`rollup_core.py`, no I/O); the followers,
the consuming loop and the publisher run in one task group: the first to
fail stops the process, and `stop()` re-raises that failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, start_http_server
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime import kafka
from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.kafka import KafkaSettings, OnFirstAssignment
from sluicegate.runtime.lifecycle import Service
from sluicegate.runtime.records import Record
from sluicegate.runtime.supervise import serve_together, watch
from sluicegate.schemas.catalog import CATALOG
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import POOLS

from . import backlog
from .control import ControlReader
from .guards import GuardWatch, Trip, rolled_back
from .metrics import RollupCollector
from .records import RollbackEvent, RollupRecord, WindowRollup
from .rollup_core import RollupCore, with_lag

log = logging.getLogger("sluicegate.telemetry")
# How often due windows are published: about one poll.
PUBLISH_INTERVAL_S = 0.3


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    telemetry_group_id: str = "sg.telemetry.rollup"
    # Where a new group starts: the live edge, or the whole retained history.
    telemetry_offset_reset: Literal["earliest", "latest"] = "latest"
    # Prometheus /metrics on metrics_host; 0 serves none. 0.0.0.0 only inside a
    # pod or container whose network is private (ops/k8s/streams.yaml).
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    window_grace_s: float = Field(default=2.0, ge=0)
    shadow_window_s: float = Field(default=10.0, gt=0)
    # Worker groups are `<prefix>.<model>.<pool>` (the workers' default); used for lag.
    worker_group_prefix: str = "sg.worker"
    # Every model x pool's backlog cost is measured this often (even with no window).
    backlog_interval_s: float = Field(default=5.0, gt=0)
    backlog_pools: tuple[str, ...] = POOLS


class TelemetryRollups(Service):
    """Rolls sg.telemetry up into windows until stopped; ready once it joined its group."""

    def __init__(
        self,
        *,
        settings: TelemetrySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._s = settings
        self._clock = clock
        self.core = RollupCore(
            window_grace_s=settings.window_grace_s, shadow_window_s=settings.shadow_window_s
        )
        self.windows, self.shadow = self.core.windows, self.core.shadow
        self.collector = RollupCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self.backlog = backlog.BacklogGauge()
        self.registry.register(self.backlog)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self.published = 0
        self.guards = GuardWatch()
        self.control = ControlReader(kafka=settings.kafka, topic=settings.topics.control)
        self.rollbacks: list[RollbackEvent] = []

    async def _serve(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        s = self._s
        followers = [
            Follower(kafka=s.kafka, topic=s.topics.results, handle=self._primary, name="primary"),
            Follower(
                kafka=s.kafka, topic=s.topics.shadow_results, handle=self._shadow, name="shadow"
            ),
        ]
        server = None
        if s.metrics_port:
            server, _ = start_http_server(
                s.metrics_port, addr=s.metrics_host, registry=self.registry
            )
        producer = kafka.producer(s.kafka, acks="all", linger_ms=20)
        consumer = kafka.consumer(
            s.kafka,
            group_id=s.telemetry_group_id,
            enable_auto_commit=True,
            auto_offset_reset=s.telemetry_offset_reset,
        )
        admin = kafka.admin_client(s.kafka)
        try:
            await self.control.start()
            for follower in followers:
                await follower.start()
            await producer.start()
            await admin.start()
            self._producer, self._consumer, self._admin = producer, consumer, admin
            consumer.subscribe([s.topics.telemetry], listener=OnFirstAssignment(ready.set))
            await consumer.start()
            try:
                await serve_together(
                    self._consume(stop, consumer),
                    self._publisher(stop),
                    self._measure_backlog(stop),
                    *(watch(stop, follower) for follower in followers),
                )
                await self._publish_due(flush=True)
            finally:
                await consumer.stop()
        finally:
            await admin.close()
            await producer.stop()
            for follower in followers:
                await follower.stop()
            await self.control.stop()
            if server is not None:
                server.shutdown()
                server.server_close()

    async def _consume(self, stop: asyncio.Event, consumer: AIOKafkaConsumer) -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300, max_records=2000)
            now = self._clock()
            self.core.add((rec for records in batches.values() for rec in records), now_s=now)

    async def _publisher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._publish_due(flush=False)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PUBLISH_INTERVAL_S):
                    await stop.wait()

    async def _publish_due(self, *, flush: bool) -> None:
        closed, diffs = self.core.due(now_s=self._clock(), flush=flush)
        records: list[RollupRecord] = [await self._with_lag(rollup) for rollup in closed]
        records += diffs
        if not records:
            return
        assert self._producer is not None
        sends = []
        for trip in self.guards.check(self.control.state.routes, records, now_ms=now_ms()):
            sends.append(await self._roll_back(trip))
        for record in records:
            self.collector.update(record)
            if isinstance(record, WindowRollup):
                self.backlog.observe_window(record)
            sends.append(
                await self._producer.send(
                    self._s.topics.telemetry_rollup, encode(record), headers=headers()
                )
            )
        await asyncio.gather(*sends)
        self.published += len(records)

    async def _measure_backlog(self, stop: asyncio.Event) -> None:
        assert self._admin is not None and self._consumer is not None
        s = self._s
        while not stop.is_set():
            await backlog.measure(
                self.backlog,
                admin=self._admin,
                consumer=self._consumer,
                topics=s.topics,
                group_prefix=s.worker_group_prefix,
                models=list(CATALOG),
                pools=s.backlog_pools,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.backlog_interval_s):
                    await stop.wait()

    async def _roll_back(self, trip: Trip) -> Any:
        """Publish the rollback `trip` asks for, then its event; returns the event's send."""
        assert self._producer is not None
        spec = rolled_back(trip.spec, ts_ms=now_ms())
        await self._producer.send_and_wait(
            self._s.topics.control, encode(spec), key=spec.key(), headers=headers()
        )
        log.warning("automatic rollback: %s", trip.event.reason)
        self.rollbacks.append(trip.event)
        return await self._producer.send(
            self._s.topics.telemetry_rollup, encode(trip.event), headers=headers()
        )

    async def _with_lag(self, rollup: WindowRollup) -> WindowRollup:
        """Fill `lag_cost`: unconsumed records on the pool's work topic x mean cost."""
        if self._admin is None or self._consumer is None or rollup.batches == 0:
            return rollup
        topic = self._s.topics.work(rollup.model, rollup.pool)
        group = f"{self._s.worker_group_prefix}.{rollup.model}.{rollup.pool}"
        try:
            committed = await self._admin.list_consumer_group_offsets(group)
            parts = await kafka.partitions_of(self._admin, topic)
            if not parts:
                return rollup
            ends = await self._consumer.end_offsets(parts)
        except Exception as exc:  # lag is best effort; the window is published regardless
            log.debug("no lag for %s: %r", topic, exc)
            return rollup
        lag = sum(
            max(0, end - (committed[tp].offset if tp in committed else 0))
            for tp, end in ends.items()
        )
        return with_lag(rollup, lag)

    def _primary(self, rec: Record) -> None:
        self._offer(rec, shadow=False)

    def _shadow(self, rec: Record) -> None:
        self._offer(rec, shadow=True)

    def _offer(self, rec: Record, *, shadow: bool) -> None:
        self.core.offer(rec, shadow=shadow, now_s=self._clock())
