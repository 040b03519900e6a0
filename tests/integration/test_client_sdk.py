"""The SDK a service author reaches for, against the session stack (router + workers).

The synchronous facade (`sluicegate.Client`, no asyncio in the test) answers
1,000 text-embed requests through `stream()` with none missing and none twice
and never more than `max_in_flight` unanswered; the asyncio client's
`stream()` keeps its bound; `cancel()` publishes a cancel the router honours.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

import sluicegate
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.streams.client import Client, ClientSettings

pytestmark = pytest.mark.integration

COUNT = 1_000


def _requests(tag: str, count: int = COUNT) -> list[InferenceRequest]:
    return [
        InferenceRequest(
            request_id=f"{tag}-{i}-{uuid.uuid4().hex[:8]}",
            model="text-embed",
            texts=[f"request {i} of the {tag} run, {'word ' * (i % 13)}"],
        )
        for i in range(count)
    ]


def _check(sent: list[InferenceRequest], got: list[sluicegate.InferenceResult]) -> None:
    seen = Counter(r.request_id for r in got)
    assert set(seen) == {r.request_id for r in sent}, "a request got no result"
    assert max(seen.values()) == 1, "a request got two results"
    bad = [(r.request_id, r.status, r.error) for r in got if r.status is not Status.OK]
    assert not bad, bad[:5]
    assert all(len(r.outputs["embedding"]) == 384 for r in got)


def test_the_sync_client_streams_1000_requests_without_asyncio(stack: LocalStack) -> None:
    settings = ClientSettings(kafka=stack.settings.kafka(), timeout_s=300)
    sent = _requests("sync")
    in_flight, most = 0, 0
    lock = threading.Lock()

    def counted() -> Iterator[InferenceRequest]:  # handed out and not yet answered
        nonlocal in_flight, most
        for request in sent:
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            yield request

    got = []
    with sluicegate.Client(settings=settings) as client:
        for result in client.stream(counted(), max_in_flight=100):
            with lock:
                in_flight -= 1
            got.append(result)
        # The same client, the ordered form, after the stream.
        few = _requests("sync-many", 20)
        ordered = client.submit_many(few, max_in_flight=5)
    _check(sent, got)
    # Unanswered requests stay within max_in_flight; two answered ones may be on
    # their way to this thread (one queued, one being handed over).
    assert most <= 102, most
    assert [r.request_id for r in ordered] == [r.request_id for r in few]
    assert all(r.status is Status.OK for r in ordered)


async def test_the_async_stream_answers_every_request_in_bounds(kafka: KafkaSettings) -> None:
    sent = _requests("async", 300)  # the 1,000 run is the sync one (the same stream inside)
    in_flight, most = 0, 0

    def counted() -> Iterator[InferenceRequest]:
        nonlocal in_flight, most
        for request in sent:
            in_flight += 1
            most = max(most, in_flight)
            yield request

    got = []
    async with Client(settings=ClientSettings(kafka=kafka, timeout_s=300)) as client:
        async for result in client.stream(counted(), max_in_flight=50):
            in_flight -= 1
            got.append(result)
    _check(sent, got)
    assert most <= 50, most


async def test_cancel_is_honoured_by_the_router(kafka: KafkaSettings) -> None:
    async with Client(settings=ClientSettings(kafka=kafka, timeout_s=120)) as client:
        # The router follows sg.control; a cancel it has not seen yet lets the
        # request run, so each try uses a new id (bounded: 30 tries).
        for _ in range(30):
            request = _requests("cancel", 1)[0]
            await client.cancel(request.request_id)
            await asyncio.sleep(1.0)
            result = await client.submit(request)
            if result.status is Status.REJECTED:
                break
    assert result.status is Status.REJECTED, result
    assert result.error is not None and result.error.code == "cancelled"
