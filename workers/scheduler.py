"""What the worker should do next: pure bookkeeping, no tasks, no Kafka, no I/O.

The engine's loop (`workers.engine`) feeds the scheduler admission outcomes
and finished batches, and asks it which batches to start, which queued
requests to answer instead (cancelled, expired), and whether to pause or
resume fetching. Like vLLM's `Scheduler.schedule()` called by `EngineCore`'s
busy loop, it is driven in tests with fake records and a fake clock.

Don't wait for batch mates that aren't coming. ``max_queue_delay`` buys
something only while the backend is busy: a request that finds it idle and
waits the delay anyway (10 ms on the CPU text pool) adds the delay to its
latency and, at low load, gains no batch mate (at 100 requests/s the median
batch was one request and the worker's p50 ~16 ms above a per-message relay).
So `schedule` starts a partial batch at once while the backend is *idle*:
fewer than ``max(1, max_in_flight_batches // 2)`` batches are running (with
the default 2: none) and no records are in admission (records read but not
yet priced are mates that *are* coming: their admission calls `schedule`
again as it ends). Otherwise it waits as before: a batch starts when it is
full on budget or size, or when its oldest member has waited the delay.

Under load this changes nothing: while batches run, arrivals queue and
close on budget as before, and when the backend falls idle what queued
meanwhile leaves at once, packed, so the backend never idles with work
queued (the delay is spent only while it is busy). The arrival rate is not
modelled: whether the backend is busy says what the rate would (a
rate-learned delay would still wait at low load). The ``count`` strategy
(the dynamic-batcher baseline) and ``idle_dispatch=False``
(``SLUICEGATE_BATCH__IDLE_DISPATCH=false``) keep the old behaviour.
Deadlines, priorities and cancels are unchanged: an idle dispatch takes the
most urgent request as its head, after cancelled and expired ones are out.
Waiting while one batch runs costs a request little: a single-instance
Triton model would queue it behind that batch anyway, and the batch's end
starts it at once. `tests/unit/test_scheduler_sim.py` checks both sides in
simulation (at 100/s the median queue wait falls from 11 ms to 1 ms; a
backlog drains in the same time in the same batches).

Partition generations: a partition revoked or rewound (`forget`) moves to a
new generation; admissions begun before (`begin_admission`) are void for it,
because its records are read again by whoever owns it next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from aiokafka import TopicPartition
from opentelemetry.trace import INVALID_SPAN, Span

from sluicegate.runtime.records import Record
from sluicegate.schemas.errors import ErrorCode

from .admission import Admitted
from .batcher import Batch, BatchPolicy, BudgetBatcher, Rejection
from .variants import Variant

__all__ = ["EXPIRED_MESSAGE", "Backpressure", "Job", "Plan", "Scheduler", "Ticket"]

EXPIRED_MESSAGE = ErrorCode.DEADLINE_EXPIRED.message

# Fetching resumes once both the pending count and the in-flight cost are
# below this share of their bounds (hysteresis: no pause/resume flapping).
RESUME_BELOW = 0.75


@dataclass(frozen=True, kw_only=True)
class Job:
    """One admitted record waiting for, or running in, a batch."""

    record: Record
    admitted: Admitted
    arrived: float  # engine clock, seconds
    span: Span = INVALID_SPAN  # the request's span (workers/tracing.py)
    # The version + precision build it runs (`workers.variants`); batches never mix them.
    variant: Variant | None = None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)

    @property
    def request_id(self) -> str:
        return self.admitted.request.request_id


@dataclass(frozen=True)
class Ticket:
    """An admission in progress: how many records, and the generations it began in."""

    size: int
    generations: dict[TopicPartition, int]


@dataclass(kw_only=True)
class Plan:
    """One `schedule()` answer: what to answer without running, and what to start."""

    cancelled: list[Job] = field(default_factory=list)
    expired: list[Job] = field(default_factory=list)
    # Already counted in flight: the engine must call `finished` for each.
    batches: list[Batch[Job]] = field(default_factory=list)


class Backpressure(Enum):
    PAUSE = "pause"
    RESUME = "resume"
    HOLD = "hold"  # leave fetching as it is


class Scheduler:
    """Admission bookkeeping, the budget batcher, in-flight limits, backpressure."""

    def __init__(
        self,
        *,
        policy: BatchPolicy,
        clock: Callable[[], float],
        max_in_flight_batches: int,
        max_pending_requests: int,
        max_in_flight_cost: int | None = None,
    ) -> None:
        self._batcher: BudgetBatcher[Job] = BudgetBatcher(policy=policy, clock=clock)
        self._clock = clock
        self._max_batches = max_in_flight_batches
        # Below this many running batches (and nothing in admission) the backend is idle.
        self._idle_below = (
            max(1, max_in_flight_batches // 2)
            if policy.idle_dispatch and policy.strategy == "budget"
            else 0
        )
        self._max_pending = max_pending_requests
        self._max_cost = max_in_flight_cost or 8 * policy.budget
        self._in_flight = 0  # batches at the backend
        self._running_cost = 0  # padded cost of the batches at the backend
        self._admitting = 0  # records read, not yet decoded and queued
        self._assigned: set[TopicPartition] = set()
        self._generation: dict[TopicPartition, int] = {}
        self._draining = False

    # -- state ----------------------------------------------------------------

    @property
    def policy(self) -> BatchPolicy:
        return self._batcher.policy

    @property
    def in_flight_batches(self) -> int:
        return self._in_flight

    @property
    def pending(self) -> int:
        """Requests not started: queued in the batcher or still being admitted."""
        return len(self._batcher) + self._admitting

    @property
    def in_flight_cost(self) -> int:
        """Padded cost queued and at the backend, in the model's cost unit."""
        return self._batcher.pending_cost() + self._running_cost

    @property
    def saturated(self) -> bool:
        """True while nothing may start before a running batch finishes."""
        return self._in_flight >= self._max_batches

    @property
    def idle(self) -> bool:
        """True while a partial batch should start at once (see the module docstring)."""
        return self._in_flight < self._idle_below and self._admitting == 0

    def next_wakeup_in(self) -> float:
        """Seconds until the batcher next has something due (at most 0.2, at least 0.001)."""
        wake = self._batcher.next_wakeup()
        return 0.2 if wake is None else min(0.2, max(0.001, wake - self._clock()))

    # -- partitions -----------------------------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self._assigned.update(partitions)

    def unassigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions were revoked: admissions for them are void from now on.

        Call `forget` for them too, to drop what they queued.
        """
        self._assigned.difference_update(partitions)

    def forget(self, partitions: Iterable[TopicPartition]) -> list[Job]:
        """Partitions were revoked or rewound: void their admissions, drop their queue.

        Returns the dropped jobs (their records are read again; nothing answers them).
        """
        gone = set(partitions)
        for tp in gone:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        return self._batcher.remove_if(lambda job: job.tp in gone)

    # -- admission ------------------------------------------------------------

    def begin_admission(self, count: int) -> Ticket:
        """`count` records were read and go to admission (counted as pending meanwhile)."""
        self._admitting += count
        return Ticket(count, dict(self._generation))

    def end_admission(self, ticket: Ticket) -> None:
        """Admission of `ticket` finished (or failed); call exactly once per ticket."""
        self._admitting -= ticket.size

    def current(self, ticket: Ticket, tp: TopicPartition) -> bool:
        """False if `tp` was revoked or rewound since `ticket` began: drop its records."""
        return tp in self._assigned and self._generation.get(tp, 0) == ticket.generations.get(tp, 0)

    def queue(self, job: Job, *, now_ms: int) -> Rejection | None:
        """Queue `job` for a batch; a `Rejection` if it can never fit (answer `over_budget`).

        `now_ms` is the wall clock (Unix ms) the request's `deadline_ms` is read against.
        """
        req = job.admitted.request
        deadline = None
        if req.deadline_ms is not None:
            deadline = job.arrived + (req.deadline_ms - now_ms) / 1000
        return self._batcher.add(
            job,
            cost=job.admitted.cost.units,
            priority=req.priority,
            deadline=deadline,
            group=job.variant,
        )

    # -- scheduling -----------------------------------------------------------

    def schedule(self, cancelled: set[str] | frozenset[str] = frozenset()) -> Plan:
        """Take cancelled and expired jobs out of the queue; start batches up to the limit.

        A batch starts when it is full or overdue, or at once, partial, while
        the backend is idle (`idle`).

        While draining nothing is taken or started: what is queued stays
        uncommitted for the next owner.
        """
        plan = Plan()
        if self._draining:
            return plan
        if cancelled:
            plan.cancelled = self._batcher.remove_if(lambda job: job.request_id in cancelled)
        plan.expired = self._batcher.take_expired()
        while self._in_flight < self._max_batches:
            batch = self._batcher.next_batch(force=self.idle)
            if batch is None:
                break
            self._in_flight += 1
            self._running_cost += batch.padded_cost
            plan.batches.append(batch)
        return plan

    def finished(self, batch: Batch[Job]) -> None:
        """A batch from `schedule()` left the backend (with outputs or not)."""
        self._in_flight -= 1
        self._running_cost -= batch.padded_cost

    def drain(self) -> None:
        """Start nothing new from now on."""
        self._draining = True

    def backpressure(self, *, paused: bool, breaker_open: bool) -> Backpressure:
        """Pause when a bound is reached or the backend is down; resume below 3/4 of both."""
        pending, cost = self.pending, self.in_flight_cost
        if not paused:
            if breaker_open or pending >= self._max_pending or cost >= self._max_cost:
                return Backpressure.PAUSE
        elif (
            not breaker_open
            and pending < RESUME_BELOW * self._max_pending
            and cost < RESUME_BELOW * self._max_cost
        ):
            return Backpressure.RESUME
        return Backpressure.HOLD
