"""Telemetry rollups against the real broker: windowed percentiles, /metrics, shadow diffs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from sluicegate.ops.stack.process import free_port
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.control import RouteSpec
from sluicegate.schemas.models import InferenceRequest, Status, TelemetryEvent
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client
from sluicegate.streams.control import publish_route
from sluicegate.streams.records import ShadowDiff, WindowRollup, decode_rollup
from sluicegate.streams.telemetry import TelemetryRollups, TelemetrySettings
from sluicegate.streams.windows import RELATIVE_ACCURACY

from .conftest import WorkerFactory
from .streams_helpers import TopicReader, running_router

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running_rollups(
    kafka: KafkaSettings, topics: TopicSettings, **overrides: Any
) -> AsyncIterator[TelemetryRollups]:
    settings = TelemetrySettings(
        kafka=kafka,
        topics=topics,
        telemetry_group_id=f"{topics.telemetry}.rollups",
        telemetry_offset_reset="earliest",
        **overrides,
    )
    service = TelemetryRollups(settings=settings)
    async with asyncio.timeout(60):
        await service.start()
    try:
        yield service
    finally:
        async with asyncio.timeout(60):
            await service.stop()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as page:
        return str(page.read().decode())


def exact_bounds(values: list[float], q: float) -> tuple[float, float]:
    """The order statistics a rank-q quantile may fall between."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    return ordered[int(np.floor(rank))], ordered[min(len(ordered) - 1, int(np.ceil(rank)) + 1)]


def within(value: float, bounds: tuple[float, float]) -> bool:
    lo, hi = bounds
    return lo * (1 - RELATIVE_ACCURACY) - 1e-9 <= value <= hi * (1 + RELATIVE_ACCURACY) + 1e-9


async def test_windowed_percentiles_match_a_direct_computation(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    rng = random.Random(7)
    minute = (time.time_ns() // 1_000_000 // 60_000 - 2) * 60_000  # a closed minute
    events: list[TelemetryEvent] = []
    latencies: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for i in range(900):
        window = i % 3
        queue, compute = rng.lognormvariate(1.5, 0.8), rng.lognormvariate(3.0, 0.6)
        status = Status.ERROR if i % 50 == 0 else Status.OK
        latencies[window].append(queue + compute)
        events.append(
            TelemetryEvent(
                kind="request",
                model="text-embed",
                pool="cpu",
                worker="w1",
                model_version="1",
                ts_ms=minute + window * 10_000 + rng.randrange(10_000),
                status=status,
                request_id=uuid.uuid4().hex,
                batch_size=8,
                queue_ms=queue,
                compute_ms=compute,
            )
        )
    for window in range(3):
        for _ in range(30):  # 30 batches of 10 requests, 40 % padding
            events.append(
                TelemetryEvent(
                    kind="batch",
                    model="text-embed",
                    pool="cpu",
                    worker="w1",
                    model_version="1",
                    ts_ms=minute + window * 10_000 + 5_000,
                    batch_size=10,
                    tokens=120,
                    padded_cost=200,
                )
            )
    rng.shuffle(events)
    port = free_port()
    async with (
        TopicReader(kafka, topics.telemetry_rollup) as reader,
        running_rollups(kafka, topics, metrics_port=port, window_grace_s=1.0),
    ):
        producer = AIOKafkaProducer(linger_ms=10, **kafka.client_kwargs())
        await producer.start()
        try:
            sends = [
                await producer.send(topics.telemetry, encode(e), headers=headers()) for e in events
            ]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        await reader.wait_count(4, timeout=60)
        metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    rollups = [decode_rollup(r.value) for r in reader.records]
    assert all(isinstance(r, WindowRollup) for r in rollups)
    base = {(r.start_ms - minute) // 10_000: r for r in rollups if r.window_s == 10}
    [whole] = [r for r in rollups if r.window_s == 60]
    assert sorted(base) == [0, 1, 2]
    for window, rollup in base.items():
        values = latencies[window]
        assert rollup.requests == len(values) == 300
        for q, got in ((0.5, rollup.latency_ms.p50), (0.95, rollup.latency_ms.p95)):
            assert within(got, exact_bounds(values, q)), (window, q, got)
        assert within(rollup.latency_ms.p99, exact_bounds(values, 0.99))
        assert rollup.batches == 30 and rollup.mean_batch_size == 10
        assert rollup.padding_waste == pytest.approx(0.4)
        assert rollup.throughput_rps == pytest.approx(30.0)
    everything = [v for vs in latencies.values() for v in vs]
    # The minute is the merge of its 10 s sketches, and still matches all its events.
    assert whole.requests == 900 and whole.errors == 18
    assert whole.error_rate == pytest.approx(0.02)
    for q, got in ((0.5, whole.latency_ms.p50), (0.99, whole.latency_ms.p99)):
        assert within(got, exact_bounds(everything, q)), (q, got)
    print(
        f"minute p50/p95/p99 {whole.latency_ms.p50}/{whole.latency_ms.p95}/{whole.latency_ms.p99}"
        f" ms vs exact {np.percentile(everything, [50, 95, 99]).round(3).tolist()}"
    )
    series = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sluicegate_")
    }
    where = 'version="1",window="60s"'  # the exposition sorts labels by name
    p99 = f'sluicegate_latency_ms{{model="text-embed",pool="cpu",quantile="0.99",{where}}}'
    assert series[p99] == whole.latency_ms.p99
    rps = f'sluicegate_throughput_rps{{model="text-embed",pool="cpu",{where}}}'
    assert series[rps] == whole.throughput_rps


async def test_shadow_traffic_is_diffed_and_never_reaches_the_client(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings, client: Client
) -> None:
    spec = RouteSpec(model="text-embed", versions={"1": 1.0}, shadow="2", shadow_fraction=1.0)
    await publish_route(kafka, topics.control, spec)
    texts = ["shadow one", "shadow two", "shadow three", "shadow four", "shadow five"]
    requests = [
        InferenceRequest(request_id=uuid.uuid4().hex, model="text-embed", texts=[t]) for t in texts
    ]
    async with (
        TopicReader(kafka, topics.telemetry_rollup) as rollups,
        TopicReader(kafka, topics.results) as results,
        run_worker("text-embed"),
        running_rollups(kafka, topics, metrics_port=0, shadow_window_s=1.0),
        running_router(kafka, topics, cache_ttl_s=0) as router,
    ):
        via_router = Client(settings=client._settings.model_copy(update={"via_router": True}))
        async with via_router:
            answers = [await via_router.submit(r) for r in requests]
        await rollups.wait_for(
            lambda recs: (
                sum(
                    d.pairs
                    for d in map(lambda r: decode_rollup(r.value), recs)
                    if isinstance(d, ShadowDiff)
                )
                >= len(requests)
            ),
            timeout=60,
        )
        await asyncio.sleep(1.0)
        stats = dict(router.stats)
    diffs = [
        d for d in (decode_rollup(r.value) for r in rollups.records) if isinstance(d, ShadowDiff)
    ]
    assert all(a.status is Status.OK for a in answers)
    assert stats["shadowed"] == len(requests)
    on_results = [decode_result(r.value).request_id for r in results.records]
    assert sorted(on_results) == sorted(r.request_id for r in requests), "one result per request"
    assert sum(d.pairs for d in diffs) == len(requests)
    for diff in diffs:
        assert diff.model == "text-embed" and diff.status_agreement == 1.0
        assert (diff.primary_version, diff.shadow_version) == ("1", "2")
        # Two different builds (v1 int8, v2 fp32 MiniLM): close, measurably not the same.
        print(f"shadow v2 vs v1: mean similarity {diff.mean_similarity}")
        assert 0.98 < diff.mean_similarity < 1.0 and diff.min_similarity < 1.0
