"""The worker engine: Kafka work topic in, batches to a backend, results out.

One consumer (a member of the pool's group) and a `Delivery` (the output
side, `workers.delivery`): at-least-once with one idempotent producer, or
exactly-once with one transactional producer per input partition. Each
record becomes exactly one `InferenceResult`: ok, error, expired or
rejected. Batches may finish in any order; the delivery decides when an
input offset counts as done and commits it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import WireLimits, encode, headers, recover_request_id
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import WireError
from sluicegate.schemas.models import (
    InferenceResult,
    Status,
    TelemetryEvent,
    Timings,
)

from .admission import Admitted, admit
from .answers import Answers, Record, dead_letter, now_ms, total_ms
from .backends.base import InferenceBackend
from .batcher import Batch, BudgetBatcher
from .config import WorkerSettings
from .delivery import AtLeastOnce, Delivery, Outgoing
from .errors import BackendError
from .resilience import Resilient
from .transactions import ExactlyOnce

log = logging.getLogger("sluicegate.worker")


@dataclass(frozen=True, kw_only=True)
class _Job:
    record: Record
    admitted: Admitted
    arrived: float  # engine clock, seconds

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


class Worker:
    """Serves one model on one pool until `stop` is set, then drains and commits."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        backend: InferenceBackend,
        clock: Callable[[], float] = time.monotonic,
        on_ready: Callable[[], object] | None = None,
    ) -> None:
        self._settings = settings
        self._on_ready = on_ready
        self._backend = backend
        self._clock = clock
        self._spec = lookup(settings.model)
        self._topic = settings.topics.work(settings.model, settings.pool)
        self._name = f"{socket.gethostname()}:{os.getpid()}"
        self._batcher: BudgetBatcher[_Job] = BudgetBatcher(policy=settings.policy(), clock=clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight_batches = 0
        self._running_cost = 0  # padded cost of the batches at the backend
        policy = self._batcher.policy
        self._max_in_flight_cost = settings.max_in_flight_cost or 8 * policy.budget
        self._fatal: BaseException | None = None
        self._answers = Answers(model=settings.model, pool=settings.pool, worker=self._name)
        self._counter: TokenCounter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._resilient = Resilient(backend=backend, model=settings.model, settings=settings.triton)
        self._delivery: Delivery = (
            ExactlyOnce(
                kafka=settings.kafka,
                group=settings.group(),
                on_drop=self.forget,
                transaction_timeout_ms=settings.transaction_timeout_ms,
            )
            if settings.delivery == "exactly_once"
            else AtLeastOnce(kafka=settings.kafka)
        )
        self.results_produced = 0
        self._draining = False  # set by _drain: no new batch starts

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def delivery(self) -> Delivery:
        return self._delivery

    async def run(self, stop: asyncio.Event) -> None:
        s = self._settings
        kafka = s.kafka.client_kwargs()
        self._executor = ThreadPoolExecutor(s.preprocess_threads, thread_name_prefix="sg-prep")
        loop = asyncio.get_running_loop()
        self._counter = await loop.run_in_executor(self._executor, TokenCounter)
        version = await self._backend.model_version(s.model)
        self._answers = replace(self._answers, model_version=version)
        try:
            await self._delivery.start()  # raises KafkaConnectError naming the settings to fix
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise
        consumer = AIOKafkaConsumer(
            group_id=s.group(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=s.kafka.max_request_size,
            fetch_max_bytes=4 * s.kafka.max_request_size,
            max_poll_interval_ms=s.max_poll_interval_ms,
            **kafka,
        )
        try:
            consumer.subscribe([self._topic], listener=_Rebalance(self, consumer))
            await consumer.start()
            log.info(
                "worker %s serving %s (model version %s) from %s as group %s, %s",
                self._name,
                s.model,
                version,
                self._topic,
                s.group(),
                s.delivery,
            )
            while not stop.is_set() and self._fatal is None:
                await self._poll_once(consumer)
            await self._drain(consumer)
        finally:
            try:
                await self._delivery.stop(consumer)
            finally:
                await consumer.stop()
                self._executor.shutdown(wait=False, cancel_futures=True)
        if self._fatal is not None:
            raise self._fatal

    # -- the loop ---------------------------------------------------------

    async def _poll_once(self, consumer: AIOKafkaConsumer) -> None:
        self._apply_backpressure(consumer)
        wake = self._batcher.next_wakeup()
        if wake is None or self._in_flight_batches >= self._settings.max_in_flight_batches:
            # Nothing is due, or nothing may start before a batch finishes (and
            # its completion dispatches the next one).
            timeout = 0.2
        else:
            # Never 0: getmany(timeout_ms=0) can return without suspending, and
            # a loop that never suspends starves the in-flight batches.
            timeout = min(0.2, max(0.001, wake - self._clock()))
        batches = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=200)
        records = [rec for recs in batches.values() for rec in recs if self._delivery.accept(rec)]
        if records:
            await self._admit(records)
        self._dispatch()
        await self._commit(consumer)

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        """Pause fetching while too much work is held; getmany keeps the group alive."""
        in_flight_cost = self._batcher.pending_cost() + self._running_cost
        full = (
            self._resilient.breaker.is_open
            or len(self._batcher) >= self._settings.max_pending_requests
            or in_flight_cost >= self._max_in_flight_cost
        )
        if full and not consumer.paused():
            consumer.pause(*consumer.assignment())
            log.info(
                "paused fetching: %d pending, in-flight cost %d", len(self._batcher), in_flight_cost
            )
        elif not full and consumer.paused():
            consumer.resume(*consumer.paused())

    async def _admit(self, records: list[Record]) -> None:
        assert self._executor is not None and self._counter is not None
        counter, spec = self._counter, self._spec
        limits = WireLimits(image_root=self._settings.image_root)

        def admit_all() -> list[Admitted | WireError]:
            out: list[Admitted | WireError] = []
            for rec in records:
                try:
                    out.append(
                        admit(
                            rec.value,
                            list(rec.headers),
                            serving=spec,
                            counter=counter,
                            limits=limits,
                        )
                    )
                except WireError as exc:
                    out.append(exc)
            return out

        outcomes = await asyncio.get_running_loop().run_in_executor(self._executor, admit_all)
        now, wall_ms = self._clock(), now_ms()
        for rec, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, WireError):
                self._refuse_undecodable(rec, outcome)
                continue
            job = _Job(record=rec, admitted=outcome, arrived=now)
            req = outcome.request
            deadline = None
            if req.deadline_ms is not None:
                deadline = now + (req.deadline_ms - wall_ms) / 1000
            rejection = self._batcher.add(
                job, cost=outcome.cost.units, priority=req.priority, deadline=deadline
            )
            if rejection is not None:
                self._answer(
                    job,
                    self._answers.failure(req, Status.REJECTED, "over_budget", rejection.reason),
                )

    def _dispatch(self) -> None:
        for job in self._batcher.take_expired():
            self._answer(
                job,
                self._answers.failure(
                    job.admitted.request,
                    Status.EXPIRED,
                    "deadline_expired",
                    "the request's deadline_ms passed before it could run; "
                    "give it a later deadline",
                ),
            )
        while not self._draining and self._in_flight_batches < self._settings.max_in_flight_batches:
            batch = self._batcher.next_batch()
            if batch is None:
                return
            self._in_flight_batches += 1
            self._spawn(self._run_batch(batch))

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        await self._delivery.commit(consumer)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching; let running batches finish within the grace period; commit."""
        pending = len(self._batcher)
        self._draining = True
        log.info(
            "worker stopping: %d batch(es) in flight, %d request(s) not started "
            "(left uncommitted for the next worker)",
            self._in_flight_batches,
            pending,
        )
        grace_ends = time.monotonic() + self._settings.shutdown_grace_s
        # Tasks spawn tasks (a batch spawns its answers): wait until none is left.
        while self._tasks and (left := grace_ends - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        if self._tasks:
            late = set(self._tasks)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "abandoned %d task(s) after %.0f s grace; their offsets stay uncommitted",
                    len(late),
                    self._settings.shutdown_grace_s,
                )
                await asyncio.wait(late)
        await self._commit(consumer)

    def joined(self) -> None:
        """Called on every assignment; the first one fires `on_ready` (at most once)."""
        if self._on_ready is not None:
            callback, self._on_ready = self._on_ready, None
            callback()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions were revoked or rewound: drop what they queued here; they are re-read."""
        revoked = set(partitions)
        dropped = self._batcher.remove_if(lambda job: job.tp in revoked)
        if dropped:
            log.info("handed %d queued request(s) back to the group", len(dropped))

    # -- batches ----------------------------------------------------------

    async def _run_batch(self, batch: Batch[_Job]) -> None:
        self._running_cost += batch.padded_cost
        try:
            started = self._clock()
            jobs = batch.items
            outcomes = await self._resilient.infer([job.admitted.inputs for job in jobs])
            compute_ms = (self._clock() - started) * 1000
        finally:
            self._in_flight_batches -= 1
            self._running_cost -= batch.padded_cost
            self._dispatch()
        for job, outcome in zip(jobs, outcomes, strict=True):
            timings = Timings(
                queue_ms=round((started - job.arrived) * 1000, 3),
                compute_ms=round(compute_ms, 3),
                batch_size=len(jobs),
                total_ms=total_ms(job.admitted.request),
            )
            if isinstance(outcome, BackendError):
                request = job.admitted.request
                result = self._answers.failure(
                    request, Status.ERROR, outcome.code, str(outcome), timings
                )
                dlq = None if outcome.retriable else dead_letter(job.record, outcome, "infer")
                self._answer(job, result, dlq)
            else:
                ok = self._answers.result(
                    job.admitted.request, Status.OK, outputs=outcome, timings=timings
                )
                self._answer(job, ok)
        self._telemetry_batch(batch, compute_ms, started)

    # -- answers ----------------------------------------------------------

    def _refuse_undecodable(self, rec: Record, exc: WireError) -> None:
        rid = recover_request_id(rec.value, rec.key)
        result = None if rid is None else self._answers.undecodable(rid, exc.code, str(exc))
        log.warning("refused record %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.code)
        self._spawn(self._emit(rec, result, dead_letter(rec, exc, "admit", rid), None))

    def _answer(self, job: _Job, result: InferenceResult, dlq: DeadLetter | None = None) -> None:
        self._spawn(self._emit(job.record, result, dlq, job.admitted.request.reply_to))

    async def _emit(
        self,
        rec: Record,
        result: InferenceResult | None,
        dlq: DeadLetter | None,
        reply_to: str | None,
    ) -> None:
        """Hand the result, DLQ record and request telemetry of `rec` to the delivery."""
        topics = self._settings.topics
        out = []
        if result is not None:
            key = result.request_id.encode()
            out.append(Outgoing(topic=reply_to or topics.results, value=encode(result), key=key))
            event = encode(self._answers.request_event(result))
            out.append(Outgoing(topic=topics.telemetry, value=event, required=False))
        if dlq is not None:
            hdrs = list(rec.headers) + dlq.to_headers()
            out.append(Outgoing(topic=topics.dlq, value=rec.value, key=rec.key, headers=hdrs))
        await self._delivery.emit(rec, [replace(m, headers=m.headers or headers()) for m in out])
        if result is not None:
            self.results_produced += 1

    # -- telemetry --------------------------------------------------------

    def _telemetry_batch(self, batch: Batch[_Job], compute_ms: float, started: float) -> None:
        event = self._answers.batch_event(
            [job.admitted.cost for job in batch.items],
            padded_cost=batch.padded_cost,
            queue_ms=max(started - a for a in batch.arrivals) * 1000,
            compute_ms=compute_ms,
        )
        log.info(
            "batch of %d (padded cost %d, real %d, %.0f%% padding) in %.0f ms",
            len(batch),
            batch.padded_cost,
            batch.real_cost,
            100 * batch.padding_waste,
            compute_ms,
        )
        self._spawn(self._send_telemetry(batch.items[-1].record, event))

    async def _send_telemetry(self, anchor: Record, event: TelemetryEvent) -> None:
        message = Outgoing(topic=self._settings.topics.telemetry, value=encode(event))
        await self._delivery.attach(anchor, replace(message, headers=headers(), required=False))

    # -- tasks ------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._fatal is None:
            # A result we could not produce would otherwise be silently lost;
            # stop, leave its offset uncommitted, and let a restart redo it.
            log.error("worker task failed; stopping so the record is redelivered: %r", exc)
            self._fatal = exc


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker, consumer: AIOKafkaConsumer) -> None:
        self._worker = worker
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.delivery.revoked(self._consumer, list(revoked))
        self._worker.forget(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        await self._worker.delivery.assigned(self._consumer, list(assigned))
        self._worker.joined()
