"""The client SDK: produce requests, await their results.

    async with Client() as client:
        result = await client.submit(InferenceRequest(request_id=..., model="ocr", ...))

Results are correlated by `request_id` on the client's reply topic
(`sg.results` unless configured). The client reads that topic from its end
at start-up, without a consumer group, so several clients can share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from opentelemetry.trace import TracerProvider
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime import tracing
from sluicegate.runtime.kafka import (
    AUTHORIZATION_ERRORS,
    KafkaSettings,
    idempotent_producer,
    read_committed_consumer,
    wait_for_partitions,
)
from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.errors import WireError
from sluicegate.schemas.models import InferenceRequest, InferenceResult
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import Pool

from .routing import route


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    # Pools the client may route to itself (when not via the router).
    pools: tuple[Pool, ...] = ("cpu",)
    # Produce to sg.requests, through the ingress router (masking, quota, canary,
    # cache). False: route here with the same `route()` and write straight to
    # the work topic, skipping everything the router adds.
    via_router: bool = True
    # Seconds `submit` waits for a result.
    timeout_s: float = 120.0


class ResultTimeout(TimeoutError):
    """No result arrived in time. The request may still be answered later."""


def new_request_id() -> str:
    return uuid.uuid4().hex


class Client:
    """Produces requests and correlates results. Start it before use (or `async with`).

    Every request is sent under a `send <topic>` PRODUCER span (a child of the
    caller's current span, or a new trace) whose W3C context travels in the
    record's `traceparent` header. `tracer_provider` defaults to the global one.
    """

    def __init__(
        self,
        *,
        settings: ClientSettings | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._settings = settings or ClientSettings()
        self._tracer = tracing.get_tracer(tracer_provider)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[InferenceResult]] = {}

    @property
    def reply_topic(self) -> str:
        return self._settings.topics.results

    async def start(self) -> None:
        kafka = self._settings.kafka
        producer = idempotent_producer(kafka)
        # Workers in exactly_once mode write results in transactions.
        consumer = read_committed_consumer(kafka, enable_auto_commit=False)
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            await consumer.stop()
            raise self._settings.kafka.connect_error(exc) from exc
        try:
            await consumer.start()
            partitions = await self._reply_partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # fix the start position before any request goes out
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            await producer.stop()
            raise
        self._producer, self._consumer = producer, consumer
        self._reader = asyncio.create_task(self._read(), name="sg-client-results")
        self._reader.add_done_callback(self._reader_died)

    async def _reply_partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        topic = self.reply_topic
        try:
            return await wait_for_partitions(self._settings.kafka, topic, timeout=2.0)
        except TimeoutError:
            kafka = self._settings.kafka
            acl = (
                f" (with Kafka ACLs: or User:{kafka.sasl_username} may not Read and Describe "
                "it; see docs/security.md)"
                if kafka.sasl_username
                else ""
            )
            raise RuntimeError(
                f"result topic {topic!r} does not exist{acl}; start the stack with "
                "`sluicegate up` (it creates the topics) or create it yourself"
            ) from None

    async def stop(self) -> None:
        # A reader that failed already handed its error to every `wait` (and
        # `expect`); stopping closes the clients rather than raise it again.
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for part in (self._consumer, self._producer):
            if part is not None:
                await part.stop()
        self._producer = self._consumer = self._reader = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def topic_for(self, request: InferenceRequest) -> str:
        if self._settings.via_router:
            return self._settings.topics.requests
        return route(request, topics=self._settings.topics, pools=self._settings.pools)

    async def send(self, request: InferenceRequest) -> InferenceRequest:
        """Produce `request` (acknowledged by the broker); returns it as sent.

        Raises `KafkaAuthorizationError` (code `not_authorized`) when the ACLs
        refuse this principal the topic.
        """
        if self._producer is None:
            raise RuntimeError("Client is not started; use `async with Client() as client`")
        sent = request.model_copy(
            update={
                "reply_to": request.reply_to or self.reply_topic,
                "created_ms": request.created_ms or time.time_ns() // 1_000_000,
            }
        )
        topic, key = self.topic_for(sent), sent.request_id.encode()
        with tracing.producer_span(self._tracer, topic, key=key, request_id=sent.request_id):
            hdrs = tracing.inject(headers())
            try:
                await self._producer.send_and_wait(topic, encode(sent), key=key, headers=hdrs)
            except AUTHORIZATION_ERRORS as exc:
                what = f"write to topic {topic!r}"
                raise self._settings.kafka.authorization_error(exc, what=what) from exc
        return sent

    async def submit(
        self, request: InferenceRequest, *, timeout: float | None = None
    ) -> InferenceResult:
        """Send `request` and wait for its one result. Raises `ResultTimeout`."""
        future = self.expect(request.request_id)
        try:
            await self.send(request)
            return await self.wait(request.request_id, future, timeout=timeout)
        finally:
            self._waiting.pop(request.request_id, None)

    def expect(self, request_id: str) -> asyncio.Future[InferenceResult]:
        """Register interest in `request_id` before sending it (for fire-then-gather use)."""
        future: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        if self._reader is not None and self._reader.done() and not self._reader.cancelled():
            future.set_exception(self._reader_error(self._reader))  # no result can come
        return future

    async def wait(
        self,
        request_id: str,
        future: asyncio.Future[InferenceResult],
        *,
        timeout: float | None = None,
    ) -> InferenceResult:
        limit = self._settings.timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(future)
        except TimeoutError:
            raise ResultTimeout(
                f"no result for request {request_id} after {limit:.0f} s; is a worker for its "
                "model running? (`sluicegate status`)"
            ) from None

    async def _read(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            try:
                result = decode_result(record.value, list(record.headers))
            except WireError:
                continue  # not ours to judge; the topic may carry other producers' records
            future = self._waiting.get(result.request_id)
            if future is not None and not future.done():
                future.set_result(result)

    def _reader_error(self, task: asyncio.Task[None]) -> BaseException:
        exc = task.exception() or RuntimeError("result reader stopped")
        if isinstance(exc, AUTHORIZATION_ERRORS):
            what = f"read topic {self.reply_topic!r}"
            return self._settings.kafka.authorization_error(exc, what=what)
        return exc

    def _reader_died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = self._reader_error(task)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
