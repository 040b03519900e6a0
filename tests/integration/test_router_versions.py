"""Canary weights, stickiness and rollback through sg.control; cache hits; worker-side cancel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result
from sluicegate.schemas.control import VERSION_HEADER as VERSION
from sluicegate.schemas.control import RouteSpec
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client
from sluicegate.streams.control import publish_cancel, publish_route, read_routes, rollback_route

from .conftest import WorkerFactory
from .streams_helpers import TopicReader, header_of, produce_requests, running_router

pytestmark = pytest.mark.integration


def rid() -> str:
    return uuid.uuid4().hex


def embed(text: str) -> InferenceRequest:
    return InferenceRequest(request_id=rid(), model="text-embed", texts=[text])


async def test_canary_weights_stickiness_and_rollback_under_ten_seconds(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    await publish_route(kafka, topics.control, RouteSpec(model="text-embed", versions={"1": 1}))
    canary = RouteSpec(model="text-embed", versions={"1": 0.8, "2": 0.2})
    stored = await publish_route(kafka, topics.control, canary)
    assert stored.revision == 2 and stored.previous is not None
    work = topics.work("text-embed", "cpu")
    n, sticky_keys = 1000, [f"user-{i}".encode() for i in range(10)]
    requests = [embed(f"request {i}") for i in range(n)]
    repeats = [embed(f"repeat {i}") for i in range(100)]
    async with TopicReader(kafka, work) as reader, running_router(kafka, topics) as router:
        await produce_requests(kafka, topics.requests, requests)
        await produce_requests(
            kafka, topics.requests, repeats, keys=[sticky_keys[i % 10] for i in range(100)]
        )
        await reader.wait_count(n + 100, timeout=120)
        versions = Counter(
            header_of(r, VERSION) for r in reader.records if r.key not in sticky_keys
        )
        by_key: dict[bytes, set[str | None]] = {}
        for rec in reader.records:
            if rec.key in sticky_keys:
                by_key.setdefault(rec.key, set()).add(header_of(rec, VERSION))

        # Rollback: time from publishing it to the first request routed by the old spec,
        # probing with a key the canary sends to version 2.
        key_on_2 = next(k for k, v in by_key.items() if v == {"2"})
        seen = len(reader.records)
        started = time.monotonic()
        await rollback_route(kafka, topics.control, "text-embed")
        took = None
        while took is None and time.monotonic() - started < 30:
            await produce_requests(kafka, topics.requests, [embed("probe")], keys=[key_on_2])
            await reader.wait_count(seen + 1)
            seen = len(reader.records)
            if header_of(reader.records[-1], VERSION) == "1":
                took = time.monotonic() - started
        applied = router.control.state.route("text-embed")
    counted = sum(versions.values())
    share = versions["2"] / counted
    print(f"canary share of version 2 over {counted} requests: {share:.3f} (weight 0.2)")
    assert counted == n and set(versions) == {"1", "2"}
    assert abs(share - 0.2) < 0.04, versions
    assert all(len(v) == 1 for v in by_key.values()), f"a key changed version: {by_key}"
    assert took is not None, "rollback never took effect"
    print(f"rollback took effect in {took:.2f} s (publish -> first request routed by it)")
    assert took < 10.0
    assert applied is not None and applied.versions == {"1": 1} and applied.revision == 3
    assert (await read_routes(kafka, topics.control))["text-embed"].versions == {"1": 1}


async def test_identical_request_is_answered_from_the_cache(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings, client: Client
) -> None:
    first, again = embed("the cache test sentence"), embed("the cache test sentence")
    other = embed("a different sentence")
    async with run_worker("text-embed"), running_router(kafka, topics) as router:
        via_router = Client(settings=client._settings.model_copy(update={"via_router": True}))
        async with via_router:
            computed = await via_router.submit(first)
            cached = await via_router.submit(again)
            fresh = await via_router.submit(other)
        stats = dict(router.stats)
    assert computed.status is Status.OK and not computed.cached
    assert cached.status is Status.OK and cached.cached
    assert cached.request_id == again.request_id
    assert cached.outputs == computed.outputs
    assert fresh.status is Status.OK and not fresh.cached
    assert stats["cached"] == 1 and stats["routed"] == 2


async def test_worker_drops_a_cancelled_request_before_running_it(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    doomed, kept = embed("never run this"), embed("run this")
    await publish_cancel(kafka, topics.control, doomed.request_id)
    # Straight to the work topic: the router never sees it, the worker must.
    await produce_requests(kafka, topics.work("text-embed", "cpu"), [doomed, kept])
    async with TopicReader(kafka, topics.results) as results, run_worker("text-embed"):
        answers = await results.wait_count(2)
        await asyncio.sleep(0.5)
    by_id = {decode_result(r.value).request_id: decode_result(r.value) for r in answers}
    assert len(results.records) == 2
    assert by_id[doomed.request_id].status is Status.REJECTED
    assert by_id[doomed.request_id].error.code == "cancelled"
    assert by_id[doomed.request_id].timings.batch_size == 0, "a cancelled request ran"
    assert by_id[kept.request_id].status is Status.OK


async def test_worker_drops_a_queued_request_cancelled_before_its_batch_runs(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    queued = embed("wait in the batcher")
    # A 30 s queue delay keeps a lone request waiting in the batcher (idle dispatch off:
    # by default an idle backend starts a lone request at once).
    async with (
        TopicReader(kafka, topics.results) as results,
        run_worker("text-embed", max_queue_delay_microseconds=30_000_000, idle_dispatch=False),
    ):
        await produce_requests(kafka, topics.work("text-embed", "cpu"), [queued])
        await asyncio.sleep(2.0)  # consumed and queued by now
        assert results.records == []
        await publish_cancel(kafka, topics.control, queued.request_id)
        [answer] = await results.wait_count(1, timeout=60)
    result = decode_result(answer.value)
    assert result.status is Status.REJECTED and result.error is not None
    assert result.error.code == "cancelled" and result.timings.batch_size == 0
