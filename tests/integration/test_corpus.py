"""Every class of the bad-input corpus (tests/corpus) through real workers and a real broker.

Each case gets exactly one result with its status and stable error code (its
request_id is recoverable: the record key), a DLQ record with the same code
and the original bytes, and the workers keep serving afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from sluicegate.ops.samples import render_text_image
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import ImageInput, InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client

from ..corpus import all_cases
from ..corpus.images import IMAGE_ROOT
from .conftest import WorkerFactory
from .test_end_to_end import read_all

pytestmark = pytest.mark.integration


async def test_every_corpus_case_is_answered_dead_lettered_and_the_workers_keep_serving(
    run_worker: WorkerFactory, client: Client, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    cases = all_cases()
    producer = AIOKafkaProducer(max_request_size=kafka.max_request_size, **kafka.client_kwargs())
    await producer.start()
    fast = {"max_queue_delay_microseconds": 20_000}
    async with contextlib.AsyncExitStack() as workers:
        await workers.enter_async_context(run_worker("text-embed", **fast))
        await workers.enter_async_context(
            run_worker("ocr", options={"image_root": str(IMAGE_ROOT)}, **fast)
        )
        try:
            for case in cases:
                await producer.send_and_wait(
                    topics.work(case.model, "cpu"),
                    case.value,
                    key=case.request_id.encode(),
                    headers=case.headers,
                )
        finally:
            await producer.stop()
        # The workers still serve, both models.
        page = render_text_image("still serving 42", glyph_px=32)
        after = await asyncio.gather(
            client.submit(
                InferenceRequest(request_id=uuid.uuid4().hex, model="text-embed", texts=["ok"])
            ),
            client.submit(
                InferenceRequest(
                    request_id=uuid.uuid4().hex, model="ocr", images=[ImageInput.inline(page)]
                )
            ),
        )
    assert [r.status for r in after] == [Status.OK, Status.OK]

    results = [decode_result(v, h) for v, h in await read_all(kafka, topics.results)]
    counts = Counter(r.request_id for r in results)
    by_id = {r.request_id: r for r in results}
    letters = [
        (value, DeadLetter.from_headers(h)) for value, h in await read_all(kafka, topics.dlq)
    ]
    dead = {letter.request_id: (value, letter) for value, letter in letters}
    problems = []
    for case in cases:
        result = by_id.get(case.request_id)
        if result is None or counts[case.request_id] != 1:
            problems.append(f"{case.name}: {counts[case.request_id]} results")
            continue
        got = (result.status.value, result.error.code if result.error else None)
        if got != (case.status, case.code):
            problems.append(f"{case.name}: got {got}, expected {(case.status, case.code)}")
        if case.dlq:
            value, letter = dead.get(case.request_id, (None, None))
            if letter is None or letter.code != case.code or value != case.value:
                problems.append(f"{case.name}: DLQ record {letter}")
        elif case.request_id in dead:
            problems.append(f"{case.name}: unexpected DLQ record")
        if result.error is not None and not result.error.message:
            problems.append(f"{case.name}: error without a message")
    assert not problems, "\n".join(problems)
