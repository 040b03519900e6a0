"""SIGTERM drains a worker: in-flight batches finish, offsets are committed, exit 0,
and a restarted worker answers the rest; no request is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from sluicegate.ops.samples import render_page
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result
from sluicegate.schemas.models import ImageInput, InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client

from .test_end_to_end import read_all

pytestmark = pytest.mark.integration


def start_worker(stack: LocalStack, topics: TopicSettings, ready: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": stack.settings.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": stack.settings.triton_url,
            "SLUICEGATE_TRITON__ADMIN_KEY": stack.triton.admin_key(),
            "SLUICEGATE_TOPICS__RESULTS": topics.results,
            "SLUICEGATE_TOPICS__TELEMETRY": topics.telemetry,
            "SLUICEGATE_TOPICS__DLQ": topics.dlq,
            "SLUICEGATE_TOPICS__WORK_PREFIX": topics.work_prefix,
            "SLUICEGATE_GROUP_ID": f"{topics.work_prefix}.group",
            "SLUICEGATE_BATCH__MAX_BATCH_SIZE": "2",
        }
    )
    ready.unlink(missing_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluicegate",
            "worker",
            "--model",
            "ocr",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_ready(proc: subprocess.Popen[bytes], ready: Path) -> None:
    for _ in range(600):
        if await asyncio.to_thread(ready.exists):
            return
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()[-3000:]
        await asyncio.sleep(0.1)
    raise AssertionError("worker did not join its group in 60 s")


async def test_sigterm_drains_commits_and_a_restart_answers_the_rest(
    stack: LocalStack, kafka: KafkaSettings, topics: TopicSettings, client: Client, tmp_path: Path
) -> None:
    count = 16
    image = ImageInput.inline(render_page(["Gate 7 opens at 06:15"], glyph_px=32))
    requests = [
        InferenceRequest(request_id=f"life-{i}-{uuid.uuid4().hex[:6]}", model="ocr", images=[image])
        for i in range(count)
    ]
    ready = tmp_path / "worker.ready"
    worker = start_worker(stack, topics, ready)
    try:
        await wait_ready(worker, ready)
        first = client.expect(requests[0].request_id)
        for request in requests:
            await client.send(request)
        await client.wait(requests[0].request_id, first, timeout=120)
        worker.send_signal(signal.SIGTERM)  # mid-stream: later batches are still queued
        output = (await asyncio.to_thread(worker.communicate, timeout=90))[0].decode()
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output[-3000:]
    assert "worker stopping" in output

    answered = {decode_result(v, h).request_id for v, h in await read_all(kafka, topics.results)}
    assert 0 < len(answered) < count, "SIGTERM came too late to test a drain"
    # Everything below each committed offset was answered (nothing committed unanswered).
    work = topics.work("ocr", "cpu")
    consumer = AIOKafkaConsumer(
        work,
        group_id=f"{topics.work_prefix}.group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka.client_kwargs(),
    )
    await consumer.start()
    try:
        parts = [TopicPartition(work, p) for p in sorted(consumer.partitions_for_topic(work) or [])]
        committed = {tp: (await consumer.committed(tp)) or 0 for tp in parts}
    finally:
        await consumer.stop()
    records = await read_all(kafka, work, settle=1.0)
    assert len(records) == count
    assert sum(committed.values()) <= len(answered)

    restarted = start_worker(stack, topics, ready)
    try:
        await wait_ready(restarted, ready)
        deadline = asyncio.get_running_loop().time() + 180
        results = {}
        while len(results) < count and asyncio.get_running_loop().time() < deadline:
            for value, hdrs in await read_all(kafka, topics.results, settle=1.0):
                result = decode_result(value, hdrs)
                results.setdefault(result.request_id, result)
    finally:
        restarted.send_signal(signal.SIGTERM)
        await asyncio.to_thread(restarted.communicate, timeout=90)
    assert set(results) == {r.request_id for r in requests}, "a request was lost"
    assert all(r.status is Status.OK for r in results.values())
