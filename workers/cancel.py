"""Cancellation on the worker side: follows the control topic's cancel records.

A worker asks `cancelled(request_id)` when it admits a record, and looks for
the ids of `take_new()` among the requests waiting in its batcher; either
way a cancelled request is answered `rejected: cancelled` instead of run. The watcher reads
the control topic from the beginning and has caught up with what was there
when `start()` returned, so a cancel produced before the worker started is
honoured. Route records on the same topic are ignored here. A missing
control topic is not fatal: the worker serves, logs it, and keeps looking.
Cancels older than `ttl_s` are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.control import CANCEL_PREFIX, Cancel, decode_control
from sluicegate.schemas.errors import WireError

log = logging.getLogger("sluicegate.worker.cancel")

CANCELLED_MESSAGE = "the request was cancelled (a cancel record on the control topic) before it ran"


class CancelWatcher:
    def __init__(self, *, kafka: KafkaSettings, topic: str, ttl_s: float = 600.0) -> None:
        self._kafka = kafka
        self._topic = topic
        self._ttl_ms = int(ttl_s * 1000)
        self._cancels: dict[str, int] = {}  # request_id -> ts_ms
        self._new: set[str] = set()  # cancelled since the last take_new()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def cancelled(self, request_id: str) -> bool:
        return request_id in self._cancels

    def take_new(self) -> set[str]:
        """Ids cancelled since the last call: what a worker must look for in its queue."""
        new, self._new = self._new, set()
        return new

    async def start(self, *, timeout: float = 10.0, find_s: float = 2.0) -> None:
        """Catch up with the control topic (within `timeout`), then follow it in a task.

        A topic that does not show up within `find_s` is looked for in the
        background, so a worker without one starts without waiting.
        """
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, fetch_max_wait_ms=100, **self._kafka.client_kwargs()
        )
        await consumer.start()
        self._consumer = consumer
        try:
            async with asyncio.timeout(find_s):
                parts = await self._assign(consumer)
            async with asyncio.timeout(timeout):
                ends = await consumer.end_offsets(parts)
                while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                    await self._poll(consumer)
        except TimeoutError:
            log.warning(
                "control topic %s not read yet; cancels are honoured once it is "
                "(`sluicegate up` creates it)",
                self._topic,
            )
        self._task = asyncio.create_task(self._follow(consumer), name="sg-cancels")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while not (ids := consumer.partitions_for_topic(self._topic)):
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.5)
        parts = [TopicPartition(self._topic, p) for p in sorted(ids)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        return parts

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        if not consumer.assignment():
            await self._assign(consumer)
        while True:
            await self._poll(consumer)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        now = time.time_ns() // 1_000_000
        for records in batches.values():
            for rec in records:
                if not (rec.key or b"").startswith(CANCEL_PREFIX.encode()):
                    continue
                try:
                    key, cancel = decode_control(rec.key, rec.value, list(rec.headers))
                except (WireError, ValueError):
                    continue
                if isinstance(cancel, Cancel) and now - cancel.ts_ms <= self._ttl_ms:
                    self._cancels[cancel.request_id] = cancel.ts_ms
                    self._new.add(cancel.request_id)
                elif cancel is None:
                    self._cancels.pop(key.removeprefix(CANCEL_PREFIX), None)
        horizon = now - self._ttl_ms
        for rid in [r for r, ts in self._cancels.items() if ts < horizon]:
            del self._cancels[rid]
