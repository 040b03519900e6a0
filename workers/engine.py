"""The worker engine: Kafka work topic in, batches to a backend, results out.

One consumer (a member of the pool's group) and one idempotent producer.
Each record becomes exactly one `InferenceResult`: ok, error, expired or
rejected. A record's offset counts as done only when its result (and its DLQ
record, if any) is acknowledged by the broker; commits advance to the lowest
offset not yet done, so batches may finish in any order (at-least-once).
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import encode, headers, recover_request_id
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
from .backends.base import InferenceBackend, ModelInputs, Outputs
from .batcher import Batch, BudgetBatcher
from .cancel import CANCELLED_MESSAGE, CancelWatcher
from .config import WorkerSettings
from .errors import BackendError
from .offsets import OffsetTracker

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
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight_batches = 0
        self._running_cost = 0  # padded cost of the batches at the backend
        policy = self._batcher.policy
        self._max_in_flight_cost = settings.max_in_flight_cost or 8 * policy.budget
        self._fatal: BaseException | None = None
        self._answers = Answers(model=settings.model, pool=settings.pool, worker=self._name)
        self._counter: TokenCounter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._producer: AIOKafkaProducer | None = None
        self._cancels = CancelWatcher(kafka=settings.kafka, topic=settings.topics.control)
        self.results_produced = 0

    @property
    def topic(self) -> str:
        return self._topic

    async def run(self, stop: asyncio.Event) -> None:
        s = self._settings
        kafka = s.kafka.client_kwargs()
        self._executor = ThreadPoolExecutor(s.preprocess_threads, thread_name_prefix="sg-prep")
        loop = asyncio.get_running_loop()
        self._counter = await loop.run_in_executor(self._executor, TokenCounter)
        version = await self._backend.model_version(s.model)
        self._answers = replace(self._answers, model_version=version)
        producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_request_size=s.kafka.max_request_size,
            **kafka,
        )
        consumer = AIOKafkaConsumer(
            group_id=s.group(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.kafka.max_request_size,
            fetch_max_bytes=4 * s.kafka.max_request_size,
            **kafka,
        )
        await producer.start()
        self._producer = producer
        await self._cancels.start()
        try:
            consumer.subscribe([self._topic], listener=_Rebalance(self, consumer))
            await consumer.start()
            log.info(
                "worker %s serving %s (model version %s) from %s as group %s",
                self._name,
                s.model,
                version,
                self._topic,
                s.group(),
            )
            try:
                while not stop.is_set() and self._fatal is None:
                    await self._poll_once(consumer)
                await self._drain(consumer)
            finally:
                await consumer.stop()
        finally:
            await self._cancels.stop()
            await producer.stop()
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
        records = [rec for recs in batches.values() for rec in recs]
        if records:
            await self._admit(records)
        self._dispatch()
        await self._commit(consumer)

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        """Pause fetching while too much work is held; getmany keeps the group alive."""
        in_flight_cost = self._batcher.pending_cost() + self._running_cost
        full = (
            len(self._batcher) >= self._settings.max_pending_requests
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

        def admit_all() -> list[Admitted | WireError]:
            out: list[Admitted | WireError] = []
            for rec in records:
                try:
                    out.append(admit(rec.value, list(rec.headers), serving=spec, counter=counter))
                except WireError as exc:
                    out.append(exc)
            return out

        outcomes = await asyncio.get_running_loop().run_in_executor(self._executor, admit_all)
        now, wall_ms = self._clock(), now_ms()
        for rec, outcome in zip(records, outcomes, strict=True):
            self._offsets.track(TopicPartition(rec.topic, rec.partition), rec.offset)
            if isinstance(outcome, WireError):
                self._refuse_undecodable(rec, outcome)
                continue
            job = _Job(record=rec, admitted=outcome, arrived=now)
            req = outcome.request
            if self._cancels.cancelled(req.request_id):
                self._answer(
                    job, self._answers.failure(req, Status.REJECTED, "cancelled", CANCELLED_MESSAGE)
                )
                continue
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
        if cancelled := self._cancels.take_new():
            for job in self._batcher.remove_if(
                lambda j: j.admitted.request.request_id in cancelled
            ):
                req = job.admitted.request
                self._answer(
                    job, self._answers.failure(req, Status.REJECTED, "cancelled", CANCELLED_MESSAGE)
                )
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
        while self._in_flight_batches < self._settings.max_in_flight_batches:
            batch = self._batcher.next_batch()
            if batch is None:
                return
            self._in_flight_batches += 1
            self._spawn(self._run_batch(batch))

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        offsets = {tp: off for tp, off in self._offsets.committable().items() if tp in assigned}
        if offsets:
            await consumer.commit(offsets)
            self._offsets.mark_committed(offsets)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching; let running batches finish within the grace period; commit."""
        pending = len(self._batcher)
        log.info(
            "worker stopping: %d batch(es) in flight, %d request(s) not started "
            "(left uncommitted for the next worker)",
            self._in_flight_batches,
            pending,
        )
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self._settings.shutdown_grace_s)
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
        """Partitions were revoked: drop what they queued here, the new owner re-reads it."""
        revoked = set(partitions)
        dropped = self._batcher.remove_if(lambda job: job.tp in revoked)
        self._offsets.forget(partitions)
        if dropped:
            log.info("rebalance: handed %d queued request(s) back to the group", len(dropped))

    def committable_for(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: off for tp, off in self._offsets.committable().items() if tp in partitions}

    # -- batches ----------------------------------------------------------

    async def _run_batch(self, batch: Batch[_Job]) -> None:
        self._running_cost += batch.padded_cost
        try:
            started = self._clock()
            jobs = batch.items
            outcomes = await self._infer_isolating([job.admitted.inputs for job in jobs])
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

    async def _infer_isolating(self, inputs: list[ModelInputs]) -> list[Outputs | BackendError]:
        """Infer a batch; if the backend refuses it, bisect so one poison input fails alone."""
        try:
            return list(await self._infer_retrying(inputs))
        except BackendError as exc:
            if exc.retriable or len(inputs) == 1:
                return [exc] * len(inputs)
        mid = len(inputs) // 2
        return await self._infer_isolating(inputs[:mid]) + await self._infer_isolating(inputs[mid:])

    async def _infer_retrying(self, inputs: list[ModelInputs]) -> list[Outputs]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.triton.attempts),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception(lambda e: isinstance(e, BackendError) and e.retriable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                outputs = await self._backend.infer(self._settings.model, inputs)
                if len(outputs) != len(inputs):
                    raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(inputs)}")
                return outputs
        raise AssertionError("unreachable: tenacity reraises")

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
        """Produce the result (and DLQ record); mark the offset done once both are acked."""
        assert self._producer is not None
        topics = self._settings.topics
        sends = []
        if result is not None:
            sends.append(
                await self._producer.send(
                    reply_to or topics.results,
                    encode(result),
                    key=result.request_id.encode(),
                    headers=headers(),
                )
            )
        if dlq is not None:
            sends.append(
                await self._producer.send(
                    topics.dlq, rec.value, key=rec.key, headers=list(rec.headers) + dlq.to_headers()
                )
            )
        await asyncio.gather(*sends)
        self._offsets.done(TopicPartition(rec.topic, rec.partition), rec.offset)
        if result is not None:
            self.results_produced += 1
            self._spawn(self._send_telemetry(self._answers.request_event(result)))

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
        self._spawn(self._send_telemetry(event))

    async def _send_telemetry(self, event: TelemetryEvent) -> None:
        assert self._producer is not None
        # Telemetry is best effort: it never holds back a commit.
        await self._producer.send(self._settings.topics.telemetry, encode(event), headers=headers())

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
        offsets = self._worker.committable_for(list(revoked))
        if offsets:
            await self._consumer.commit(offsets)
        self._worker.forget(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        self._worker.joined()
