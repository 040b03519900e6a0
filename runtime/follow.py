"""Following a whole topic without a consumer group (every instance reads everything).

The router follows the control topic (from the beginning), the result topic
(from its end, to fill the cache) and the rollup topic (from a while back,
for pool health); the telemetry process follows the result topics for the
shadow diff; a worker follows the control topic for cancels
(`workers.cancel.CancelWatcher`).

Failure surface: a handler that raises, or a consumer that fails, ends the
follower's task; a done-callback logs it at once and `failed` returns the
exception, which the owner checks and raises (the router and telemetry loops
check it every poll; the cancel watcher on every call). A CancelledError is
never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from . import kafka
from .kafka import KafkaSettings, MissingTopicError
from .records import Record

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

    async def start(
        self,
        *,
        catch_up: bool = False,
        timeout: float = 30.0,
        find_s: float | None = None,
        required: bool = True,
    ) -> None:
        """Assign the partitions and position them; with `catch_up`, return only once
        every record that was on the topic at call time has been handled.

        The topic must show up within `find_s` seconds (default: `timeout`), or
        `MissingTopicError`; the catch-up must end within `timeout`, or
        `TimeoutError`. With
        `required=False` neither is raised: a missing topic or an unfinished
        catch-up is logged, and the follower goes on looking for the topic
        (and reading it) in the background.
        """
        consumer = kafka.consumer(self._kafka, enable_auto_commit=False, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            await self._begin(
                consumer, catch_up=catch_up, timeout=timeout, find_s=find_s or timeout
            )
        except TimeoutError as exc:
            if required:
                await consumer.stop()
                raise
            log.warning("%s: %s; following it once it is there", self._name, exc)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name=f"sg-{self._name}")
        self._task.add_done_callback(self._died)

    async def _begin(
        self, consumer: AIOKafkaConsumer, *, catch_up: bool, timeout: float, find_s: float
    ) -> None:
        parts = await partitions(self._kafka, self.topic, timeout=find_s)
        consumer.assign(parts)
        await self._position(consumer, parts)
        if catch_up:
            ends = await consumer.end_offsets(parts)
            try:
                async with asyncio.timeout(timeout):
                    while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                        await self._poll(consumer)
            except TimeoutError:
                raise TimeoutError(f"not caught up with topic {self.topic!r} yet") from None
        else:
            for tp in parts:  # fix the start before returning
                await consumer.position(tp)

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
        """Cancel the task and close the consumer. Does not raise the task's failure
        (logged when it happened, and raised by the owner from `failed`), so an owner
        stopping because of it still closes everything else."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self._consumer is not None:
            await self._consumer.stop()
        self._consumer = None

    @property
    def failed(self) -> BaseException | None:
        """The exception that ended the follower (None while it runs or after `stop()`)."""
        if self._task is None or not self._task.done() or self._task.cancelled():
            return None
        return self._task.exception()

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s stopped following %s: %r", self._name, self.topic, exc, exc_info=exc)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        if not consumer.assignment():  # start(required=False) did not find the topic
            parts = await kafka.wait_for_partitions(
                self._kafka, self.topic, timeout=None, interval_s=0.5
            )
            consumer.assign(parts)
            await self._position(consumer, parts)
        while True:
            await self._poll(consumer)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        try:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # A broker restarting or a leader moving: the client reconnects by itself.
            log.info("%s: %r while following %s; retrying", self._name, exc, self.topic)
            await asyncio.sleep(0.5)
            return
        for records in batches.values():
            for rec in records:
                self.seen += 1
                self._handle(rec)


async def partitions(
    kafka_settings: KafkaSettings, topic: str, *, timeout: float = 30.0
) -> list[TopicPartition]:
    """The partitions of `topic`; raises `MissingTopicError` if it does not appear in time."""
    try:
        return await kafka.wait_for_partitions(kafka_settings, topic, timeout=timeout)
    except TimeoutError:
        raise MissingTopicError(
            f"topic {topic!r} does not exist; `sluicegate up` creates it"
        ) from None
