"""Following a whole topic without a consumer group (every instance reads everything).

The router follows the control topic (from the beginning), the result topic
(from its end, to fill the cache) and the rollup topic (from a while back,
for pool health); the telemetry process follows the result topics for the
shadow diff. A handler that raises stops the follower and `failed` says so;
a CancelledError is never swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.runtime.records import Record

from .errors import MissingTopicError

log = logging.getLogger("sluicegate.follow")
Start = Literal["beginning", "end"] | int  # an int is a Unix epoch ms timestamp


class Follower:
    """Reads every partition of `topic`; hands each record to `handle` in partition order."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topic: str,
        handle: Callable[[Record], None],
        start: Start = "end",
        name: str = "follower",
    ) -> None:
        self._kafka = kafka
        self.topic = topic
        self._handle = handle
        self._start = start
        self._name = name
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.seen = 0

    async def start(self, *, catch_up: bool = False, timeout: float = 30.0) -> None:
        """Assign the partitions and position them; with `catch_up`, return only once
        every record that was on the topic at call time has been handled."""
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=self._kafka.max_request_size,
            **self._kafka.client_kwargs(),
        )
        await consumer.start()
        try:
            parts = await partitions(consumer, self.topic, timeout=timeout)
            consumer.assign(parts)
            await self._position(consumer, parts)
            if catch_up:
                ends = await consumer.end_offsets(parts)
                async with asyncio.timeout(timeout):
                    while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                        await self._poll(consumer)
            else:
                for tp in parts:  # fix the start before returning
                    await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name=f"sg-{self._name}")

    async def _position(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> None:
        if self._start == "beginning":
            await consumer.seek_to_beginning(*parts)
        elif self._start == "end":
            await consumer.seek_to_end(*parts)
        else:
            found = await consumer.offsets_for_times({tp: self._start for tp in parts})
            for tp in parts:
                hit = found.get(tp)
                if hit is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    @property
    def failed(self) -> BaseException | None:
        if self._task is None or not self._task.done() or self._task.cancelled():
            return None
        return self._task.exception()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await self._poll(consumer)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        for records in batches.values():
            for rec in records:
                self.seen += 1
                self._handle(rec)


async def partitions(
    consumer: AIOKafkaConsumer, topic: str, *, timeout: float = 30.0
) -> list[TopicPartition]:
    """The partitions of `topic`; raises `MissingTopicError` if it does not appear in time."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    return [TopicPartition(topic, p) for p in sorted(parts)]
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise MissingTopicError(
            f"topic {topic!r} does not exist; `sluicegate up` creates it"
        ) from None


class OnFirstAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls `callback` once, when the group first assigns this consumer partitions."""

    def __init__(self, callback: Callable[[], object] | None) -> None:
        self._callback = callback

    async def on_partitions_revoked(self, revoked: object) -> None:
        return None

    async def on_partitions_assigned(self, assigned: object) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()
