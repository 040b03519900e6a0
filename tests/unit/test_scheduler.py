"""The worker's scheduler with fake records and a fake clock: no Kafka, no Triton."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from sluicegate.inference.io import ModelInputs
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.models import InferenceRequest
from sluicegate.workers.admission import Admitted
from sluicegate.workers.batcher import BatchPolicy
from sluicegate.workers.scheduler import Backpressure, Job, Scheduler
from tests.fakes import FakeRecord

TOPIC = "sg.work.text-embed.default"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
WALL_MS = 1_700_000_000_000  # the wall clock the fake clock's 1000.0 stands for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(
    rid: str, *, cost: int = 10, tp: TopicPartition = P0, deadline_ms: int | None = None
) -> Job:
    request = InferenceRequest(
        request_id=rid, model="text-embed", texts=["x"], deadline_ms=deadline_ms
    )
    admitted = Admitted(
        request=request,
        inputs=ModelInputs(texts=("x",)),
        cost=Cost(tokens=cost, pixels=0, units=cost),
    )
    return Job(record=FakeRecord(tp.topic, tp.partition, 0), admitted=admitted, arrived=1000.0)


def make(
    *,
    budget: int = 100,
    size: int = 8,
    in_flight: int = 2,
    pending: int = 100,
    max_cost: int | None = None,
) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    policy = BatchPolicy(
        max_batch_size=size, max_queue_delay_microseconds=10_000, budget=budget, hard_limit=400
    )
    scheduler = Scheduler(
        policy=policy,
        clock=clock,
        max_in_flight_batches=in_flight,
        max_pending_requests=pending,
        max_in_flight_cost=max_cost,
    )
    scheduler.assigned([P0, P1])
    return scheduler, clock


def queue(scheduler: Scheduler, *jobs: Job) -> None:
    for j in jobs:
        assert scheduler.queue(j, now_ms=WALL_MS) is None


def ids(batch_jobs: list[Job]) -> list[str]:
    return [j.request_id for j in batch_jobs]


def test_a_batch_closes_when_the_budget_is_reached() -> None:
    scheduler, _ = make(budget=100)
    queue(scheduler, *(job(f"r{i}", cost=25) for i in range(5)))
    plan = scheduler.schedule()
    assert [len(b) for b in plan.batches] == [4]  # 4 x 25 fills the budget; the 5th waits
    assert scheduler.pending == 1 and scheduler.in_flight_batches == 1


def test_a_batch_closes_at_max_size() -> None:
    scheduler, _ = make(size=3)
    queue(scheduler, *(job(f"r{i}", cost=1) for i in range(3)))
    assert [len(b) for b in scheduler.schedule().batches] == [3]


def test_a_partial_batch_waits_for_the_queue_delay() -> None:
    scheduler, clock = make()
    queue(scheduler, job("a"), job("b"))
    assert scheduler.schedule().batches == []
    assert scheduler.next_wakeup_in() == pytest.approx(0.01)
    clock.now += 0.011
    plan = scheduler.schedule()
    assert [ids(b.items) for b in plan.batches] == [["a", "b"]]


def test_no_more_batches_than_the_in_flight_limit() -> None:
    scheduler, _ = make(size=1, in_flight=2)
    queue(scheduler, job("a"), job("b"), job("c"))
    first = scheduler.schedule().batches
    assert len(first) == 2 and scheduler.saturated
    assert scheduler.schedule().batches == []
    scheduler.finished(first[0])
    assert [ids(b.items) for b in scheduler.schedule().batches] == [["c"]]


def test_an_over_hard_limit_request_is_rejected() -> None:
    scheduler, _ = make()
    rejection = scheduler.queue(job("big", cost=401), now_ms=WALL_MS)
    assert rejection is not None and "hard limit" in rejection.reason
    assert scheduler.pending == 0


def test_expired_requests_are_answered_not_run() -> None:
    scheduler, clock = make()
    queue(scheduler, job("late", deadline_ms=WALL_MS + 5), job("fine"))
    clock.now += 0.006  # past the deadline, before the queue delay
    plan = scheduler.schedule()
    assert ids(plan.expired) == ["late"] and plan.batches == []
    assert scheduler.pending == 1


def test_cancelled_requests_leave_the_queue() -> None:
    scheduler, _ = make()
    queue(scheduler, job("a"), job("b"))
    plan = scheduler.schedule({"b", "unknown"})
    assert ids(plan.cancelled) == ["b"]
    assert scheduler.pending == 1


def test_backpressure_pauses_at_the_bound_and_resumes_below_three_quarters() -> None:
    scheduler, _ = make(pending=8, size=1, in_flight=0)  # nothing starts: the queue holds
    queue(scheduler, *(job(f"r{i}") for i in range(8)))
    assert scheduler.backpressure(paused=False, breaker_open=False) is Backpressure.PAUSE
    scheduler.schedule({"r0", "r1"})  # 6 pending: below the bound, not below 3/4 of it
    assert scheduler.backpressure(paused=True, breaker_open=False) is Backpressure.HOLD
    scheduler.schedule({"r2"})  # 5 pending: below 6
    assert scheduler.backpressure(paused=True, breaker_open=False) is Backpressure.RESUME
    assert scheduler.backpressure(paused=False, breaker_open=False) is Backpressure.HOLD


def test_backpressure_counts_in_flight_cost_and_records_in_admission() -> None:
    scheduler, _ = make(max_cost=100, pending=100)
    queue(scheduler, *(job(f"r{i}", cost=25) for i in range(4)))  # 100 queued
    assert scheduler.in_flight_cost == 100
    assert scheduler.backpressure(paused=False, breaker_open=False) is Backpressure.PAUSE
    started = scheduler.schedule().batches  # still in flight: still counted
    assert scheduler.backpressure(paused=True, breaker_open=False) is Backpressure.HOLD
    scheduler.finished(started[0])
    assert scheduler.backpressure(paused=True, breaker_open=False) is Backpressure.RESUME
    ticket = scheduler.begin_admission(100)
    assert scheduler.pending == 100
    assert scheduler.backpressure(paused=False, breaker_open=False) is Backpressure.PAUSE
    scheduler.end_admission(ticket)
    assert scheduler.pending == 0


def test_an_open_breaker_pauses_and_holds_the_pause() -> None:
    scheduler, _ = make()
    assert scheduler.backpressure(paused=False, breaker_open=True) is Backpressure.PAUSE
    assert scheduler.backpressure(paused=True, breaker_open=True) is Backpressure.HOLD
    assert scheduler.backpressure(paused=True, breaker_open=False) is Backpressure.RESUME


def test_revoke_voids_queued_and_in_admission_records() -> None:
    scheduler, _ = make()
    queue(scheduler, job("p0", tp=P0), job("p1", tp=P1))
    ticket = scheduler.begin_admission(2)
    scheduler.unassigned([P0])
    dropped = scheduler.forget([P0])
    assert ids(dropped) == ["p0"] and scheduler.pending == 1 + 2
    assert not scheduler.current(ticket, P0)
    assert scheduler.current(ticket, P1)
    scheduler.end_admission(ticket)


def test_a_rewind_voids_admissions_begun_before_it_only() -> None:
    scheduler, _ = make()
    before = scheduler.begin_admission(1)
    scheduler.forget([P0])  # rewound, still assigned
    after = scheduler.begin_admission(1)
    assert not scheduler.current(before, P0)
    assert scheduler.current(after, P0)


def test_drain_starts_nothing_new() -> None:
    scheduler, clock = make(size=1)
    queue(scheduler, job("a", deadline_ms=WALL_MS + 5), job("b"))
    scheduler.drain()
    clock.now += 1
    plan = scheduler.schedule({"b"})
    assert plan.batches == [] and plan.cancelled == [] and plan.expired == []
    assert scheduler.pending == 2  # left uncommitted for the next owner
