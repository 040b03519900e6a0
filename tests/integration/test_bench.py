"""`sluicegate bench run --quick` on the session's Kafka and Triton: the CI smoke run.

Asserts what the benchmark must get right whatever the machine's speed: every
request it sends is answered, in every mode and every one of the two
interleaved rounds, budget batches never pass the budget, Triton's own
dynamic batcher (the triton-dynamic baseline) really merged requests, the
report carries its stable keys, and each figure is a real measurement with a
value per round. Speed itself is never asserted (the figures go in the report).
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

KEYS = ("pipeline_vs_direct", "budget_vs_unbatched", "budget_vs_triton_dynamic", "null_vs_relay")


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
    assert modes == {"direct", "budget", "unbatched", "triton-dynamic"}
    # Every mode ran in both rounds, at both loads and the backlog.
    for mode in modes:
        assert sorted(p.round for p in result.points if p.mode == mode) == [0, 0, 0, 1, 1, 1]
    for point in result.points:
        # Every request got its one answer: ok, or expired by its deadline.
        assert point.failed == 0, point
        assert point.ok + point.expired == point.sent > 0
        assert point.ok == 0 or point.throughput_rps > 0
    assert result.over_budget_batches["text/budget"] == 0
    unbatched = [p for p in result.points if p.mode == "unbatched"]
    assert all(p.mean_batch == 1.0 for p in unbatched)
    # Triton's dynamic batcher merged the backlog's one-request calls (its statistics).
    dynamic = [p for p in result.points if p.mode == "triton-dynamic"]
    assert all(p.mean_batch > 1.0 for p in dynamic if p.offered_rps == float("inf")), dynamic
    assert result.relay["records"] == 1500 and result.relay["null_rps"] > 0
    assert result.router["count"] == 2000 and result.router["router_rps"] > 0
    for key in ("null_vs_relay", "router_vs_relay", "two_pools_vs_cpu"):
        assert len(result.samples[key]) == 2 and all(v > 0 for v in result.samples[key])
    load = result.config["load_start"]
    assert isinstance(load, list) and len(load) == 3
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
    for key in ("pipeline_vs_direct", "budget_vs_unbatched", "budget_vs_triton_dynamic"):
        value = data[key]["text"]
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    by_key = {f["key"]: f for f in data["figures"]}
    assert len(by_key["budget_vs_triton_dynamic.text"]["values"]) == 2
    assert by_key["budget_vs_triton_dynamic.text"]["met"] in (True, False)
    gap = by_key["low_load_p50_gap_ms.text"]
    assert len(gap["values"]) == 2 and all(math.isfinite(v) for v in gap["values"])
    assert data["null_vs_relay"] > 0 and data["router_vs_relay"] > 0
    assert data["two_pools_vs_cpu"] > 0
    assert len(data["points"]) == len(result.points)
    report = (out / "report.md").read_text()
    assert all(f"| text | {mode} |" in report for mode in modes)
    assert "| figure | median | spread (min – max) | rounds | goal | met? |" in report
    for plot in ("throughput-text.png", "latency-cdf-text.png", "ratios-per-round.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
