"""The rollups' bookkeeping and the services' task group, without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from sluicegate.runtime.supervise import serve_together, watch
from sluicegate.schemas.codec import encode, headers
from sluicegate.schemas.models import InferenceResult, Status, TelemetryEvent
from sluicegate.streams.records import ShadowDiff, WindowRollup
from sluicegate.streams.rollup_core import RollupCore, with_lag


@dataclass
class FakeRecord:
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=headers)
    topic: str = "sg.telemetry"
    partition: int = 0
    offset: int = 0


def request_event(ts_ms: int, *, pool: str = "cpu", status: Status = Status.OK) -> FakeRecord:
    event = TelemetryEvent(
        kind="request", model="text-embed", pool=pool, worker="w", ts_ms=ts_ms,
        model_version="1", status=status, request_id=f"r{ts_ms}", compute_ms=5.0,
    )  # fmt: skip
    return FakeRecord(value=encode(event))


def ok(rid: str, vec: list[float]) -> FakeRecord:
    result = InferenceResult(
        request_id=rid, status=Status.OK, model="text-embed", outputs={"embedding": vec}
    )
    return FakeRecord(value=encode(result), topic="sg.results")


def test_telemetry_fills_windows_that_close_after_grace_and_skip_undecodable_records() -> None:
    core = RollupCore(window_grace_s=2, shadow_window_s=10)
    records = [request_event(60_000 + i) for i in range(9)]
    records.append(request_event(60_100, status=Status.ERROR))
    core.add([*records, FakeRecord(value=b"\xc1 junk")], now_s=61.0)
    assert core.due(now_s=69.0) == ([], []), "the window is still open"
    closed, diffs = core.due(now_s=73.0)
    [ten] = [r for r in closed if r.window_s == 10]
    assert (ten.model, ten.pool, ten.version) == ("text-embed", "cpu", "1")
    assert ten.requests == 10 and ten.errors == 1 and diffs == []


def member(i: int, status: Status, queue_ms: float, tokens: int) -> TelemetryEvent:
    return TelemetryEvent(
        kind="request", model="text-embed", pool="cpu", worker="w", ts_ms=60_500,
        model_version="1", status=status, request_id=f"m{i}", batch_size=3,
        queue_ms=queue_ms, compute_ms=9.0, tokens=tokens,
    )  # fmt: skip


def test_a_batch_event_with_member_arrays_rolls_up_as_its_request_events_did() -> None:
    """Folding request telemetry into the batch event leaves every rollup as it was."""
    figures = [(Status.OK, 1.0, 5), (Status.ERROR, 2.5, 7), (Status.OK, 40.0, 3)]
    members = [member(i, status, q, t) for i, (status, q, t) in enumerate(figures)]
    batch = TelemetryEvent(
        kind="batch", model="text-embed", pool="cpu", worker="w", ts_ms=60_500,
        model_version="1", batch_size=3, tokens=15, padded_cost=21, queue_ms=40.0,
        compute_ms=9.0,
    )  # fmt: skip
    folded = batch.model_copy(
        update={
            "request_ids": [m.request_id for m in members],
            "statuses": [m.status for m in members],
            "member_queue_ms": [m.queue_ms for m in members],
            "member_tokens": [m.tokens for m in members],
            "member_pixels": [m.pixels for m in members],
        }
    )
    separate, together = (RollupCore(window_grace_s=2, shadow_window_s=10) for _ in range(2))
    separate.add([FakeRecord(value=encode(e)) for e in (*members, batch)], now_s=61.0)
    together.add([FakeRecord(value=encode(folded))], now_s=61.0)
    closed_separate, _ = separate.due(now_s=61.0, flush=True)
    closed_together, _ = together.due(now_s=61.0, flush=True)
    assert closed_together == closed_separate
    [ten] = [r for r in closed_together if r.window_s == 10]
    assert (ten.requests, ten.errors, ten.batches) == (3, 1, 1)
    assert ten.latency_ms.p50 > 9.0  # the members' queue + compute times went in


def test_member_arrays_must_line_up() -> None:
    with pytest.raises(ValueError, match="one length"):
        TelemetryEvent(
            kind="batch", model="m", pool="cpu", worker="w", ts_ms=0,
            request_ids=["a", "b"], statuses=[Status.OK], member_queue_ms=[1.0, 2.0],
            member_tokens=[1, 1], member_pixels=[0, 0],
        )  # fmt: skip


def test_flush_closes_every_open_window() -> None:
    core = RollupCore(window_grace_s=2, shadow_window_s=10)
    core.add([request_event(60_000)], now_s=61.0)
    closed, _ = core.due(now_s=61.0, flush=True)
    assert {r.window_s for r in closed} == {10, 60}


def test_primary_and_shadow_results_pair_into_a_diff_once_the_window_passed() -> None:
    core = RollupCore(window_grace_s=2, shadow_window_s=10)
    core.offer(ok("a", [1.0, 0.0]), shadow=False, now_s=100.0)
    core.offer(FakeRecord(value=b"junk"), shadow=True, now_s=100.0)  # skipped
    core.offer(ok("a", [1.0, 0.0]), shadow=True, now_s=100.5)
    assert core.due(now_s=101.0) == ([], [])
    _, diffs = core.due(now_s=111.0)
    [diff] = diffs
    assert isinstance(diff, ShadowDiff) and diff.pairs == 1


def test_lag_is_priced_at_the_windows_mean_cost() -> None:
    rollup = WindowRollup(
        model="text-embed", pool="cpu", version="1", window_s=10, start_ms=0, end_ms=10_000,
        requests=40, batches=4, mean_batch_size=10.0, cost_per_s=100.0,
    )  # fmt: skip
    # 1000 cost units over 40 members: 25 a record.
    assert with_lag(rollup, 8).lag_cost == 200.0


class Helper:
    failed: BaseException | None = None


async def test_a_failing_helper_stops_the_group_and_its_error_is_raised_as_itself() -> None:
    stop, helper, cancelled = asyncio.Event(), Helper(), asyncio.Event()

    async def loop() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fail_soon() -> None:
        await asyncio.sleep(0.05)
        helper.failed = ConnectionError("follower died")

    with pytest.raises(ConnectionError, match="follower died"):
        async with asyncio.timeout(5):
            await serve_together(loop(), fail_soon(), watch(stop, helper, interval_s=0.01))
    assert cancelled.is_set(), "the loop was cancelled, not left running"


async def test_the_group_ends_cleanly_once_stop_is_set() -> None:
    stop = asyncio.Event()

    async def loop() -> None:
        await stop.wait()

    asyncio.get_running_loop().call_later(0.05, stop.set)
    async with asyncio.timeout(5):
        await serve_together(loop(), watch(stop, Helper(), interval_s=0.01))
