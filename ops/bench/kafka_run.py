"""(b)-(d): a real worker process fed through Kafka at an open-loop rate.

The worker runs as its own process (`sluicegate worker`, configured through
`SLUICEGATE_*` variables, as in production) so the load generator does not
share its event loop or GIL. The generator produces pre-encoded requests at
their scheduled times, reads every result and the worker's batch telemetry,
and samples the worker's RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sluicegate.ops.stack.process import ManagedProcess
from sluicegate.runtime.kafka import KafkaSettings, wait_for_partitions
from sluicegate.schemas.codec import decode_result, decode_telemetry, encode, headers
from sluicegate.schemas.models import ImageInput, InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.topology import default_topics, delete_topics, ensure_topics

from .points import BatchStat, Point, summarise
from .workload import Item, Workload

__all__ = [
    "BenchTopics",
    "KafkaRun",
    "RssProbe",
    "bench_topics",
    "probed_process",
    "triton_probe",
    "worker_process",
]


@dataclass(frozen=True)
class BenchTopics:
    topics: TopicSettings
    group: str


@asynccontextmanager
async def bench_topics(kafka: KafkaSettings, tag: str) -> AsyncIterator[BenchTopics]:
    """Topics and a consumer group of this run alone, deleted afterwards."""
    prefix = f"bench.{tag}.{uuid.uuid4().hex[:6]}"
    topics = TopicSettings.prefixed(prefix)
    created = default_topics(topics)
    await ensure_topics(kafka, created)
    try:
        yield BenchTopics(topics=topics, group=f"{prefix}.group")
    finally:
        await delete_topics(kafka, created)


@asynccontextmanager
async def worker_process(
    *,
    model: str,
    kafka: KafkaSettings,
    triton_url: str,
    run: BenchTopics,
    env: Mapping[str, str],
    state_dir: Path,
) -> AsyncIterator[RssProbe]:
    """A `sluicegate worker` process on `run`'s topics; stopped (drained) on exit."""
    name = f"bench-{run.group.split('.')[2]}-{model}"
    proc = ManagedProcess(name=name, state_dir=state_dir)
    ready = state_dir / f"{name}.ready"
    t = run.topics
    child = dict(os.environ)
    child.update(
        {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": triton_url,
            "SLUICEGATE_TOPICS__RESULTS": t.results,
            "SLUICEGATE_TOPICS__TELEMETRY": t.telemetry,
            "SLUICEGATE_TOPICS__DLQ": t.dlq,
            "SLUICEGATE_TOPICS__WORK_PREFIX": t.work_prefix,
            "SLUICEGATE_GROUP_ID": run.group,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
    )
    argv = [sys.executable, "-m", "sluicegate", "worker", "--model", model]
    async with probed_process(
        proc, [*argv, "--ready-file", str(ready)], child, ready, what=f"bench worker {name}"
    ) as probe:
        yield probe


@asynccontextmanager
async def probed_process(
    proc: ManagedProcess, argv: list[str], env: Mapping[str, str], ready: Path, *, what: str
) -> AsyncIterator[RssProbe]:
    """`proc` started with `argv`, once it has touched `ready`, with its RSS sampled;
    stopped (SIGTERM, then a 60 s grace) on exit."""
    proc.start(argv, env=dict(env))
    try:
        await asyncio.to_thread(proc.wait_for, ready, what=what)
        pid = proc.pid()
        assert pid is not None
        probe = RssProbe(pid)
        probe.start()
        try:
            yield probe
        finally:
            await probe.stop()
    finally:
        await asyncio.to_thread(proc.stop, grace=60)


class RssProbe:
    """Samples the resident set size of a process and its children every 100 ms.

    `peak_mb` is the largest total seen. With children: Triton runs each
    Python-backend model instance in a stub process of its own.
    """

    def __init__(self, pid: int, *, children: bool = False) -> None:
        self._proc = psutil.Process(pid)
        self._children = children
        self.peak_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    def reset(self) -> None:
        self.peak_mb = 0.0

    def _rss_mb(self) -> float:
        procs = [self._proc, *(self._proc.children(recursive=True) if self._children else ())]
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / 2**20

    async def _sample(self) -> None:
        while self._proc.is_running():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def triton_probe(grpc_url: str) -> RssProbe | None:
    """An `RssProbe` over the tritonserver serving `grpc_url` (host:port) and its model stubs."""
    port = grpc_url.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "tritonserver" and f"--grpc-port={port}" in cmdline:
            return RssProbe(proc.pid, children=True)
    return None


def _request_bytes(rid: str, item: Item, deadline_ms: int) -> bytes:
    request = InferenceRequest(
        request_id=rid,
        model=item.model,
        texts=list(item.inputs.texts),
        images=[ImageInput.inline(data) for data in item.inputs.images],
        deadline_ms=deadline_ms,
    )
    return encode(request)


class KafkaRun:
    """A load generator on one run's topics: produces requests, reads results and telemetry."""

    def __init__(self, kafka: KafkaSettings, run: BenchTopics) -> None:
        self._kafka = kafka
        self._run = run
        self._done: dict[str, tuple[float, str]] = {}
        # Each result's `timings.queue_ms`: admission to batch start (idle_dispatch.py).
        self.queue_ms: dict[str, float] = {}
        self._batches: list[tuple[float, BatchStat]] = []
        self._arrived = asyncio.Event()

    @property
    def batches(self) -> list[BatchStat]:
        """Every batch event the worker has reported on this run."""
        return [stat for _, stat in self._batches]

    @asynccontextmanager
    async def started(self) -> AsyncIterator[KafkaRun]:
        kw = self._kafka.client_kwargs()
        producer = AIOKafkaProducer(
            acks="all", linger_ms=1, max_request_size=self._kafka.max_request_size, **kw
        )
        results = AIOKafkaConsumer(enable_auto_commit=False, **kw)
        telemetry = AIOKafkaConsumer(enable_auto_commit=False, **kw)
        await producer.start()
        await results.start()
        await telemetry.start()
        readers: list[asyncio.Task[None]] = []
        try:
            for consumer, topic in (
                (results, self._run.topics.results),
                (telemetry, self._run.topics.telemetry),
            ):
                parts = await _partitions(self._kafka, topic)
                consumer.assign(parts)
                await consumer.seek_to_end(*parts)
                for tp in parts:
                    await consumer.position(tp)
            self._producer = producer
            readers = [
                asyncio.create_task(self._read_results(results)),
                asyncio.create_task(self._read_telemetry(telemetry)),
            ]
            yield self
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await telemetry.stop()
            await results.stop()
            await producer.stop()

    async def _read_results(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.monotonic()
            for records in batches.values():
                for rec in records:
                    result = decode_result(rec.value, rec.headers)
                    self._done.setdefault(result.request_id, (now, result.status.value))
                    self.queue_ms.setdefault(result.request_id, result.timings.queue_ms)
            if batches:
                self._arrived.set()

    async def _read_telemetry(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.monotonic()
            for records in batches.values():
                for rec in records:
                    event = decode_telemetry(rec.value, rec.headers)
                    if event.kind == "batch":
                        real = event.tokens if event.pixels == 0 else event.pixels
                        self._batches.append(
                            (now, BatchStat(event.batch_size, real, event.padded_cost))
                        )

    async def point(
        self,
        workload: Workload,
        *,
        mode: str,
        arrivals: Sequence[float],
        offered_rps: float,
        max_latency_s: float,
        first_index: int,
        on_done: Callable[[int], None] | None = None,
    ) -> Point:
        """Send `arrivals` (offsets, s) open-loop; wait until each is answered."""
        topic = self._run.topics.work(workload.model, "cpu")
        wall0 = time.time()
        payloads = []
        for k, offset in enumerate(arrivals):
            rid = f"{mode}-{first_index + k}"
            deadline_ms = int((wall0 + 1.0 + offset + max_latency_s) * 1000)
            payloads.append((rid, _request_bytes(rid, workload.item(first_index + k), deadline_ms)))
        sent_at: dict[str, float] = {}
        start = time.monotonic() + 1.0  # the deadlines above assume this start
        batches_before = len(self._batches)
        for (rid, value), offset in zip(payloads, arrivals, strict=True):
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[rid] = start + offset
            await self._producer.send(topic, value, key=rid.encode(), headers=headers())
        await self._producer.flush()
        give_up = time.monotonic() + max_latency_s + 30
        while time.monotonic() < give_up:
            answered = sum(1 for rid in sent_at if rid in self._done)
            if on_done:
                on_done(answered)
            if answered == len(sent_at):
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), 0.5)
            except TimeoutError:
                pass
        # Batch events of this point: those read since it began.
        batches = [stat for _, stat in self._batches[batches_before:]]
        return summarise(
            mode=mode,
            workload=workload.name,
            offered_rps=offered_rps,
            sent_at=sent_at,
            done=self._done,
            batches=batches,
        )


async def _partitions(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    try:
        return await wait_for_partitions(kafka, topic, timeout=5.0)
    except TimeoutError:
        raise RuntimeError(f"topic {topic!r} did not appear") from None
