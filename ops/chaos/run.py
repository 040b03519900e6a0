"""One chaos run: seed unique requests, inject a fault, read every result back.

Requests go to the run's request topic, through `sluicegate router`
processes (in the run's delivery mode) to the work topic and the workers,
so every scenario tests the whole path, router included.

The proof follows Kafka's own `transactions_test.py`: every request has a
unique id; results are read with a `read_committed` consumer from the start
of the results topic; at the end (every id answered, or the run's time
bound passed) the routers, then the workers, are stopped with SIGTERM, the topic is read to its
end, and the run counts lost ids (sent, never answered) and duplicated ids
(answered more than once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    ensure_topics,
    streams_topics,
)

from .stack import MODEL, ChaosStack

Mode = str  # "at_least_once" | "exactly_once"
Inject = Callable[["ChaosRun"], Coroutine[Any, Any, None]]


@dataclass(frozen=True, kw_only=True)
class Options:
    """Sizes of the faults; the defaults are `sluicegate chaos run`'s, tests shrink them."""

    kills: int = 5  # kill -9s in kill-worker
    burst_s: float = 60.0  # overload burst length
    slow_s: float = 30.0  # how long Triton stays slowed in slow-triton


@dataclass
class Report:
    scenario: str
    mode: Mode
    sent: int = 0
    results: int = 0  # result records read (duplicates included)
    lost: int = 0
    duplicated: int = 0  # extra result records beyond one per request
    by_status: Counter[str] = field(default_factory=Counter)
    max_worker_rss_mb: float = 0.0
    faults: list[str] = field(default_factory=list)
    rebalances: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        if self.lost > 0 or self.timed_out:
            return False
        return self.mode != "exactly_once" or self.duplicated == 0


class ChaosRun:
    """Shared state of one run; scenarios inject faults through it."""

    def __init__(
        self,
        *,
        stack: ChaosStack,
        scenario: str,
        mode: Mode,
        requests: int,
        workers: int = 2,
        routers: int = 1,
        partitions: int = 6,
        replication: int = 1,
        timeout_s: float | None = None,
        options: Options | None = None,
    ) -> None:
        self.stack = stack
        self.options = options or Options()
        self.mode = mode
        self.requests = requests
        self.initial_workers = workers
        self.initial_routers = routers
        self.partitions = partitions
        self.replication = replication
        self.timeout_s = timeout_s or 180 + requests / 25
        prefix = f"chaos{uuid.uuid4().hex[:8]}"
        self.topics = TopicSettings.prefixed(prefix)
        self.group = f"{prefix}.workers"
        self.router_group = f"{prefix}.router"
        self.work_topic = self.topics.work(MODEL, "cpu")
        self.report = Report(scenario=scenario, mode=mode)
        self.sent_ids: set[str] = set()
        self.seen: Counter[str] = Counter()
        self._progress = asyncio.Event()
        self.seed_deadline_s: float | None = None  # seconds from send to deadline_ms

    # -- what scenarios use -------------------------------------------------------

    def fault(self, what: str) -> None:
        self.report.faults.append(f"{self.elapsed():.0f}s {what}")

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def answered(self) -> int:
        return len(self.seen)

    async def until_answered(self, fraction: float) -> None:
        """Wait until `fraction` of the requests sent so far has a result."""
        while self.answered() < fraction * max(1, self.requests):
            self._progress.clear()
            await self._progress.wait()

    async def blocking(self, fn: Callable[[], object]) -> None:
        await asyncio.to_thread(fn)

    def start_worker(self, name: str, *, wait: bool = True) -> None:
        self.stack.start_worker(
            name, topics=self.topics, group=self.group, mode=self.mode, wait=wait
        )

    def start_router(self, name: str, *, wait: bool = True) -> None:
        self.stack.start_router(
            name, topics=self.topics, group=self.router_group, mode=self.mode, wait=wait
        )

    async def seed(self, count: int, *, deadline_s: float | None = None, rate: float = 0) -> None:
        """Produce `count` new unique requests (at `rate` per second when positive)."""
        producer = AIOKafkaProducer(
            acks="all", enable_idempotence=True, linger_ms=5, **self._kafka()
        )
        await producer.start()
        try:
            acks = []
            started = time.monotonic()
            for i in range(count):
                rid = f"r{len(self.sent_ids):07d}-{uuid.uuid4().hex[:6]}"
                deadline = None
                if deadline_s is not None:
                    deadline = time.time_ns() // 1_000_000 + int(deadline_s * 1000)
                request = InferenceRequest(
                    request_id=rid,
                    model=MODEL,
                    texts=[f"chaos request {rid} " + "tokens " * (i % 24)],
                    deadline_ms=deadline,
                )
                acks.append(
                    await producer.send(
                        self.topics.requests, encode(request), key=rid.encode(), headers=headers()
                    )
                )
                self.sent_ids.add(rid)
                if rate > 0 and (ahead := started + (i + 1) / rate - time.monotonic()) > 0:
                    await asyncio.sleep(ahead)
            await asyncio.gather(*acks)
        finally:
            await producer.stop()

    # -- the run ------------------------------------------------------------------

    async def execute(self, inject: Inject, *, seed: bool = True) -> Report:
        self._started = time.monotonic()
        await ensure_topics(
            self.stack.kafka_settings(),
            default_topics(self.topics) + streams_topics(self.topics),
            partitions=self.partitions,
            replication=self.replication,
            compacted=compacted_topics(self.topics),
        )
        for i in range(self.initial_routers):
            await self.blocking(lambda i=i: self.start_router(f"router{i}"))  # type: ignore[misc]
        for i in range(self.initial_workers):
            await self.blocking(lambda i=i: self.start_worker(f"w{i}"))  # type: ignore[misc]
        self._last_read = time.monotonic()
        reader = asyncio.create_task(self._read())
        sampler = asyncio.create_task(self._sample())
        try:
            if seed:
                await self.seed(self.requests)
            injector = asyncio.create_task(inject(self))
            try:
                async with asyncio.timeout(self.timeout_s):
                    await injector
                    while self.answered() < len(self.sent_ids):
                        self._progress.clear()
                        await self._progress.wait()
            except TimeoutError:
                self.report.timed_out = True
                self.report.notes.append(f"not finished in {self.timeout_s:.0f} s")
                injector.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await injector
            # Stop the routers, then the workers (they drain and commit); read to the end.
            for name in self.stack.running_routers() + self.stack.running_workers():
                await self.blocking(lambda name=name: self.stack.stop_worker(name))  # type: ignore[misc]
            await self._quiet(3.0)
        finally:
            sampler.cancel()
            reader.cancel()
            for task in (sampler, reader):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self._finish()

    def _finish(self) -> Report:
        r = self.report
        r.sent = len(self.sent_ids)
        r.results = sum(self.seen.values())
        r.lost = len(self.sent_ids - set(self.seen))
        r.duplicated = sum(n - 1 for n in self.seen.values() if n > 1)
        r.rebalances = self.stack.rebalances()
        r.seconds = round(self.elapsed(), 1)
        return r

    def _kafka(self) -> dict[str, object]:
        return self.stack.kafka_settings().client_kwargs()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topics.results,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            **self._kafka(),
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for rec in records:
                        result = decode_result(rec.value, list(rec.headers))
                        if self.seen[result.request_id] == 0:
                            self.report.by_status[result.status.value] += 1
                        self.seen[result.request_id] += 1
                        self._last_read = time.monotonic()
                self._progress.set()
        finally:
            await consumer.stop()

    async def _quiet(self, seconds: float) -> None:
        """Return once the reader saw nothing new for `seconds`."""
        while True:
            idle = time.monotonic() - self._last_read
            if idle >= seconds:
                return
            await asyncio.sleep(seconds - idle)

    async def _sample(self) -> None:
        while True:
            rss = await asyncio.to_thread(self.stack.worker_rss_mb)
            self.report.max_worker_rss_mb = max(self.report.max_worker_rss_mb, round(rss, 1))
            await asyncio.sleep(0.5)
