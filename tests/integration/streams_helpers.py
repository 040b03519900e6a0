"""Helpers for the router and telemetry tests: run them in-process, read topics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.router import Router, RouterSettings


@contextlib.asynccontextmanager
async def running_router(
    kafka: KafkaSettings, topics: TopicSettings, **overrides: Any
) -> AsyncIterator[Router]:
    """An in-process router on this test's topics, ready (joined its group) on entry."""
    settings = RouterSettings(
        kafka=kafka, topics=topics, router_group_id=f"{topics.requests}.router", **overrides
    )
    router = Router(settings=settings)
    async with asyncio.timeout(60):
        await router.start()
    try:
        yield router
    finally:
        async with asyncio.timeout(60):
            await router.stop()


class TopicReader:
    """A real consumer on `topics` from their beginning, collecting records as they come."""

    def __init__(self, kafka: KafkaSettings, *topics: str) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics, auto_offset_reset="earliest", enable_auto_commit=False, **kafka.client_kwargs()
        )
        self.records: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        async for rec in self._consumer:
            self.records.append(rec)

    async def wait_for(
        self, predicate: Callable[[list[Any]], bool], *, timeout: float = 60.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout} s; {len(self.records)} read")
            await asyncio.sleep(0.05)
        return self.records

    async def wait_count(self, n: int, *, timeout: float = 60.0) -> list[Any]:
        return await self.wait_for(lambda recs: len(recs) >= n, timeout=timeout)


async def produce_requests(
    kafka: KafkaSettings,
    topic: str,
    requests: list[InferenceRequest],
    *,
    keys: list[bytes] | None = None,
) -> None:
    producer = AIOKafkaProducer(linger_ms=5, **kafka.client_kwargs())
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic,
                encode(r),
                key=keys[i] if keys else r.request_id.encode(),
                headers=headers(),
            )
            for i, r in enumerate(requests)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def header_of(rec: Any, name: str) -> str | None:
    for key, value in rec.headers:
        if key == name:
            return bytes(value).decode()
    return None
