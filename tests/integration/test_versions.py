"""Model versions and precision variants served for real, and the automatic rollback.

The session stack's repository (built with `rollback_drill=True`) serves
text-embed v1 (int8 MiniLM, shipped), v2 (fp32 MiniLM), text-embed-fp16 v2,
and v3 (v1's weights failing on ~half of the inputs: the broken canary).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from sluicegate.ops.samples import render_text_image
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_telemetry
from sluicegate.schemas.control import RouteGuards, RouteSpec
from sluicegate.schemas.models import (
    ImageInput,
    InferenceRequest,
    InferenceResult,
    Status,
    TelemetryEvent,
)
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client
from sluicegate.streams.control import publish_route, read_routes
from sluicegate.streams.records import RollbackEvent, decode_rollup

from .conftest import WorkerFactory
from .streams_helpers import TopicReader, header_of, running_router
from .test_telemetry import running_rollups

pytestmark = pytest.mark.integration


def embed(text: str, **params: str) -> InferenceRequest:
    return InferenceRequest(
        request_id=uuid.uuid4().hex, model="text-embed", texts=[text], parameters=params
    )


def vector(result: InferenceResult) -> np.ndarray:
    assert result.status is Status.OK, result.error
    return np.asarray(result.outputs["embedding"], dtype=np.float64)


def _via_router(client: Client) -> Client:
    return Client(settings=client._settings.model_copy(update={"via_router": True}))


async def test_a_50_50_canary_returns_both_versions_with_different_outputs(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings, client: Client
) -> None:
    await publish_route(
        kafka, topics.control, RouteSpec(model="text-embed", versions={"1": 1, "2": 1})
    )
    requests = [embed("the canary sentence about an overdue invoice") for _ in range(24)]
    async with run_worker("text-embed"), running_router(kafka, topics, cache_ttl_s=0):
        async with _via_router(client) as via:
            results = await asyncio.gather(*(via.submit(r) for r in requests))
    by_version: dict[str, list[InferenceResult]] = {}
    for result in results:
        by_version.setdefault(result.model_version, []).append(result)
    print({v: len(rs) for v, rs in by_version.items()})
    assert set(by_version) == {"1", "2"}, "a 50/50 canary served one version"
    assert {(r.precision, r.device_kind, r.pool) for r in by_version["1"]} == {
        ("int8", "cpu", "cpu")
    }
    assert {(r.precision, r.device_kind, r.pool) for r in by_version["2"]} == {
        ("fp32", "cpu", "cpu")
    }
    one, two = vector(by_version["1"][0]), vector(by_version["2"][0])
    assert all(np.array_equal(vector(r), one) for r in by_version["1"])
    cosine = float(one @ two)
    print(f"cosine(v1 int8, v2 fp32) on one sentence: {cosine:.6f}")
    assert 0.98 < cosine < 0.99999, "two versions must be two different builds"


async def test_pinned_precision_versions_and_what_ran_in_results_telemetry_and_dlq(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings, client: Client
) -> None:
    text = "a sentence embedded at two precisions"
    half = embed(text, model_version="2", precision="fp16")
    full = embed(text, model_version="2", precision="fp32")
    missing = embed(text, model_version="7")
    no_variant = embed(text, model_version="1", precision="fp16")
    async with (
        TopicReader(kafka, topics.telemetry) as telemetry,
        TopicReader(kafka, topics.dlq) as dlq,
        run_worker("text-embed"),
    ):
        got = {r.request_id: r for r in [await client.submit(q) for q in (half, full)]}
        got |= {r.request_id: r for r in [await client.submit(q) for q in (missing, no_variant)]}
        await dlq.wait_count(2, timeout=60)
        await telemetry.wait_for(
            lambda recs: any(e.request_id == half.request_id for e in request_events(recs)),
            timeout=60,
        )
    a, b = got[half.request_id], got[full.request_id]
    assert (a.model_version, a.precision, b.model_version, b.precision) == (
        "2",
        "fp16",
        "2",
        "fp32",
    )
    cosine = float(vector(a) @ vector(b))
    print(f"cosine(v2 fp16, v2 fp32): {cosine:.7f}")
    assert cosine > 0.999 and not np.array_equal(vector(a), vector(b))
    gone, none = got[missing.request_id], got[no_variant.request_id]
    assert gone.status is Status.ERROR and gone.error is not None
    assert gone.error.code == "version_unavailable" and "1 (int8)" in gone.error.message
    assert none.status is Status.ERROR and none.error is not None
    assert none.error.code == "precision_unavailable"
    codes = sorted(header_of(r, "sg-dlq-code") for r in dlq.records)
    assert codes == ["precision_unavailable", "version_unavailable"]
    [event] = [e for e in request_events(telemetry.records) if e.request_id == half.request_id]
    assert (event.model_version, event.precision, event.device_kind) == ("2", "fp16", "cpu")
    assert event.tokens > 0 and event.pixels == 0


async def test_ocr_serves_two_builds_that_differ_measurably(
    run_worker: WorkerFactory, client: Client
) -> None:
    image = ImageInput.inline(render_text_image("Sluice gate 7 opens at 06:15", glyph_px=32))
    asked = [
        InferenceRequest(
            request_id=uuid.uuid4().hex,
            model="ocr",
            images=[image],
            parameters={"model_version": version},
        )
        for version in ("1", "2")
    ]
    async with run_worker("ocr"):
        one, two = [await client.submit(r) for r in asked]
    assert one.status is Status.OK and two.status is Status.OK, (one.error, two.error)
    assert (one.model_version, one.precision) == ("1", "fp32")
    assert (two.model_version, two.precision) == ("2", "fp32+int8")
    print(
        f"ocr v1 {one.outputs['text']!r} {one.outputs['score']:.4f}; "
        f"v2 {two.outputs['text']!r} {two.outputs['score']:.4f}"
    )
    assert one.outputs["score"] != two.outputs["score"], "v2 must be a different build"


async def test_a_broken_canary_is_rolled_back_by_the_rollups_themselves(
    run_worker: WorkerFactory, kafka: KafkaSettings, topics: TopicSettings, client: Client
) -> None:
    await publish_route(kafka, topics.control, RouteSpec(model="text-embed", versions={"1": 1}))
    guards = RouteGuards(max_error_rate=0.2, min_requests=10)
    canary = RouteSpec(model="text-embed", versions={"1": 1, "3": 1}, guards=guards)
    live = await publish_route(kafka, topics.control, canary)
    requests = [embed(f"rollback drill sentence {i}") for i in range(60)]
    async with (
        TopicReader(kafka, topics.telemetry_rollup) as rollups,
        run_worker("text-embed"),
        running_rollups(kafka, topics, metrics_port=0),
        running_router(kafka, topics, cache_ttl_s=0) as router,
        _via_router(client) as via,
    ):
        started = time.monotonic()
        first = await asyncio.gather(*(via.submit(r) for r in requests))
        # Bounded, generous: a 10 s window closes, plus grace, plus the publish.
        await rollups.wait_for(
            lambda recs: any(isinstance(decode_rollup(r.value), RollbackEvent) for r in recs),
            timeout=120,
        )
        took = time.monotonic() - started
        deadline = time.monotonic() + 30
        while (router.control.state.route("text-embed") or live).revision == live.revision:
            assert time.monotonic() < deadline, "the router never saw the rollback"
            await asyncio.sleep(0.1)
        after = await asyncio.gather(*(via.submit(embed(f"after {i}")) for i in range(10)))
    broken = [r for r in first if r.model_version == "3"]
    assert broken and any(r.status is Status.ERROR for r in broken), "v3 never failed"
    [event] = [
        e for e in (decode_rollup(r.value) for r in rollups.records) if isinstance(e, RollbackEvent)
    ]
    print(f"rolled back {took:.1f} s after the canary traffic started: {event.reason}")
    assert event.guard == "error_rate" and event.version == "3" and event.observed > 0.2
    assert (event.from_revision, event.to_revision) == (live.revision, live.revision + 1)
    route = (await read_routes(kafka, topics.control))["text-embed"]
    assert route.versions == {"1": 1} and route.revision == live.revision + 1
    assert {(r.status, r.model_version) for r in after} == {(Status.OK, "1")}


def request_events(records: Sequence[Any]) -> list[TelemetryEvent]:
    """Every request's telemetry: its own event, or its entry in its batch's event."""
    events = [decode_telemetry(r.value) for r in records]
    return [m for e in events for m in (e.members() if e.kind == "batch" else [e])]
