"""`sluicegate dlq replay` on the real broker: filters, dry run, where letters may go back to."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from aiokafka import AIOKafkaProducer

from sluicegate.ops.dlq import REPLAYED_HEADER
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings

from .streams_helpers import TopicReader, header_of

pytestmark = pytest.mark.integration


def _letter(topics: TopicSettings, source: str, code: str, rid: str | None) -> DeadLetter:
    return DeadLetter(
        code=code,
        message="m",
        error_class="E",
        stage="ingress",
        source_topic=source,
        source_partition=0,
        source_offset=7,
        request_id=rid,
    )


async def _sluicegate(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluicegate",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode()


async def test_replay_sends_selected_letters_back_to_their_source_only(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    fixed = InferenceRequest(request_id="fixed-1", model="text-embed", texts=["again"])
    seeded = [
        (encode(fixed), _letter(topics, topics.requests, "reply_to_unwritable", "fixed-1")),
        (b"x", _letter(topics, topics.requests, "unknown_model", "other-1")),
        (b"\xc1", _letter(topics, topics.control, "reply_to_unwritable", "ctl-1")),
        (b"y", _letter(topics, topics.work("ocr", "cpu"), "poison", "w-1")),
    ]
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        for value, letter in seeded:
            await producer.send_and_wait(
                topics.dlq, value, key=b"k", headers=headers() + letter.to_headers()
            )
    finally:
        await producer.stop()
    env = dict(os.environ, SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers)
    env |= topics.as_env()

    async with TopicReader(kafka, topics.requests, topics.work("ocr", "cpu")) as reader:
        rc, out = await _sluicegate(
            env, "dlq", "replay", "--code", "reply_to_unwritable", "--dry-run"
        )
        assert rc == 0, out
        assert "dry run" in out and f"would go to {topics.requests}" in out
        assert f"refused: source {topics.control}" in out  # never back into the control topic
        await asyncio.sleep(2)
        assert reader.records == []  # a dry run sends nothing

        rc, out = await _sluicegate(
            env, "dlq", "replay", "--code", "reply_to_unwritable", "--rate", "50"
        )
        assert rc == 0, out
        await reader.wait_count(1, timeout=60)
        (back,) = [r for r in reader.records if r.topic == topics.requests]
        assert back.value == encode(fixed)
        assert header_of(back, REPLAYED_HEADER) is not None
        assert not any(k.startswith("sg-dlq-") for k, _ in back.headers)

        rc, out = await _sluicegate(env, "dlq", "replay", "--request-id", "w-1")
        assert rc == 0, out
        await reader.wait_for(lambda recs: any(r.value == b"y" for r in recs), timeout=60)
        assert {r.topic for r in reader.records if r.value == b"y"} == {topics.work("ocr", "cpu")}

        rc, out = await _sluicegate(env, "dlq", "replay", "--until", "2001-01-01T00:00")
        assert rc == 1, out  # nothing that old: nothing matched
        assert len(reader.records) == 2
