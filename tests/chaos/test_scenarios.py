"""The fault scenarios at small, bounded sizes, on a chaos stack of their own.

Each test seeds unique requests through real router processes into real
worker processes, injects its
fault, and reads every result back `read_committed`: nothing lost, and in
exactly_once mode nothing duplicated. The full-size runs (10,000 requests,
60 s bursts, the 3-broker cluster) are `make chaos` / `sluicegate chaos run`;
the `chaos`-marked tests here run them through pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluicegate.ops.chaos.main import run_one
from sluicegate.ops.chaos.run import Options, Report
from sluicegate.ops.chaos.scenarios import SCENARIOS
from sluicegate.ops.chaos.stack import ChaosStack

from ..conftest import CACHE_DIR

pytestmark = pytest.mark.integration

SMALL = Options(kills=2, burst_s=3.0, slow_s=6.0)


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    stack = ChaosStack(root=tmp_path_factory.mktemp("chaos"), cache_dir=CACHE_DIR)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def check(report: Report, *, faults: int) -> None:
    detail = f"{report}"
    assert not report.timed_out, detail
    assert report.sent > 0 and report.lost == 0, detail
    if report.mode == "exactly_once":
        assert report.duplicated == 0, detail
    assert len(report.faults) >= faults, detail
    assert report.passed


def run(stack: ChaosStack, name: str, requests: int = 150, **kw: object) -> Report:
    mode = str(kw.get("mode", "exactly_once"))
    return run_one(stack, SCENARIOS[name], requests=requests, mode=mode, options=SMALL)


def test_kill_dash_nine_workers_mid_batch(chaos_stack: ChaosStack) -> None:
    report = run(chaos_stack, "kill-worker", 200)
    check(report, faults=4)
    assert report.by_status["ok"] == report.sent


def test_workers_join_and_leave_mid_run(chaos_stack: ChaosStack) -> None:
    report = run(chaos_stack, "scale-workers", 200)
    check(report, faults=4)
    assert report.rebalances >= 4


def test_kill_dash_nine_a_router_mid_transaction(chaos_stack: ChaosStack) -> None:
    """Every scenario goes through the router now; this one kills it (one of two)."""
    report = run(chaos_stack, "kill-router", 150)
    check(report, faults=4)


def test_broker_restart_mid_run(chaos_stack: ChaosStack) -> None:
    check(run(chaos_stack, "broker-restart"), faults=2)


def test_triton_kill_and_restart_mid_run(chaos_stack: ChaosStack) -> None:
    report = run(chaos_stack, "triton-restart")
    check(report, faults=2)
    # The breaker held the batches through the outage instead of failing them.
    assert report.by_status["ok"] == report.sent, report


def test_batch_slower_than_max_poll_interval(chaos_stack: ChaosStack) -> None:
    report = run(chaos_stack, "slow-triton", 100)
    check(report, faults=2)
    # No rebalance loop (aiokafka #848): the batches run beside the poll loop, so
    # the workers stay in their group; two workers join once each (3 assignments).
    assert report.rebalances <= 4, report


def test_overload_burst_answers_expired_and_drains(chaos_stack: ChaosStack) -> None:
    report = run(chaos_stack, "overload", 150)
    check(report, faults=2)
    assert report.by_status["expired"] > 0, report
    # Memory stays bounded by the in-flight budget, not by the backlog.
    assert report.max_worker_rss_mb < 1500, report


@pytest.mark.chaos
@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_full_size_scenario(name: str, mode: str, tmp_path: Path) -> None:
    """`sluicegate chaos run` sizes: 10,000 requests, 5 kills, a 60 s burst."""
    scenario = SCENARIOS[name]
    stack = ChaosStack(root=tmp_path, cache_dir=CACHE_DIR, brokers=scenario.brokers)
    try:
        stack.start()
        report = run_one(stack, scenario, requests=10_000, mode=mode, options=Options())
    finally:
        stack.stop()
    check(report, faults=2)
