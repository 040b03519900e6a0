"""The worker engine: Kafka work topic in, batches to a backend, results out.

One consumer (a member of the pool's group) and one idempotent producer.
Each record becomes exactly one `InferenceResult`: ok, error, expired or
rejected. A record's offset counts as done only when its result (and its DLQ
record, if any) is acknowledged by the broker; commits advance to the lowest
offset not yet done, so batches may finish in any order (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import INVALID_SPAN, Span, TracerProvider
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import encode, recover_request_id
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
from .tracing import WorkerObserver

log = logging.getLogger("sluicegate.worker")


@dataclass(frozen=True)
class _Answer:
    """One record's answer: its result (None if no request_id is recoverable) and DLQ record."""

    record: Record
    result: InferenceResult | None
    dlq: DeadLetter | None
    reply_to: str | None
    span: Span = INVALID_SPAN  # the request's span (workers/tracing.py)
    arrived: float | None = None  # engine clock, seconds


@dataclass(frozen=True, kw_only=True)
class _Job:
    record: Record
    admitted: Admitted
    arrived: float  # engine clock, seconds
    span: Span = INVALID_SPAN  # the request's span (workers/tracing.py)

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
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
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
        self._obs = WorkerObserver(
            model=settings.model,
            pool=settings.pool,
            topic=self._topic,
            budget=policy.budget,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        self._counter: TokenCounter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._producer: AIOKafkaProducer | None = None
        self._cancels = CancelWatcher(kafka=settings.kafka, topic=settings.topics.control)
        self.results_produced = 0
        self._telemetry_turn = 0  # round robin over telemetry partitions
        self._progress = asyncio.Event()  # set when a batch finishes
        self._last_commit = -float("inf")  # engine clock, seconds
        self._admitting = 0  # records read, not yet decoded and queued
        self._prep_slots = asyncio.Semaphore(settings.preprocess_threads)
        self._assigned: set[TopicPartition] = set()
        self._draining = False

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
        if self._apply_backpressure(consumer):
            # Paused: a fetch would only sleep out its timeout, stalling the
            # loop while batches finish. Wait for one to finish (or for the
            # next due time), then poll briefly: a getmany call is what keeps
            # this member alive past max.poll.interval.ms (aiokafka #848).
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), self._idle_timeout())
            timeout = 0.001
        elif self._in_flight_batches >= self._settings.max_in_flight_batches:
            # Nothing may start before a batch finishes (its completion
            # dispatches the next one); meanwhile admit what arrives.
            timeout = 0.2
        else:
            timeout = self._idle_timeout()
        # Never 0: getmany(timeout_ms=0) can return without suspending, and a
        # loop that never suspends starves the in-flight batches.
        batches = await consumer.getmany(timeout_ms=max(1, int(timeout * 1000)), max_records=200)
        records = [rec for recs in batches.values() for rec in recs]
        if records:
            for rec in records:
                self._offsets.track(TopicPartition(rec.topic, rec.partition), rec.offset)
            # Preprocessing is a stage of its own: the loop goes on fetching
            # (and batches go on running) while these are decoded and priced.
            self._admitting += len(records)
            self._spawn(self._admit(records))
        self._dispatch()
        if self._clock() - self._last_commit >= self._settings.commit_interval_s:
            await self._commit(consumer)

    def _idle_timeout(self) -> float:
        """Seconds until the batcher next has something due (at most 0.2)."""
        wake = self._batcher.next_wakeup()
        return 0.2 if wake is None else min(0.2, max(0.001, wake - self._clock()))

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> bool:
        """Pause fetching while too much work is held, resume below 3/4 of it; True if paused."""
        pending = len(self._batcher) + self._admitting
        in_flight_cost = self._batcher.pending_cost() + self._running_cost
        limit_n, limit_cost = self._settings.max_pending_requests, self._max_in_flight_cost
        if not consumer.paused():
            if pending >= limit_n or in_flight_cost >= limit_cost:
                consumer.pause(*consumer.assignment())
                log.debug("paused fetching: %d pending, in-flight cost %d", pending, in_flight_cost)
        elif pending < 0.75 * limit_n and in_flight_cost < 0.75 * limit_cost:
            consumer.resume(*consumer.paused())
        lag = self._offsets.lag({tp: consumer.highwater(tp) for tp in consumer.assignment()})
        self._obs.sample(
            in_flight_cost=in_flight_cost,
            paused=len(consumer.paused()),
            lag={tp.partition: n for tp, n in lag.items()},
        )
        return bool(consumer.paused())

    async def _admit(self, records: list[Record]) -> None:
        """Decode, validate and price `records` off the loop, then queue or answer each.

        Records of partitions revoked meanwhile are dropped: their new owner
        reads them again.
        """
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

        try:
            async with self._prep_slots:
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(self._executor, admit_all)
        finally:
            self._admitting -= len(records)
            self._progress.set()
        now, wall_ms = self._clock(), now_ms()
        for rec, outcome in zip(records, outcomes, strict=True):
            if TopicPartition(rec.topic, rec.partition) not in self._assigned:
                continue
            if isinstance(outcome, WireError):
                self._refuse_undecodable(rec, outcome)
                continue
            job = _Job(
                record=rec,
                admitted=outcome,
                arrived=now,
                span=self._obs.request_started(rec, outcome),
            )
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
        self._dispatch()

    def _dispatch(self) -> None:
        if self._draining:
            return  # what is still queued stays uncommitted for the next owner
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
        self._last_commit = self._clock()
        assigned = consumer.assignment()
        offsets = {tp: off for tp, off in self._offsets.committable().items() if tp in assigned}
        if offsets:
            await consumer.commit(offsets)
            self._offsets.mark_committed(offsets)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching; let running batches finish within the grace period; commit."""
        self._draining = True
        log.info(
            "worker stopping: %d batch(es) in flight, %d request(s) not started "
            "(left uncommitted for the next worker)",
            self._in_flight_batches,
            len(self._batcher) + self._admitting,
        )
        # Batches that finish spawn their result producers: wait for those too.
        give_up = self._clock() + self._settings.shutdown_grace_s
        while self._tasks and (left := give_up - self._clock()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        if late := set(self._tasks):
            for task in late:
                task.cancel()
            log.warning(
                "abandoned %d task(s) after %.0f s grace; their offsets stay uncommitted",
                len(late),
                self._settings.shutdown_grace_s,
            )
            await asyncio.wait(late)
        await self._commit(consumer)

    def joined(self, partitions: list[TopicPartition]) -> None:
        """Called on every assignment; the first one fires `on_ready` (at most once)."""
        self._assigned.update(partitions)
        if self._on_ready is not None:
            callback, self._on_ready = self._on_ready, None
            callback()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions were revoked: drop what they queued here, the new owner re-reads it."""
        revoked = set(partitions)
        self._assigned -= revoked
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
            span = self._obs.batch_started(
                [job.span for job in jobs], [(started - job.arrived) * 1000 for job in jobs]
            )
            with self._obs.backend_call(span):
                outcomes = await self._infer_isolating([job.admitted.inputs for job in jobs])
            compute_ms = (self._clock() - started) * 1000
        finally:
            self._in_flight_batches -= 1
            self._running_cost -= batch.padded_cost
            self._progress.set()
            self._dispatch()
        answers: list[_Answer] = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            timings = Timings(
                queue_ms=round((started - job.arrived) * 1000, 3),
                compute_ms=round(compute_ms, 3),
                batch_size=len(jobs),
                total_ms=total_ms(job.admitted.request),
            )
            request = job.admitted.request
            if isinstance(outcome, BackendError):
                result = self._answers.failure(
                    request, Status.ERROR, outcome.code, str(outcome), timings
                )
                dlq = None if outcome.retriable else dead_letter(job.record, outcome, "infer")
                answers.append(
                    _Answer(job.record, result, dlq, request.reply_to, job.span, job.arrived)
                )
            else:
                ok = self._answers.result(request, Status.OK, outputs=outcome, timings=timings)
                answers.append(
                    _Answer(job.record, ok, None, request.reply_to, job.span, job.arrived)
                )
        errors = [o.code for o in outcomes if isinstance(o, BackendError)]
        event = self._batch_event(batch, compute_ms, started, span, errors)
        # One task per batch: results produced together, acks awaited together.
        self._spawn(self._emit(answers, (event, span)))

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
        span = self._obs.refused(rec, rid, exc.code)
        answer = _Answer(rec, result, dead_letter(rec, exc, "admit", rid), None, span, None)
        self._spawn(self._emit([answer]))

    def _answer(self, job: _Job, result: InferenceResult, dlq: DeadLetter | None = None) -> None:
        reply_to = job.admitted.request.reply_to
        self._spawn(self._emit([_Answer(job.record, result, dlq, reply_to, job.span, job.arrived)]))

    async def _emit(
        self, answers: list[_Answer], batch_event: tuple[TelemetryEvent, Span] | None = None
    ) -> None:
        """Produce results (and DLQ records); mark offsets done once all are acked.

        Telemetry follows, best effort: it never holds back a commit.
        """
        assert self._producer is not None
        topics = self._settings.topics
        sends = []
        for a in answers:
            if a.result is not None:
                topic = a.reply_to or topics.results
                with self._obs.result_send(a.span, topic, a.result) as hdrs:
                    sends.append(
                        await self._producer.send(
                            topic, encode(a.result), key=a.result.request_id.encode(), headers=hdrs
                        )
                    )
            if a.dlq is not None:
                rec = a.record
                sends.append(
                    await self._producer.send(
                        topics.dlq,
                        rec.value,
                        key=rec.key,
                        headers=list(rec.headers) + a.dlq.to_headers(),
                    )
                )
        await asyncio.gather(*sends)
        events = [] if batch_event is None else [batch_event]
        now = self._clock()
        for a in answers:
            self._offsets.done(TopicPartition(a.record.topic, a.record.partition), a.record.offset)
            process_s = 0.0 if a.arrived is None else now - a.arrived
            self._obs.answered(a.span, a.result, process_s=process_s)
            if a.result is not None:
                self.results_produced += 1
                events.append((self._answers.request_event(a.result), a.span))
        await self._send_telemetry(events)

    # -- telemetry --------------------------------------------------------

    def _batch_event(
        self, batch: Batch[_Job], compute_ms: float, started: float, span: Span, errors: list[str]
    ) -> TelemetryEvent:
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
        self._obs.batch_finished(
            span,
            size=len(batch),
            tokens=event.tokens or 0,
            pixels=event.pixels or 0,
            padded_cost=batch.padded_cost,
            padding=batch.padding_waste,
            backend_s=compute_ms / 1000,
            errors=errors,
        )
        return event

    async def _send_telemetry(self, events: list[tuple[TelemetryEvent, Span]]) -> None:
        """Append `events` to one record batch for one partition (cheaper than one send each).

        Best effort: it never holds back a commit. Each record carries its span's context.
        """
        assert self._producer is not None
        topic = self._settings.topics.telemetry
        pending = list(events)
        while pending:
            builder = self._producer.create_batch()
            appended = 0
            while pending:
                event, span = pending[0]
                value, hdrs = encode(event), self._obs.telemetry_headers(span)
                if builder.append(key=None, value=value, timestamp=None, headers=hdrs) is None:
                    break
                pending.pop(0)
                appended += 1
            if appended == 0:  # larger than a whole record batch: cannot be sent
                log.warning("dropped a %d-byte telemetry event", len(encode(pending.pop(0)[0])))
                continue
            partitions = sorted(await self._producer.partitions_for(topic))
            self._telemetry_turn += 1
            partition = partitions[self._telemetry_turn % len(partitions)]
            await self._producer.send_batch(builder, topic, partition=partition)

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
        self._worker.joined(list(assigned))
