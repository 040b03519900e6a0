"""How the router's output reaches Kafka: at-least-once or exactly-once.

- at_least_once (default): one idempotent producer; the consumer commits a
  poll's offsets once everything it produced is acknowledged. A crash
  re-routes the records of the last two polls at most (the one settling and
  the one handled meanwhile: duplicates, never losses).
- exactly_once: `runtime.transactions.ExactlyOnce`, the workers' machinery:
  one transactional producer per `sg.requests` partition (transactional id
  `{router group}-{topic}-{partition}`, which fences a router that lost the
  partition), the work records, answers, DLQ records and drift alarms of a
  run of input offsets and those offsets in one transaction. Workers read
  work topics `read_committed` in that mode, so a routed request runs once.

The rebalance listener also hands the quota its share: the part of the
request topic's partitions this router was assigned (see `quota.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from sluicegate.runtime.destinations import Destinations, permanent
from sluicegate.runtime.records import Record
from sluicegate.runtime.transactions import ExactlyOnce, Outgoing
from sluicegate.schemas.models import InferenceRequest

from .quota import TenantQuotas
from .router_core import Produce, RouterCore

log = logging.getLogger("sluicegate.router")


def outgoing(p: Produce) -> Outgoing:
    return Outgoing(
        topic=p.topic, value=p.value, key=p.key, headers=list(p.headers or []), answers=p.answers
    )


class RouterListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Opens/closes transactional partitions, rescales quotas, says when first assigned."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        topic: str,
        quotas: TenantQuotas,
        exactly_once: ExactlyOnce | None,
        ready: Callable[[], object],
        revoked: Callable[[list[TopicPartition]], None] = lambda _: None,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._revoked = revoked
        self._settle = settle
        self._consumer = consumer
        self._topic = topic
        self._quotas = quotas
        self._eos = exactly_once
        self._ready = ready

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._settle is not None:  # the poll still settling commits before we let go
            await self._settle()
        if self._eos is not None:
            await self._eos.revoked(self._consumer, list(revoked))
        self._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._eos is not None:
            await self._eos.assigned(self._consumer, list(assigned))
        total = self._consumer.partitions_for_topic(self._topic) or set()
        mine = [tp for tp in self._consumer.assignment() if tp.topic == self._topic]
        if total:
            self._quotas.set_share(len(mine) / len(total))
        log.info(
            "router assigned %d of %d partitions of %s; quota share %.3f",
            len(mine),
            len(total),
            self._topic,
            self._quotas.share,
        )
        self._ready()


class RouterSender:
    """Hands the router's records to its producer (at-least-once), with the reply_to fallback.

    `producer` is set once it started; `send()` before that is a programming error.
    """

    def __init__(self, *, core: RouterCore, destinations: Destinations) -> None:
        self._core = core
        self._destinations = destinations
        self.producer: AIOKafkaProducer | None = None

    async def send(
        self,
        records: list[Produce],
        rec: Record | None = None,
        request: InferenceRequest | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Hand `records` to the producer in order; the futures resolve once acknowledged.

        A result for a reply_to that does not exist, may not be written or refuses
        the record is answered `reply_to_unwritable` on the results topic instead
        (`RouterCore.unwritable`), never raised out of the loop.
        """
        out: list[asyncio.Future[Any]] = []
        for p in records:
            if p.reply is not None and rec is not None:
                if not await self._destinations.writable(p.topic):
                    reason = "the topic does not exist or is not authorized"
                    out += await self.send(self._core.unwritable(rec, request, p, reason))
                    continue
                try:
                    ack = await self._produce(p)
                except Exception as exc:
                    if not permanent(exc):
                        raise
                    out += await self.send(self._core.unwritable(rec, request, p, repr(exc)))
                    continue
                out.append(asyncio.ensure_future(self._acked(ack, p, rec, request)))
            else:
                out.append(await self._produce(p))
        return out

    async def _produce(self, p: Produce) -> asyncio.Future[Any]:
        assert self.producer is not None, "send() before the producer started"
        ack: asyncio.Future[Any] = await self.producer.send(
            p.topic, p.value, key=p.key, headers=p.headers
        )
        return ack

    async def _acked(
        self,
        ack: asyncio.Future[Any],
        p: Produce,
        rec: Record,
        request: InferenceRequest | None,
    ) -> None:
        try:
            await ack
        except Exception as exc:
            if not permanent(exc):
                raise
            self._destinations.refused(p.topic)
            await asyncio.gather(
                *await self.send(self._core.unwritable(rec, request, p, repr(exc)))
            )
