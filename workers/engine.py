"""The worker engine: Kafka work topic in, batches to a backend, results out.

One consumer (a member of the pool's group) and a `Delivery` (the output
side, `workers.delivery`): at-least-once with one idempotent producer, or
exactly-once with one transactional producer per input partition. Each
record becomes exactly one `InferenceResult`: ok, error, expired or
rejected. Batches may finish in any order; the delivery decides when an
input offset counts as done and commits it.

Stages run as a pipeline: fetch -> admit (decode, validate, price; a thread
pool) -> the batcher -> `max_in_flight_batches` batches at the backend
(`workers.resilience`: retries, breaker, bisection) -> answers handed to the
delivery per batch (`workers.emit`).
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

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import INVALID_SPAN, Span, TracerProvider

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.lifecycle import Service
from sluicegate.runtime.records import Record
from sluicegate.runtime.results import total_ms
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import WireLimits, recover_request_id
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode, WireError
from sluicegate.schemas.models import InferenceResult, Status, TelemetryEvent, Timings

from .admission import Admitted, admit
from .answers import Answers, dead_letter
from .backends.base import InferenceBackend
from .batcher import Batch, BudgetBatcher
from .cancel import CANCELLED_MESSAGE, CancelWatcher
from .config import WorkerSettings
from .delivery import AtLeastOnce, Delivery
from .emit import Answer, Emitter
from .errors import BackendError
from .resilience import Resilient
from .tracing import WorkerObserver
from .transactions import ExactlyOnce

log = logging.getLogger("sluicegate.worker")


@dataclass(frozen=True, kw_only=True)
class _Job:
    record: Record
    admitted: Admitted
    arrived: float  # engine clock, seconds
    span: Span = INVALID_SPAN  # the request's span (workers/tracing.py)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


class Worker(Service):
    """Serves one model on one pool until stopped, then drains and commits.

    Ready once it first joined its group (`start()` returns then).
    """

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        backend: InferenceBackend,
        clock: Callable[[], float] = time.monotonic,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._settings = settings
        self._on_ready: Callable[[], object] | None = None
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
        self._emitter = Emitter(
            delivery=self._delivery,
            topics=settings.topics,
            answers=self._answers,
            observer=self._obs,
            clock=clock,
        )
        self._cancels = CancelWatcher(kafka=settings.kafka, topic=settings.topics.control)
        self._progress = asyncio.Event()  # set when a batch finishes
        self._last_commit = -float("inf")  # engine clock, seconds
        self._admitting = 0  # records read, not yet decoded and queued
        self._prep_slots = asyncio.Semaphore(settings.preprocess_threads)
        self._assigned: set[TopicPartition] = set()
        # Bumped when a partition is revoked or rewound: admissions begun before are void.
        self._generation: dict[TopicPartition, int] = {}
        self._draining = False

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def delivery(self) -> Delivery:
        return self._delivery

    @property
    def results_produced(self) -> int:
        return self._emitter.results_produced

    async def _serve(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        self._on_ready = ready.set
        s = self._settings
        kafka = s.kafka.client_kwargs()
        self._executor = ThreadPoolExecutor(s.preprocess_threads, thread_name_prefix="sg-prep")
        loop = asyncio.get_running_loop()
        self._counter = await loop.run_in_executor(self._executor, TokenCounter)
        version = await self._backend.model_version(s.model)
        self._answers = replace(self._answers, model_version=version)
        self._emitter.answers = self._answers
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
        await self._cancels.start()
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
                await self._cancels.stop()
                await consumer.stop()
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
        records = [rec for recs in batches.values() for rec in recs if self._delivery.accept(rec)]
        if records:
            # Preprocessing is a stage of its own: the loop goes on fetching
            # (and batches go on running) while these are decoded and priced.
            self._admitting += len(records)
            self._spawn(self._admit(records, dict(self._generation)))
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
            breaker_open = self._resilient.breaker.is_open  # Triton down: hold the input
            if breaker_open or pending >= limit_n or in_flight_cost >= limit_cost:
                consumer.pause(*consumer.assignment())
                log.debug("paused fetching: %d pending, in-flight cost %d", pending, in_flight_cost)
        elif (
            not self._resilient.breaker.is_open
            and pending < 0.75 * limit_n
            and in_flight_cost < 0.75 * limit_cost
        ):
            consumer.resume(*consumer.paused())
        lag = self._delivery.lag({tp: consumer.highwater(tp) for tp in consumer.assignment()})
        self._obs.sample(
            in_flight_cost=in_flight_cost,
            paused=len(consumer.paused()),
            lag={tp.partition: n for tp, n in lag.items()},
        )
        self._obs.metrics.circuit_state(self._resilient.breaker.state.value)
        return bool(consumer.paused())

    async def _admit(self, records: list[Record], generation: dict[TopicPartition, int]) -> None:
        """Decode, validate and price `records` off the loop, then queue or answer each.

        Records of partitions revoked or rewound meanwhile (their `generation`
        moved on) are dropped: they are read again.
        """
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

        try:
            async with self._prep_slots:
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(self._executor, admit_all)
        finally:
            self._admitting -= len(records)
            self._progress.set()
        now, wall_ms = self._clock(), now_ms()
        for rec, outcome in zip(records, outcomes, strict=True):
            tp = TopicPartition(rec.topic, rec.partition)
            if tp not in self._assigned or self._generation.get(tp, 0) != generation.get(tp, 0):
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
                    job,
                    self._answers.failure(
                        req, Status.REJECTED, ErrorCode.CANCELLED, CANCELLED_MESSAGE
                    ),
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
                    self._answers.failure(
                        req, Status.REJECTED, ErrorCode.OVER_BUDGET, rejection.reason
                    ),
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
                    job,
                    self._answers.failure(
                        req, Status.REJECTED, ErrorCode.CANCELLED, CANCELLED_MESSAGE
                    ),
                )
        for job in self._batcher.take_expired():
            self._answer(
                job,
                self._answers.failure(
                    job.admitted.request,
                    Status.EXPIRED,
                    ErrorCode.DEADLINE_EXPIRED,
                    ErrorCode.DEADLINE_EXPIRED.message,
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
        await self._delivery.commit(consumer)

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

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions were revoked: forget them; their new owner reads them."""
        self._assigned -= set(partitions)
        self.forget(partitions)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions were revoked or rewound: drop what they queued here; they are re-read."""
        revoked = set(partitions)
        for tp in revoked:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        dropped = self._batcher.remove_if(lambda job: job.tp in revoked)
        if dropped:
            log.info("rebalance: handed %d queued request(s) back to the group", len(dropped))

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
                outcomes = await self._resilient.infer([job.admitted.inputs for job in jobs])
            compute_ms = (self._clock() - started) * 1000
        finally:
            self._in_flight_batches -= 1
            self._running_cost -= batch.padded_cost
            self._progress.set()
            self._dispatch()
        answers: list[Answer] = []
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
                    Answer(job.record, result, dlq, request.reply_to, job.span, job.arrived)
                )
            else:
                ok = self._answers.result(request, Status.OK, outputs=outcome, timings=timings)
                answers.append(
                    Answer(job.record, ok, None, request.reply_to, job.span, job.arrived)
                )
        errors = [o.code for o in outcomes if isinstance(o, BackendError)]
        event = self._batch_event(batch, compute_ms, started, span, errors)
        # One task per batch: results produced together, acks awaited together.
        self._spawn(self._emit(answers, (event, span)))

    # -- answers ----------------------------------------------------------

    def _refuse_undecodable(self, rec: Record, exc: WireError) -> None:
        rid = recover_request_id(rec.value, rec.key)
        result = None if rid is None else self._answers.undecodable(rid, exc.code, str(exc))
        log.warning("refused record %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.code)
        span = self._obs.refused(rec, rid, exc.code)
        answer = Answer(rec, result, dead_letter(rec, exc, "admit", rid), None, span, None)
        self._spawn(self._emit([answer]))

    def _answer(self, job: _Job, result: InferenceResult, dlq: DeadLetter | None = None) -> None:
        reply_to = job.admitted.request.reply_to
        self._spawn(self._emit([Answer(job.record, result, dlq, reply_to, job.span, job.arrived)]))

    async def _emit(
        self, answers: list[Answer], batch_event: tuple[TelemetryEvent, Span] | None = None
    ) -> None:
        await self._emitter.emit(answers, batch_event)

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
        self._worker.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        await self._worker.delivery.assigned(self._consumer, list(assigned))
        self._worker.joined(list(assigned))
