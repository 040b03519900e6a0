"""Pool failover for the router: watch which work topics have consumers, rescue dead pools.

`PoolWatch.run()` describes the cluster's consumer groups every
`watch_interval_s` and feeds `PoolLiveness` (which `PoolHealth` consults, so
`decide()` stops choosing a pool with no live consumer and chooses it again
once one is back). For every model x pool that is dead while another pool of
the model is live, it runs one rescuer: a consumer that joins the dead
pool's group (the last group seen consuming its work topic, else the
worker's default `sg.worker.<model>.<pool>`), reads what was forwarded there
and never answered, and forwards each record unchanged but for its pool and
precision headers to a live pool's work topic, committing once the copies
are acknowledged. So records already forwarded to a pool that died are
re-routed, not left for their deadline (docs/scaling.md). A rescuer stops as
soon as the pool has a consumer again (it leaves the group, and the
returning worker takes over from the rescuer's commits).

Delivery is at-least-once like the router's own hop: a record the dead
worker answered but had not committed yet is answered again by the pool it
is re-routed to (same request id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DescribeGroupsRequest_v1, DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.kafka import KafkaSettings, admin_client
from sluicegate.runtime.kafka import consumer as kafka_consumer
from sluicegate.schemas.control import POOL_HEADER, PRECISION_HEADER
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import Pool

from .health import PoolHealth
from .liveness import RESCUE_CLIENT_PREFIX, PoolLiveness, consumers_by_topic
from .routing import RoutingSettings, choose_pool

log = logging.getLogger("sluicegate.router.failover")
REROUTED_FROM_HEADER = "sg-rerouted-from"


class _DescribeGroups(Request[DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(
        self, request_struct_class: type[DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]
    ) -> DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2:
        return request_struct_class(self._groups)


class PoolWatch:
    """Owned by the router; `run()` returns once `stop` is set, with every rescuer stopped."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topics: TopicSettings,
        routing: RoutingSettings,
        models: Sequence[str],
        liveness: PoolLiveness,
        health: PoolHealth,
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        self._routing = routing
        self._models = tuple(models)
        self._liveness = liveness
        self._health = health
        # (model, pool) -> the rescuer's task and the event that asks it to stop
        self._rescuers: dict[tuple[str, Pool], tuple[asyncio.Task[None], asyncio.Event]] = {}
        self.rescued = 0  # records re-routed out of dead pools, since start

    def pools_of(self, model: str) -> tuple[Pool, ...]:
        capable = self._routing.capable.get(model, self._routing.pools)
        return tuple(p for p in self._routing.pools if p in capable)

    async def run(self, stop: asyncio.Event, producer: AIOKafkaProducer) -> None:
        admin = admin_client(self._kafka)
        await admin.start()
        try:
            while not stop.is_set():
                try:
                    await self._census(admin)
                except KafkaError as exc:  # retried next tick; liveness goes unknown after its TTL
                    log.warning("pool watch: cannot describe consumer groups: %s", exc)
                self._steer(producer)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._routing.watch_interval_s):
                        await stop.wait()
        finally:
            for task, _ in self._rescuers.values():
                task.cancel()
            for task, _ in self._rescuers.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._rescuers.clear()
            await admin.close()

    async def _census(self, admin: AIOKafkaAdminClient) -> None:
        listed = await admin.list_consumer_groups()
        ids = sorted({str(g[0]) for g in listed if len(g) < 2 or g[1] in ("consumer", "")})
        by_node: dict[int, list[str]] = {}
        for group_id in ids:
            by_node.setdefault(await admin.find_coordinator(group_id), []).append(group_id)
        groups: list[dict[str, Any]] = []
        for node, group_ids in by_node.items():
            # Not admin.describe_consumer_groups(): aiokafka 0.14 negotiates v3 and
            # parses the answer as v2 (DescribeGroupsRequest_v3.RESPONSE_TYPE), which
            # fails with "Buffer underrun" against Kafka 3.9. v1/v2 carry all we read.
            response = await admin._send_request(_DescribeGroups(group_ids), node)
            groups += response.to_object()["groups"]
        self._liveness.observe(consumers_by_topic(groups), now_ms=now_ms())

    def _steer(self, producer: AIOKafkaProducer) -> None:
        """Start a rescuer per dead pool with a live sibling; stop those whose pool is back."""
        now = now_ms()
        for model in self._models:
            pools = self.pools_of(model)
            work = {p: self._topics.work(model, p) for p in pools}
            state = {p: self._liveness.state(work[p], now_ms=now) for p in pools}
            for pool in pools:
                key = (model, pool)
                running = self._rescuers.get(key)
                if running is not None and running[0].done():
                    self._rescuers.pop(key)
                    task = running[0]
                    if not task.cancelled() and task.exception() is not None:
                        log.error("rescuer %s/%s failed", *key, exc_info=task.exception())
                    running = None
                wanted = state[pool] == "dead" and any(
                    state[p] == "live" for p in pools if p != pool
                )
                if wanted and running is None:
                    log.warning("pool %s of %s has no consumer: re-routing its backlog", *key[::-1])
                    done = asyncio.Event()
                    task = asyncio.create_task(self._rescue(model, pool, producer, done))
                    self._rescuers[key] = (task, done)
                elif not wanted and running is not None:
                    # Asked, not cancelled: a poll's copies are committed before it leaves.
                    log.info("pool %s of %s: rescuer stops (%s)", pool, model, state[pool])
                    running[1].set()

    async def _rescue(
        self, model: str, pool: Pool, producer: AIOKafkaProducer, done: asyncio.Event
    ) -> None:
        key = (model, pool)
        topic = self._topics.work(model, pool)
        group = self._liveness.last_group(topic) or f"sg.worker.{model}.{pool}"
        consumer = kafka_consumer(
            self._kafka,
            group_id=group,
            client_id=f"{RESCUE_CLIENT_PREFIX}-{model}-{pool}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumer.subscribe([topic])
        await consumer.start()
        try:
            while not done.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=200)
                sends = []
                for records in batches.values():
                    for rec in records:
                        target = self._target(model, pool, rec.key)
                        headers = [
                            (k, v)
                            for k, v in rec.headers
                            if k not in (POOL_HEADER, PRECISION_HEADER, REROUTED_FROM_HEADER)
                        ]
                        precision = self._routing.precision.choose(target, None)
                        headers += [
                            (POOL_HEADER, target.encode()),
                            (PRECISION_HEADER, precision.encode()),
                            (REROUTED_FROM_HEADER, pool.encode()),
                        ]
                        sends.append(
                            await producer.send(
                                self._topics.work(model, target),
                                rec.value,
                                key=rec.key,
                                headers=headers,
                            )
                        )
                if sends:
                    await asyncio.gather(*sends)
                    await consumer.commit()
                    self.rescued += len(sends)
                    log.warning("re-routed %d record(s) of dead pool %s/%s", len(sends), *key)
        finally:
            await consumer.stop()

    def _target(self, model: str, dead: Pool, key: bytes | None) -> Pool:
        now = now_ms()
        others = [p for p in self.pools_of(model) if p != dead] or [dead]
        states = {p: self._health.state(model, p, now_ms=now) for p in others}
        sticky = key.decode(errors="replace") if key else ""
        return choose_pool(
            model, key=sticky, cost=None, candidates=others, states=states, settings=self._routing
        )
