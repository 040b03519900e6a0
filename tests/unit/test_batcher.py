"""The budget batcher with a fake clock: no Kafka, no Triton."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.workers.batcher import Batch, BatchPolicy, BudgetBatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(budget: int = 100, hard: int | None = None, size: int = 8, delay_us: int = 10_000):
    clock = FakeClock()
    policy = BatchPolicy(
        max_batch_size=size,
        max_queue_delay_microseconds=delay_us,
        budget=budget,
        hard_limit=hard or max(400, budget),
    )
    return BudgetBatcher[str](policy=policy, clock=clock), clock


def test_waits_for_delay_then_ships_a_partial_batch() -> None:
    batcher, clock = make()
    batcher.add("a", cost=10)
    assert batcher.next_batch() is None
    clock.advance(0.011)
    batch = batcher.next_batch()
    assert batch is not None and batch.items == ["a"]
    assert len(batcher) == 0


def test_padded_cost_closes_the_batch_before_the_budget() -> None:
    batcher, _ = make(budget=100)
    for name, cost in [("a", 20), ("b", 20), ("c", 20), ("d", 30)]:
        batcher.add(name, cost=cost)
    batch = batcher.next_batch()  # full: 4 * 30 = 120 > 100, so d waits
    assert batch is not None
    assert batch.items == ["a", "b", "c"]
    assert batch.padded_cost == 60 <= 100
    assert len(batcher) == 1


def test_max_batch_size_closes_the_batch() -> None:
    batcher, _ = make(budget=10_000, size=3)
    for i in range(5):
        batcher.add(f"r{i}", cost=1)
    batch = batcher.next_batch()
    assert batch is not None and batch.items == ["r0", "r1", "r2"]


def test_over_budget_request_runs_alone_and_over_hard_limit_is_rejected() -> None:
    batcher, _ = make(budget=100, hard=400)
    assert batcher.add("big", cost=300) is None
    batcher.add("small", cost=5)
    first = batcher.next_batch()
    assert first is not None and first.items == ["big"]
    rejection = batcher.add("huge", cost=401)
    assert rejection is not None and "401" in rejection.reason and "400" in rejection.reason
    assert "huge" not in [e for e in (batcher.next_batch(force=True) or Batch([], [1], [])).items]


def test_priority_then_deadline_order() -> None:
    batcher, clock = make(budget=1000, size=2)
    batcher.add("late", cost=1, deadline=clock.now + 50)
    batcher.add("soon", cost=1, deadline=clock.now + 5)
    batcher.add("urgent", cost=1, priority=5)
    batch = batcher.next_batch()
    assert batch is not None and batch.items == ["urgent", "soon"]


def test_expired_requests_never_reach_a_batch() -> None:
    batcher, clock = make()
    batcher.add("doomed", cost=1, deadline=clock.now + 0.005)
    batcher.add("fine", cost=1)
    clock.advance(0.02)
    assert batcher.take_expired() == ["doomed"]
    batch = batcher.next_batch()
    assert batch is not None and batch.items == ["fine"]


def test_next_wakeup_is_the_earliest_due_time() -> None:
    batcher, clock = make(delay_us=10_000)
    assert batcher.next_wakeup() is None
    batcher.add("a", cost=1)
    assert batcher.next_wakeup() == pytest.approx(clock.now + 0.01)
    batcher.add("b", cost=1, deadline=clock.now + 0.002)
    assert batcher.next_wakeup() == pytest.approx(clock.now + 0.002)


def test_remove_if_hands_items_back() -> None:
    batcher, _ = make()
    batcher.add("p0-a", cost=1)
    batcher.add("p1-a", cost=1)
    assert batcher.remove_if(lambda item: item.startswith("p0")) == ["p0-a"]
    assert len(batcher) == 1


arrivals = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=500),  # cost
        st.integers(min_value=0, max_value=2),  # priority
        st.floats(min_value=0, max_value=0.02),  # gap before arrival, seconds
        st.one_of(st.none(), st.floats(min_value=0.001, max_value=0.05)),  # deadline offset
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(arrivals)
def test_every_request_ends_exactly_once_within_budget(
    stream: list[tuple[int, int, float, float | None]],
) -> None:
    batcher, clock = make(budget=600, hard=1000, size=6, delay_us=5_000)
    seen: list[str] = []
    for i, (cost, priority, gap, deadline) in enumerate(stream):
        clock.advance(gap)
        due = None if deadline is None else clock.now + deadline
        assert batcher.add(f"r{i}", cost=cost, priority=priority, deadline=due) is None
        seen.extend(batcher.take_expired())
        while (batch := batcher.next_batch()) is not None:
            assert len(batch) <= 6
            assert len(batch) == 1 or batch.padded_cost <= 600
            seen.extend(batch.items)
    clock.advance(1.0)
    seen.extend(batcher.take_expired())
    while (batch := batcher.next_batch()) is not None:
        seen.extend(batch.items)
    assert sorted(seen) == sorted(f"r{i}" for i in range(len(stream)))
    assert len(batcher) == 0


def test_buckets_keep_short_requests_away_from_long_ones() -> None:
    batcher, clock = make(budget=10_000, size=64, delay_us=10_000)
    for i in range(8):
        batcher.add(f"short{i}", cost=10)
        batcher.add(f"long{i}", cost=200)
    clock.advance(0.011)  # everything waited out: both groups must ship now
    first = batcher.next_batch()
    second = batcher.next_batch()
    assert first is not None and second is not None and batcher.next_batch() is None
    groups = sorted([sorted(first.items), sorted(second.items)])
    assert groups == [sorted(f"long{i}" for i in range(8)), sorted(f"short{i}" for i in range(8))]
    assert first.padding_waste == 0.0 and second.padding_waste == 0.0


def test_near_sizes_share_a_batch_and_waste_is_reported() -> None:
    batcher, _ = make(budget=10_000, size=3)
    for name, cost in [("a", 100), ("b", 80), ("c", 120)]:
        batcher.add(name, cost=cost)
    batch = batcher.next_batch()  # full at max_batch_size
    assert batch is not None and sorted(batch.items) == ["a", "b", "c"]
    assert batch.padding_waste == pytest.approx(1 - 300 / 360)


TICK = 0.001
DELAY = 0.005


@settings(max_examples=150, deadline=None)
@given(arrivals)
def test_no_request_outwaits_the_delay_and_heads_are_the_most_urgent(
    stream: list[tuple[int, int, float, float | None]],
) -> None:
    batcher, clock = make(budget=600, hard=1000, size=6, delay_us=int(DELAY * 1e6))
    urgency: dict[str, tuple[int, float, int]] = {}
    arrived: dict[str, float] = {}
    pending: set[str] = set()

    def drain() -> None:
        for name in batcher.take_expired():
            pending.discard(name)
        while True:
            overdue = [n for n in pending if clock.now - arrived[n] >= DELAY]
            candidates = overdue or list(pending)
            expected_head = min(candidates, key=urgency.__getitem__) if candidates else None
            batch = batcher.next_batch()
            if batch is None:
                break
            assert batch.items[0] == expected_head
            pending.difference_update(batch.items)
        # capacity is always free here, so nothing may be left overdue
        assert all(clock.now - arrived[n] < DELAY for n in pending)

    for i, (cost, priority, gap, deadline) in enumerate(stream):
        steps = int(gap / TICK)
        for _ in range(steps):
            clock.advance(TICK)
            drain()
        name = f"r{i}"
        due = math.inf if deadline is None else clock.now + deadline
        urgency[name] = (-priority, due, i)
        arrived[name] = clock.now
        pending.add(name)
        batcher.add(name, cost=cost, priority=priority, deadline=None if deadline is None else due)
        drain()


def test_count_strategy_takes_arrival_order_regardless_of_cost() -> None:
    clock = FakeClock()
    policy = BatchPolicy(max_batch_size=3, budget=10, hard_limit=10_000, strategy="count")
    batcher = BudgetBatcher[str](policy=policy, clock=clock)
    for name, cost in [("a", 5), ("b", 900), ("c", 7), ("d", 1)]:
        assert batcher.add(name, cost=cost) is None
    batch = batcher.next_batch()
    # Full at max_batch_size; the budget (10) and the size buckets are ignored.
    assert batch is not None and batch.items == ["a", "b", "c"]
    assert batch.padded_cost == 3 * 900 and batch.padding_waste > 0.6
    assert batcher.next_batch() is None  # "d" waits for the delay
    clock.advance(policy.max_queue_delay + TICK)
    last = batcher.next_batch()
    assert last is not None and last.items == ["d"]


@settings(max_examples=100, deadline=None)
@given(arrivals)
def test_count_strategy_never_exceeds_max_batch_size_and_loses_nothing(
    stream: list[tuple[int, int, float, float | None]],
) -> None:
    clock = FakeClock()
    policy = BatchPolicy(
        max_batch_size=4,
        max_queue_delay_microseconds=5_000,
        budget=1,
        hard_limit=1000,
        strategy="count",
    )
    batcher = BudgetBatcher[str](policy=policy, clock=clock)
    seen: list[str] = []
    for i, (cost, priority, gap, _deadline) in enumerate(stream):
        clock.advance(gap)
        batcher.add(f"r{i}", cost=cost, priority=priority)
        while (batch := batcher.next_batch()) is not None:
            assert 1 <= len(batch) <= 4
            seen.extend(batch.items)
    clock.advance(1.0)
    while (batch := batcher.next_batch()) is not None:
        seen.extend(batch.items)
    assert sorted(seen) == sorted(f"r{i}" for i in range(len(stream)))
