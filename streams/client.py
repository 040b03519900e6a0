"""The asyncio client SDK: produce requests, await their results.

    async with Client() as client:
        result = await client.submit(InferenceRequest(request_id=..., model="ocr", ...))
        async for result in client.stream(requests, max_in_flight=64):
            ...                                   # in the order they complete
        await client.cancel(request_id)

Code without asyncio uses the synchronous facade `sluicegate.Client`
(`streams/sync_client.py`), which runs this one on a background loop.

Results are correlated by `request_id` on the client's reply topic
(`sg.results` unless configured). The client reads that topic from its end
at start-up, without a consumer group, so several clients can share it.
The brokers: `SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS`, else the local stack's
(`SLUICEGATE_KAFKA_PORT`, `<state dir>/stack.json`: `runtime/stackfile.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from opentelemetry.trace import TracerProvider
from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime import tracing
from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.destinations import check_reply_to
from sluicegate.runtime.kafka import (
    AUTHORIZATION_ERRORS,
    KafkaSettings,
    idempotent_producer,
    read_committed_consumer,
    wait_for_partitions,
)
from sluicegate.runtime.stackfile import follow_stack
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.control import Cancel
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
    # Seconds `submit` (and `stream`, per request) waits for a result.
    timeout_s: float = 120.0

    @model_validator(mode="before")
    @classmethod
    def _follow_stack(cls, data: Any) -> Any:
        return follow_stack(data)


class ResultTimeout(TimeoutError):
    """No result arrived in time. The request may still be answered later."""

    def __init__(self, request_id: str, seconds: float) -> None:
        super().__init__(
            f"no result for request {request_id} after {seconds:.0f} s; is a worker for its "
            "model running? (`sluicegate status`; raise `timeout` for slow models)"
        )
        self.request_id = request_id


class ClientNotStarted(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "Client is not started; use `async with Client() as client:` (or `await "
            "client.start()`), or `with sluicegate.Client() as client:` without asyncio"
        )


_END = object()  # the end of `stream`'s input


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

        Raises `UnknownModelError` / `InvalidReplyToError` before producing
        anything for a model not in the catalog or a reply_to no result may go to
        (straight to a work topic, a typo would otherwise create `sg.work.<typo>.*`).

        Raises `KafkaAuthorizationError` (code `not_authorized`) when the ACLs
        refuse this principal the topic.
        """
        if self._producer is None:
            raise ClientNotStarted()
        lookup(request.model)
        check_reply_to(request.reply_to, self._settings.topics)
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
            raise ResultTimeout(request_id, limit) from None

    async def submit_many(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        *,
        max_in_flight: int = 64,
        timeout: float | None = None,
    ) -> list[InferenceResult]:
        """Every request's result, in the order of `requests` (see `stream`)."""
        sent: list[str] = []

        async def track() -> AsyncIterator[InferenceRequest]:
            async for request in _aiter(requests):
                sent.append(request.request_id)
                yield request

        got = {
            r.request_id: r
            async for r in self.stream(track(), max_in_flight=max_in_flight, timeout=timeout)
        }
        return [got[rid] for rid in sent]

    async def stream(
        self,
        requests: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
        *,
        max_in_flight: int = 64,
        timeout: float | None = None,
    ) -> AsyncGenerator[InferenceResult, None]:
        """Send `requests` and yield one result per request, in the order they complete.

        At most `max_in_flight` requests are sent and not yet answered; the
        input is read only as results free slots, so it may be endless. A
        request unanswered `timeout` seconds (default `timeout_s`) after it was
        sent raises `ResultTimeout` here. Request ids must be unique among the
        requests in flight. Leaving the loop early forgets what is in flight.
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        if self._producer is None:
            raise ClientNotStarted()
        limit = self._settings.timeout_s if timeout is None else timeout
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(max_in_flight)
        finished: asyncio.Queue[Any] = asyncio.Queue()
        timers: dict[str, asyncio.TimerHandle] = {}

        async def feed() -> None:
            pending = _aiter(requests)
            try:
                while True:
                    await slots.acquire()  # before reading: the input is read a slot at a time
                    try:
                        request = await anext(pending)
                    except StopAsyncIteration:
                        break
                    rid = request.request_id
                    if rid in self._waiting:
                        raise ValueError(
                            f"request id {rid!r} is already waiting for a result; "
                            "give every request its own id (`new_request_id()`)"
                        )
                    future = self.expect(rid)
                    timers[rid] = loop.call_later(limit, _time_out, future, rid, limit)
                    future.add_done_callback(functools.partial(_finished, finished, rid))
                    await self.send(request)
            except Exception as exc:  # handed to the reader below; cancellation is not
                finished.put_nowait(exc)
            else:
                finished.put_nowait(_END)

        feeder = asyncio.create_task(feed(), name="sg-client-stream")
        fed = False
        try:
            while not fed or timers:
                item = await finished.get()
                if item is _END:
                    fed = True
                    continue
                if isinstance(item, Exception):
                    raise item
                rid, future = item
                timers.pop(rid).cancel()
                self._waiting.pop(rid, None)
                slots.release()
                yield future.result()  # raises ResultTimeout or the reader's failure
        finally:
            feeder.cancel()
            await asyncio.wait({feeder})
            for rid, timer in timers.items():
                timer.cancel()
                self._waiting.pop(rid, None)

    async def cancel(self, request_id: str) -> None:
        """Ask routers and workers to answer `request_id` `rejected: cancelled`.

        Published on the control topic; a request that already ran keeps its result.
        """
        if self._producer is None:
            raise ClientNotStarted()
        cancel = Cancel(request_id=request_id, ts_ms=now_ms())
        await self._producer.send_and_wait(
            self._settings.topics.control, encode(cancel), key=cancel.key(), headers=headers()
        )

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


async def _aiter(
    items: Iterable[InferenceRequest] | AsyncIterable[InferenceRequest],
) -> AsyncIterator[InferenceRequest]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _time_out(future: asyncio.Future[InferenceResult], request_id: str, seconds: float) -> None:
    if not future.done():
        future.set_exception(ResultTimeout(request_id, seconds))


def _finished(
    queue: asyncio.Queue[Any], request_id: str, future: asyncio.Future[InferenceResult]
) -> None:
    if not future.cancelled():
        queue.put_nowait((request_id, future))
