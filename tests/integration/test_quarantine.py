"""A worker killed (SIGKILL) each time it runs one record quarantines that record.

Real worker processes (`sluicegate worker`) on the session's Kafka and
Triton. The record's batch is held, after its attempt is recorded, by the
`SLUICEGATE_CHAOS_STALL_REQUEST` hook (workers/quarantine.py), so each kill
lands mid-batch without timing luck. After `quarantine_after` deaths the next
worker answers it `error`/`poison` with a DLQ record without running it (a
run would stall forever and the test would time out), then serves a good
request.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status
from sluicegate.schemas.settings import TopicSettings

from .streams_helpers import TopicReader

pytestmark = pytest.mark.integration

QUARANTINE_AFTER = 2


def _env(
    stack: LocalStack, kafka: KafkaSettings, topics: TopicSettings, stall: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": stack.settings.triton_url,
            "SLUICEGATE_TRITON__ADMIN_KEY": stack.triton.admin_key(),
            "SLUICEGATE_GROUP_ID": f"{topics.work_prefix}.quarantine.group",
            "SLUICEGATE_QUARANTINE_AFTER": str(QUARANTINE_AFTER),
            "SLUICEGATE_BATCH__MAX_QUEUE_DELAY_MICROSECONDS": "1000",
            "SLUICEGATE_CHAOS_STALL_REQUEST": stall,
        }
    )
    env |= topics.as_env()
    return env


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sluicegate", "worker", "--model", "text-embed"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _produce(kafka: KafkaSettings, topic: str, request: InferenceRequest) -> tuple[int, int]:
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic, encode(request), key=request.request_id.encode(), headers=headers()
        )
        return int(meta.partition), int(meta.offset)
    finally:
        await producer.stop()


async def test_a_record_that_kills_its_worker_repeatedly_is_quarantined(
    stack: LocalStack, kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    poison_id = f"poison-{uuid.uuid4().hex[:8]}"
    env = _env(stack, kafka, topics, stall=poison_id)
    work = topics.work("text-embed", "cpu")
    poison = InferenceRequest(request_id=poison_id, model="text-embed", texts=["kills workers"])
    partition, offset = await _produce(kafka, work, poison)
    log = tmp_path / "workers.log"
    procs: list[subprocess.Popen[bytes]] = []

    key = f"{env['SLUICEGATE_GROUP_ID']}|{work}|{partition}|{offset}".encode()

    def attempts_at(n: int, records: list[Any]) -> bool:
        return any(
            r.topic == topics.attempts and r.key == key and (r.value or b"").startswith(b"%d:" % n)
            for r in records
        )

    def result_of(rid: str, records: list[Any]) -> list[InferenceResult]:
        return [
            decode_result(r.value, list(r.headers))
            for r in records
            if r.topic == topics.results and r.key == rid.encode()
        ]

    try:
        async with TopicReader(kafka, topics.attempts, topics.results, topics.dlq) as reader:
            for death in range(1, QUARANTINE_AFTER + 1):
                proc = _start(env, log)
                procs.append(proc)
                # The attempt is recorded before the batch runs; the hook holds the batch.
                await reader.wait_for(lambda recs, n=death: attempts_at(n, recs), timeout=180)
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 30)
            # The next incarnation answers it poison without running it.
            proc = _start(env, log)
            procs.append(proc)

            await reader.wait_for(lambda recs: bool(result_of(poison_id, recs)), timeout=180)
            (answer,) = result_of(poison_id, reader.records)
            assert answer.status is Status.ERROR
            assert answer.error is not None and answer.error.code == "poison"

            def letters(records: list[Any]) -> list[tuple[str, int]]:
                return [
                    (d.code, d.source_offset)
                    for d in (DeadLetter.from_headers(list(r.headers))
                              for r in records if r.topic == topics.dlq)
                    if d.request_id == poison_id
                ]  # fmt: skip

            # Produced with the result, but read in its own time: wait for it.
            await reader.wait_for(lambda recs: bool(letters(recs)), timeout=60)
            assert letters(reader.records) == [("poison", offset)]
            # The same worker still serves: a good request gets ok.
            good = InferenceRequest(request_id=uuid.uuid4().hex, model="text-embed", texts=["hi"])
            await _produce(kafka, work, good)
            await reader.wait_for(lambda recs: bool(result_of(good.request_id, recs)), timeout=120)
            assert result_of(good.request_id, reader.records)[0].status is Status.OK
            assert proc.poll() is None, log.read_text()[-3000:]
            # Answered: its attempts are tombstoned.
            await reader.wait_for(
                lambda recs: any(
                    r.topic == topics.attempts and r.key == key and r.value is None for r in recs
                ),
                timeout=60,
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(p.wait, 60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    await asyncio.to_thread(p.wait, 10)
