"""`sluicegate bench run --quick` on the session's Kafka and Triton: the CI smoke run.

Asserts what the benchmark must get right whatever the machine's speed: every
request it sends is answered, budget batches never pass the budget, the
report carries its stable keys, and each figure is a real measurement.
Speed itself is never asserted (the figures go in the report).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sluicegate.ops.bench.report import write_report
from sluicegate.ops.bench.run import BenchConfig, run_bench
from sluicegate.ops.stack.stack import LocalStack

pytestmark = pytest.mark.integration

KEYS = ("pipeline_vs_direct", "budget_vs_unbatched", "budget_vs_count", "null_vs_relay")


async def test_quick_bench_answers_everything_and_writes_its_report(
    stack: LocalStack, tmp_path: Path
) -> None:
    ticks: list[tuple[str, int, int]] = []
    result = await run_bench(
        BenchConfig(quick=True),
        say=lambda _msg: None,
        tick=lambda label, done, total: ticks.append((label, done, total)),
        servers=(stack.settings.kafka(), stack.settings.triton_url, stack.triton.admin_key()),
    )
    modes = {p.mode for p in result.points}
    assert modes == {"direct", "budget", "unbatched", "count-8"}
    for point in result.points:
        # Every request got its one answer: ok, or expired by its deadline.
        assert point.failed == 0, point
        assert point.ok + point.expired == point.sent > 0
        assert point.ok == 0 or point.throughput_rps > 0
    assert result.over_budget_batches["text/budget"] == 0
    unbatched = [p for p in result.points if p.mode == "unbatched"]
    assert all(p.mean_batch == 1.0 for p in unbatched)
    assert all(p.mean_batch <= 8 for p in result.points if p.mode == "count-8")
    assert result.relay["records"] == 1500 and result.relay["null_rps"] > 0
    assert result.router["count"] == 2000 and result.router["router_rps"] > 0
    # (f) both runs answered all 100 requests (wait() raises otherwise), some on the stand-in.
    assert result.pools["requests"] == 100 and result.pools["cpu_pool_rps"] > 0
    assert result.pools["two_pool_rps"] > 0 and 0 < result.pools["standin_share"] < 1
    assert any(done == total for _, done, total in ticks)  # progress reached the end
    # (g) one simulated H100 fed by 1, then 2 worker processes: measured, not made up.
    sim = result.simulated
    assert sim["h100_rps_1p"] > 0 and 0 < sim["h100_util_1p"] <= 1 and sim["h100_procs_run"] >= 2

    out = tmp_path / "bench"
    figures = write_report(result, out, command="pytest")
    data = json.loads((out / "results.json").read_text())
    for key in KEYS:
        assert key in data and key in figures
    for key in ("pipeline_vs_direct", "budget_vs_unbatched", "budget_vs_count"):
        value = data[key]["text"]
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert data["null_vs_relay"] > 0 and data["router_vs_relay"] > 0
    assert data["two_pools_vs_cpu"] > 0
    assert len(data["points"]) == len(result.points)
    report = (out / "report.md").read_text()
    assert all(f"| text | {mode} |" in report for mode in modes)
    for plot in ("throughput-text.png", "latency-cdf-text.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
