"""The worker's scheduler with fake records and a fake clock: no Kafka, no Triton."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from sluicegate.inference.io import ModelInputs
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.models import InferenceRequest
from sluicegate.workers.admission import Admitted
from sluicegate.workers.batcher import Batch, BatchPolicy, Strategy
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
    idle_dispatch: bool = True,
    strategy: Strategy = "budget",
) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    policy = BatchPolicy(
        max_batch_size=size,
        max_queue_delay_microseconds=10_000,
        budget=budget,
        hard_limit=400,
        idle_dispatch=idle_dispatch,
        strategy=strategy,
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


def busy(scheduler: Scheduler) -> Batch[Job]:
    """Start one batch, so the backend is busy and partial batches wait their delay."""
    queue(scheduler, job("running", cost=100))
    [running] = scheduler.schedule().batches
    assert not scheduler.idle
    return running


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


def test_a_partial_batch_waits_for_the_queue_delay_while_a_batch_runs() -> None:
    scheduler, clock = make()
    busy(scheduler)
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
    busy(scheduler)
    queue(scheduler, job("late", deadline_ms=WALL_MS + 5), job("fine"))
    clock.now += 0.006  # past the deadline, before the queue delay
    plan = scheduler.schedule()
    assert ids(plan.expired) == ["late"] and plan.batches == []
    assert scheduler.pending == 1


def test_cancelled_requests_leave_the_queue() -> None:
    scheduler, _ = make()
    busy(scheduler)
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


# -- don't wait for batch mates that aren't coming ------------------------------


def test_a_lone_request_starts_at_once_while_the_backend_is_idle() -> None:
    scheduler, _ = make()
    queue(scheduler, job("lone"))
    plan = scheduler.schedule()  # no clock advance: no delay waited
    assert [ids(b.items) for b in plan.batches] == [["lone"]]
    assert scheduler.pending == 0 and scheduler.in_flight_batches == 1


def test_an_idle_dispatch_takes_everything_queued_that_fits_and_leaves_the_rest_waiting() -> None:
    scheduler, clock = make(budget=100)
    queue(scheduler, *(job(f"r{i}", cost=25) for i in range(6)))
    plan = scheduler.schedule()
    # Idle: one packed batch (4 x 25 = the budget) starts; the 2 left over are a
    # partial batch and wait now that the backend is busy, not a second idle start.
    assert [len(b) for b in plan.batches] == [4]
    assert scheduler.pending == 2 and not scheduler.idle
    assert scheduler.schedule().batches == []
    clock.now += 0.011
    assert [len(b) for b in scheduler.schedule().batches] == [2]


def test_with_a_batch_in_flight_arrivals_wait_and_pack_on_budget() -> None:
    scheduler, _ = make(budget=100)
    running = busy(scheduler)
    queue(scheduler, job("a", cost=25), job("b", cost=25))
    assert scheduler.schedule().batches == []  # busy: wait for mates
    queue(scheduler, job("c", cost=25), job("d", cost=25))
    plan = scheduler.schedule()
    assert [ids(b.items) for b in plan.batches] == [["a", "b", "c", "d"]]  # closed on budget
    scheduler.finished(running)
    scheduler.finished(plan.batches[0])
    assert scheduler.idle


def test_when_the_backend_falls_idle_what_queued_meanwhile_starts_at_once() -> None:
    scheduler, _ = make(budget=100)
    running = busy(scheduler)
    queue(scheduler, job("a", cost=25), job("b", cost=25))
    assert scheduler.schedule().batches == []
    scheduler.finished(running)
    plan = scheduler.schedule()  # still inside the delay
    assert [ids(b.items) for b in plan.batches] == [["a", "b"]]


def test_records_in_admission_are_mates_worth_waiting_for() -> None:
    scheduler, _ = make()
    ticket = scheduler.begin_admission(3)
    queue(scheduler, job("first"))
    assert not scheduler.idle and scheduler.schedule().batches == []
    scheduler.end_admission(ticket)
    queue(scheduler, job("second"), job("third"))
    assert [ids(b.items) for b in scheduler.schedule().batches] == [["first", "second", "third"]]


def test_idle_means_fewer_than_half_the_in_flight_limit_running() -> None:
    scheduler, _ = make(size=1, in_flight=4, budget=100)
    queue(scheduler, job("x", cost=100))
    first = scheduler.schedule().batches  # 1 running: below 4 // 2, still idle
    assert len(first) == 1 and scheduler.idle
    queue(scheduler, job("y"))
    # size 1: "y" is a full batch anyway; 2 running now: busy
    assert len(scheduler.schedule().batches) == 1 and not scheduler.idle


def test_an_idle_dispatch_keeps_priority_and_deadline_order() -> None:
    scheduler, _ = make()
    busy_batch = busy(scheduler)
    # Sizes far apart (no shared bucket): the idle start can take only one of them.
    queue(scheduler, job("plain", cost=10), job("urgent", cost=100, deadline_ms=WALL_MS + 50))
    scheduler.finished(busy_batch)
    assert [ids(b.items) for b in scheduler.schedule().batches] == [["urgent"]]
    assert scheduler.pending == 1  # "plain" waits: the backend is busy again


def test_cancelled_and_expired_jobs_leave_before_an_idle_dispatch() -> None:
    scheduler, clock = make()
    running = busy(scheduler)
    queue(scheduler, job("gone"), job("late", deadline_ms=WALL_MS + 5), job("kept"))
    clock.now += 0.006
    scheduler.finished(running)
    plan = scheduler.schedule({"gone"})
    assert ids(plan.cancelled) == ["gone"] and ids(plan.expired) == ["late"]
    assert [ids(b.items) for b in plan.batches] == [["kept"]]


@pytest.mark.parametrize(
    ("idle_dispatch", "strategy"), [(False, "budget"), (True, "count")], ids=["off", "count"]
)
def test_idle_dispatch_off_and_the_count_baseline_wait_the_delay(
    idle_dispatch: bool, strategy: Strategy
) -> None:
    scheduler, clock = make(idle_dispatch=idle_dispatch, strategy=strategy)
    queue(scheduler, job("lone"))
    assert scheduler.schedule().batches == []
    clock.now += 0.011
    assert [ids(b.items) for b in scheduler.schedule().batches] == [["lone"]]
