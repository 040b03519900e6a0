"""Kafka -> worker -> Triton -> Kafka with the real broker and the real Triton."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sluicegate.ops.samples import PHRASES, cer, render_text_image
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_telemetry
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.models import ImageInput, InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client

from .conftest import WorkerFactory

pytestmark = pytest.mark.integration


def rid() -> str:
    return uuid.uuid4().hex


async def submit_all(client: Client, requests: list[InferenceRequest]) -> list:
    futures = [client.expect(r.request_id) for r in requests]
    await asyncio.gather(*(client.send(r) for r in requests))
    return [await client.wait(r.request_id, f) for r, f in zip(requests, futures, strict=True)]


async def test_ocr_reads_rendered_text_in_batches(
    run_worker: WorkerFactory, client: Client
) -> None:
    truths = list(PHRASES[:6])
    requests = [
        InferenceRequest(
            request_id=rid(),
            model="ocr",
            images=[ImageInput.inline(render_text_image(t, glyph_px=24 + 8 * (i % 3)))],
        )
        for i, t in enumerate(truths)
    ]
    # The cpu default runs one page per batch (workers/budgets.py); batching is what's tested.
    async with run_worker("ocr", max_batch_size=8, max_queue_delay_microseconds=200_000):
        results = await submit_all(client, requests)
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    assert all(r.status is Status.OK for r in results), [r.error for r in results]
    errors = sum(
        cer(t, r.outputs["text"].replace("\n", " ")) * len(t)
        for t, r in zip(truths, results, strict=True)
    )
    assert errors / sum(map(len, truths)) <= 0.05
    assert max(r.timings.batch_size for r in results) > 1, "requests were never batched"


async def test_text_embed_returns_normalised_embeddings_and_real_token_counts(
    run_worker: WorkerFactory, client: Client
) -> None:
    texts = [
        "A cat sits on the mat.",
        "A kitten is sitting on a rug.",
        "Quarterly tax filing deadline.",
    ]
    requests = [InferenceRequest(request_id=rid(), model="text-embed", texts=[t]) for t in texts]
    async with run_worker("text-embed"):
        results = await submit_all(client, requests)
    assert all(r.status is Status.OK for r in results)
    vecs = [r.outputs["embedding"] for r in results]
    assert all(len(v) == 384 and math.isclose(math.hypot(*v), 1.0, abs_tol=1e-3) for v in vecs)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]) + 0.2
    assert [r.outputs["tokens"] for r in results] == TokenCounter().count(texts)
    assert all(r.model_version and r.pool == "cpu" for r in results)


async def test_doc_match_scores_matching_text_higher(
    run_worker: WorkerFactory, client: Client
) -> None:
    image = ImageInput.inline(render_text_image("Invoice 2041 total due 318.40 EUR", glyph_px=48))
    requests = [
        InferenceRequest(request_id=rid(), model="doc-match", images=[image], texts=[query])
        for query in ("invoice total due in euros", "the weather in the mountains")
    ]
    async with run_worker("doc-match"):
        match, other = await submit_all(client, requests)
    assert match.status is Status.OK and other.status is Status.OK
    assert cer("Invoice 2041 total due 318.40 EUR", match.outputs["ocr_text"]) <= 0.05
    assert match.outputs["similarity"] > other.outputs["similarity"] + 0.1


async def test_passed_deadline_is_answered_expired_without_running(
    run_worker: WorkerFactory, client: Client
) -> None:
    past = time.time_ns() // 1_000_000 - 1_000
    request = InferenceRequest(
        request_id=rid(), model="text-embed", texts=["late"], deadline_ms=past
    )
    async with run_worker("text-embed"):
        result = await client.submit(request)
    assert result.status is Status.EXPIRED
    assert result.error is not None and result.error.code == "deadline_expired"
    assert result.timings.batch_size == 0


async def test_offsets_are_committed_after_results_and_telemetry_is_emitted(
    run_worker: WorkerFactory, client: Client, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    requests = [
        InferenceRequest(request_id=rid(), model="text-embed", texts=[f"text {i}"])
        for i in range(12)
    ]
    async with run_worker("text-embed") as worker:
        results = await submit_all(client, requests)
        group = worker._settings.group()
    assert len(results) == 12
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka.client_kwargs())
    await consumer.start()
    try:
        topic = topics.work("text-embed", "cpu")
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        ends = await consumer.end_offsets(parts)
        committed = {tp: await consumer.committed(tp) or 0 for tp in parts}
        assert committed == ends, "the worker did not commit every answered offset"
    finally:
        await consumer.stop()
    events = await read_all(kafka, topics.telemetry)
    kinds = [decode_telemetry(value, hdrs) for value, hdrs in events]
    # A request's telemetry rides in its batch's event (`members()`), or is its own event.
    requests = [m for e in kinds for m in (e.members() if e.kind == "batch" else [e])]
    assert len(requests) == 12 and all(m.kind == "request" for m in requests)
    assert {m.request_id for m in requests} == {r.request_id for r in results}
    batches = [e for e in kinds if e.kind == "batch"]
    assert sum(e.batch_size for e in batches) == 12
    assert all(e.tokens > 0 and e.padded_cost >= e.tokens for e in batches)


async def read_all(
    kafka: KafkaSettings, topic: str, *, settle: float = 2.0
) -> list[tuple[bytes, list]]:
    consumer = AIOKafkaConsumer(
        topic, auto_offset_reset="earliest", enable_auto_commit=False, **kafka.client_kwargs()
    )
    await consumer.start()
    out: list[tuple[bytes, list]] = []
    try:
        idle_until = time.monotonic() + settle
        while time.monotonic() < idle_until:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    out.append((r.value, list(r.headers)))
                    idle_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return out


async def produce_raw(
    kafka: KafkaSettings, topic: str, value: bytes, key: bytes | None = None
) -> None:
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
