"""The worker engine: Kafka work topic in, batches to a backend, results out.

One consumer (a member of the pool's group) and a `Delivery` (`workers.output`:
at-least-once, or exactly-once with a transactional producer per input
partition). Each record becomes exactly one `InferenceResult`; batches finish
in any order and the delivery decides when an input offset is done.

Stages run as a pipeline: fetch -> admit (`workers.prep`: a thread pool) ->
the scheduler (`workers.scheduler`: batcher, in-flight limits, backpressure)
-> `max_in_flight_batches` batches at the backend (`workers.batches`, through
`workers.resilience`: retries, breaker, bisection) -> replies published per
batch (`workers.output.publisher`) -> commits. This module is the loop and
its I/O only: what to run, answer, pause or drop is the scheduler's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.destinations import Destinations
from sluicegate.runtime.kafka import read_committed_consumer
from sluicegate.runtime.lifecycle import Service
from sluicegate.runtime.records import Record
from sluicegate.schemas.codec import recover_request_id
from sluicegate.schemas.errors import ErrorCode, WireError
from sluicegate.schemas.models import Status

from .answers import Answers, dead_letter
from .backends.base import InferenceBackend
from .batcher import Batch
from .batches import BatchStage
from .cancel import CANCELLED_MESSAGE, CancelWatcher
from .config import WorkerSettings
from .output import Delivery, Publisher, Reply, default_delivery
from .prep import Preprocessor
from .quarantine import Quarantine
from .resilience import Resilient
from .scheduler import EXPIRED_MESSAGE, Backpressure, Job, Scheduler, Ticket
from .tracing import WorkerObserver
from .variants import Refused, ServedVariants

log = logging.getLogger("sluicegate.worker")


class Cancels(Protocol):
    """What the engine uses of a cancel watcher (`workers.cancel.CancelWatcher`)."""

    def cancelled(self, request_id: str) -> bool: ...

    def take_new(self) -> set[str]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Worker(Service):
    """Serves one model on one pool until stopped, then drains and commits.

    Ready once it first joined its group (`start()` returns then). `delivery`
    and `cancels` default to the ones `settings` name; tests pass fakes.
    """

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        backend: InferenceBackend,
        clock: Callable[[], float] = time.monotonic,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        delivery: Delivery | None = None,
        cancels: Cancels | None = None,
    ) -> None:
        self._settings = settings
        self._on_ready: Callable[[], object] | None = None
        self._backend = backend
        self._clock = clock
        self._topic = settings.topics.work(settings.model, settings.pool)
        self._name = f"{socket.gethostname()}:{os.getpid()}"
        self._scheduler = Scheduler(
            policy=settings.policy(),
            clock=clock,
            max_in_flight_batches=settings.max_in_flight_batches,
            max_pending_requests=settings.max_pending_requests,
            max_in_flight_cost=settings.max_in_flight_cost,
        )
        self._fatal: BaseException | None = None
        self._served: ServedVariants  # what the backend serves; read when serving starts
        self._answers = Answers(model=settings.model, pool=settings.pool, worker=self._name)
        self._obs = WorkerObserver(
            model=settings.model,
            pool=settings.pool,
            topic=self._topic,
            budget=self._scheduler.policy.budget,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        self._quarantine = Quarantine.of(settings)
        self._prep = Preprocessor(settings=settings, quarantine=self._quarantine)
        self._resilient = Resilient(backend=backend, model=settings.model, settings=settings.triton)
        self._delivery = delivery if delivery is not None else default_delivery(settings)
        self._delivery.on_drop(self.forget)
        self._batches = BatchStage(
            resilient=self._resilient, answers=self._answers, observer=self._obs, clock=clock
        )
        self._destinations = Destinations.for_kafka(settings.kafka)
        self._publisher = Publisher(
            delivery=self._delivery,
            topics=settings.topics,
            answers=self._answers,
            observer=self._obs,
            clock=clock,
            destinations=self._destinations,
            quarantine=self._quarantine,
        )
        control = settings.topics.control
        self._cancels = cancels or CancelWatcher(kafka=settings.kafka, topic=control)
        self._task_group: asyncio.TaskGroup | None = None  # while serving
        self._tasks: set[asyncio.Task[None]] = set()  # its tasks not yet done
        self._progress = asyncio.Event()  # set when a batch finishes
        self._last_commit = -float("inf")  # engine clock, seconds

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def delivery(self) -> Delivery:
        return self._delivery

    @property
    def results_produced(self) -> int:
        return self._publisher.results_produced

    async def _serve(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        self._on_ready = ready.set
        s = self._settings
        await self._prep.start()
        self._served = await self._backend.variants(s.model)
        version = self._served.describe()
        self._answers = replace(self._answers, model_version=self._served.default_version)
        self._publisher.answers = self._batches.answers = self._answers
        try:
            await self._delivery.start()  # raises KafkaConnectError naming the settings to fix
        except BaseException:
            self._prep.stop()
            raise
        consumer = read_committed_consumer(
            s.kafka,
            group_id=s.group(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=4 * s.kafka.max_request_size,
            max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.session_timeout_ms // 3,
        )
        await self._cancels.start()
        await self._quarantine.start()
        try:
            consumer.subscribe([self._topic], listener=_Rebalance(self, consumer))
            await consumer.start()
            log.info(
                "worker %s serving %s (versions %s) from %s as group %s, %s",
                self._name,
                s.model,
                version,
                self._topic,
                s.group(),
                s.delivery,
            )
            # Every admission, batch and publish runs in this group: none outlives
            # the worker, and a cancelled worker cancels them all.
            try:
                async with asyncio.TaskGroup() as self._task_group:
                    try:
                        while not stop.is_set() and self._fatal is None:
                            await self._poll_once(consumer)
                        await self._drain(consumer)
                    finally:
                        self._scheduler.drain()  # cancelled tasks start nothing new
            except BaseExceptionGroup as failed:
                # Tasks end only done or cancelled (`_fail_worker_on_error`), so
                # the one error is the loop's own: raise it as it was raised.
                raise failed.exceptions[0] from None
        finally:
            self._task_group = None
            try:
                await self._delivery.stop(consumer)
            finally:
                await self._cancels.stop()
                await self._quarantine.stop()
                await self._destinations.close()
                await consumer.stop()
                self._prep.stop()
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
                await asyncio.wait_for(self._progress.wait(), self._scheduler.next_wakeup_in())
            timeout = 0.001
        elif self._scheduler.saturated:
            # Nothing may start before a batch finishes (its completion
            # dispatches the next one); meanwhile admit what arrives.
            timeout = 0.2
        else:
            timeout = self._scheduler.next_wakeup_in()
        # Never 0: getmany(timeout_ms=0) can return without suspending, and a
        # loop that never suspends starves the in-flight batches.
        batches = await consumer.getmany(timeout_ms=max(1, int(timeout * 1000)), max_records=200)
        records = [rec for recs in batches.values() for rec in recs if self._delivery.accept(rec)]
        if records:
            # Preprocessing is a stage of its own: the loop goes on fetching
            # (and batches go on running) while these are decoded and priced.
            self._spawn(self._admit(records, self._scheduler.begin_admission(len(records))))
        self._dispatch()
        if self._clock() - self._last_commit >= self._settings.commit_interval_s:
            await self._commit(consumer)

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> bool:
        """Pause or resume fetching as the scheduler says; True if paused."""
        sched, breaker = self._scheduler, self._resilient.breaker
        # An open breaker (Triton down) holds the input too.
        decision = sched.backpressure(paused=bool(consumer.paused()), breaker_open=breaker.is_open)
        if decision is Backpressure.PAUSE:
            consumer.pause(*consumer.assignment())
            log.debug(
                "paused fetching: %d pending, in-flight cost %d",
                sched.pending,
                sched.in_flight_cost,
            )
        elif decision is Backpressure.RESUME:
            consumer.resume(*consumer.paused())
        lag = self._delivery.lag({tp: consumer.highwater(tp) for tp in consumer.assignment()})
        self._obs.sample(
            in_flight_cost=sched.in_flight_cost,
            paused=len(consumer.paused()),
            lag={tp.partition: n for tp, n in lag.items()},
        )
        self._obs.metrics.circuit_state(breaker.state.value)
        return bool(consumer.paused())

    async def _admit(self, records: list[Record], ticket: Ticket) -> None:
        """Decode, validate and price `records` off the loop, then queue or answer each.

        Records of partitions revoked or rewound meanwhile (the scheduler says
        `ticket` is no longer current for them) are dropped: they are read again.
        """
        try:
            outcomes = await self._prep.admit(records)
        finally:
            self._scheduler.end_admission(ticket)
            self._progress.set()
        now, wall_ms = self._clock(), now_ms()
        for rec, outcome in zip(records, outcomes, strict=True):
            if not self._scheduler.current(ticket, TopicPartition(rec.topic, rec.partition)):
                continue
            if isinstance(outcome, WireError):
                self._refuse_undecodable(rec, outcome)
                continue
            placed = self._served.place(outcome.request, rec.headers)
            span = self._obs.request_started(rec, outcome, placed)
            job = Job(record=rec, admitted=outcome, arrived=now, span=span, variant=placed.variant)
            if isinstance(placed, Refused):  # a version or precision this pool lacks
                self._reply_failure(job, Status.ERROR, placed.code, str(placed), dlq=placed)
                continue
            if self._cancels.cancelled(job.request_id):
                self._reply_failure(job, Status.REJECTED, ErrorCode.CANCELLED, CANCELLED_MESSAGE)
                continue
            rejection = self._scheduler.queue(job, now_ms=wall_ms)
            if rejection is not None:
                self._reply_failure(job, Status.REJECTED, ErrorCode.OVER_BUDGET, rejection.reason)
        self._dispatch()

    def _dispatch(self) -> None:
        """Answer what was cancelled or expired; start what the scheduler says to."""
        plan = self._scheduler.schedule(self._cancels.take_new())
        for job in plan.cancelled:
            self._reply_failure(job, Status.REJECTED, ErrorCode.CANCELLED, CANCELLED_MESSAGE)
        for job in plan.expired:
            self._reply_failure(job, Status.EXPIRED, ErrorCode.DEADLINE_EXPIRED, EXPIRED_MESSAGE)
        for batch in plan.batches:
            self._spawn(self._run_batch(batch))

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        self._last_commit = self._clock()
        await self._delivery.commit(consumer)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching; let running batches finish within the grace period; commit."""
        self._scheduler.drain()  # what is still queued stays uncommitted for the next owner
        log.info(
            "worker stopping: %d batch(es) in flight, %d request(s) not started "
            "(left uncommitted for the next worker)",
            self._scheduler.in_flight_batches,
            self._scheduler.pending,
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
        self._scheduler.assigned(partitions)
        if self._on_ready is not None:
            callback, self._on_ready = self._on_ready, None
            callback()

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions were revoked: forget them; their new owner reads them."""
        self._scheduler.unassigned(partitions)
        self.forget(partitions)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions were revoked or rewound: drop what they queued here; they are re-read."""
        if dropped := self._scheduler.forget(partitions):
            log.info("rebalance: handed %d queued request(s) back to the group", len(dropped))

    # -- batches and replies ----------------------------------------------

    async def _run_batch(self, batch: Batch[Job]) -> None:
        try:
            await self._quarantine.begin([job.record for job in batch.items])
            done = await self._batches.run(batch)
        finally:
            self._scheduler.finished(batch)
            self._progress.set()
            self._dispatch()
        # One task per batch: results produced together, acks awaited together.
        self._spawn(self._publisher.publish(done.replies, (done.event, done.span)))

    def _refuse_undecodable(self, rec: Record, exc: WireError) -> None:
        rid = recover_request_id(rec.value, rec.key)
        result = None if rid is None else self._answers.undecodable(rid, exc.code, str(exc))
        log.warning("refused record %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.code)
        span = self._obs.refused(rec, rid, exc.code)
        reply = Reply(rec, result, dead_letter(rec, exc, "admit", rid), None, span, None)
        self._spawn(self._publisher.publish([reply]))

    def _reply_failure(
        self, job: Job, status: Status, code: str, message: str, dlq: Exception | None = None
    ) -> None:
        """Answer `job` without running it (cancelled, expired, over budget, unservable)."""
        request = job.admitted.request
        result = self._answers.failure(request, status, code, message)
        letter = None if dlq is None else dead_letter(job.record, dlq, "admit", job.request_id)
        reply = Reply(job.record, result, letter, request.reply_to, job.span, job.arrived)
        self._spawn(self._publisher.publish([reply]))

    # -- tasks ------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._task_group is not None, "tasks run only while serving"
        task = self._task_group.create_task(self._fail_worker_on_error(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fail_worker_on_error(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro`; an error stops the worker after its drain. Cancellation propagates."""
        try:
            await coro
        except Exception as exc:
            if self._fatal is None:
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
