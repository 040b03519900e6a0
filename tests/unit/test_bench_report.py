"""The bench report: headline table, stable results.json keys, plots (ops/bench/report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from sluicegate.ops.bench.figures import Figure, Goal
from sluicegate.ops.bench.points import Point
from sluicegate.ops.bench.report import headline_table, write_report
from sluicegate.ops.bench.run import BenchResult

PNG = b"\x89PNG\r\n\x1a\n"

# What `bench_simulated` returns for one H100 and one worker process.
SIMULATED = {
    "simulated_records": 6000.0,
    "h100_rps_1p": 800.0,
    "h100_util_1p": 0.004,
    "h100_card_rps": 207600.0,
    "h100_mean_batch": 12.0,
    "h100_procs_needed": 239.0,
    "h100_procs_run": 1.0,
    "h100_best_util": 0.004,
}


def _point(mode: str, offered: float, rps: float, round_: int, p50: float) -> Point:
    return Point(
        mode=mode,
        workload="text",
        offered_rps=offered,
        sent=20,
        ok=20,
        expired=0,
        failed=0,
        throughput_rps=rps,
        p50_ms=p50,
        p95_ms=2 * p50,
        p99_ms=3 * p50,
        mean_batch=4.0,
        padding_waste=0.1,
        latencies_ms=(p50, 2 * p50, 3 * p50),
        round=round_,
    )


def _result() -> BenchResult:
    rates = {"direct": 200.0, "budget": 180.0, "unbatched": 90.0, "triton-dynamic": 120.0}
    points = []
    for r, scale in enumerate((1.0, 0.8)):
        for mode, rps in rates.items():
            p50 = 12.0 if mode == "budget" else 10.0
            points.append(_point(mode, 50.0, 50.0, r, p50))
            points.append(_point(mode, float("inf"), rps * scale, r, 40 * p50))
    return BenchResult(
        points=points,
        capacity_rps={"text": 200.0},
        relay={"relay_rps": 10000.0, "null_rps": 4000.0, "records": 1500},
        router={"count": 2000, "relay_rps": 9000.0, "router_rps": 3000.0},
        samples={"null_vs_relay": [0.4, 0.42], "router_vs_relay": [0.3, 0.35]},
        simulated=SIMULATED,
        config={
            "transport": "shm",
            "rounds": 2,
            "load_start": [12.0, 8.0, 4.0],
            "load_end": [14.0, 9.0, 5.0],
            "wall_s": 480.0,
        },
    )


def test_headline_table_gives_median_spread_goal_and_met() -> None:
    rows = headline_table(
        [
            Figure(key="a", label="budget ÷ x", values=(1.1, 1.5, 1.4), goal=Goal(">=", 1.3)),
            Figure(key="b", label="gap", values=(7.0,), goal=Goal("<=", 5.0), unit="ms"),
            Figure(key="c", label="info", values=()),
        ]
    )
    assert rows[0].startswith("| figure | median | spread")
    assert rows[2] == "| budget ÷ x | 1.40 | 1.10 – 1.50 | 3 | ≥ 1.3 | yes |"
    assert rows[3] == "| gap | +7.0 ms | +7.0 ms – +7.0 ms | 1 | ≤ 5 ms | **no** |"
    assert rows[4] == "| info | - | - | 0 | - | - |"


def test_report_renders_every_figure_with_its_spread_and_keeps_stable_keys(
    tmp_path: Path,
) -> None:
    headline = write_report(_result(), tmp_path, command="test")
    data = json.loads((tmp_path / "results.json").read_text())
    # Stable keys: medians over rounds (round 0: 180/200, round 1: 144/160, both 0.9).
    assert data["pipeline_vs_direct"] == {"text": 0.9} == headline["pipeline_vs_direct"]
    assert data["budget_vs_triton_dynamic"] == {"text": 1.5}
    assert data["budget_vs_unbatched"] == {"text": 2.0}
    assert data["null_vs_relay"] == 0.41 and data["router_vs_relay"] == 0.325
    assert data["low_load_p50_gap_ms"] == {"text": 2.0}
    by_key = {f["key"]: f for f in data["figures"]}
    assert by_key["null_vs_relay"]["values"] == [0.4, 0.42]
    assert by_key["null_vs_relay"]["met"] is False
    assert data["simulated"] == SIMULATED
    assert all(p["round"] in (0, 1) for p in data["points"])

    report = (tmp_path / "report.md").read_text()
    assert (
        "| budget ÷ triton-dynamic (capacity), text | 1.50 | 1.50 – 1.50 | 2 | ≥ 1.3 | yes |"
        in (report)
    )
    assert "| p50 budget − unbatched at the lowest load (ms), text | +2.0 ms |" in report
    assert "[12.0, 8.0, 4.0]" in report and "[14.0, 9.0, 5.0]" in report
    assert "8.0 min wall time, 2 rounds" in report
    assert "## Capacity planning: one simulated GPU" in report
    assert "| h100 | 1 | 800 | 0.4% |" in report
    assert "| simulated H100 busy share, best process count tried | 0.00 |" in report
    assert "| text | triton-dynamic | 2 | backlog |" in report  # every point, every round
    for plot in (
        "throughput-text.png",
        "latency-cdf-text.png",
        "ratios-per-round.png",
    ):
        assert (tmp_path / plot).read_bytes()[:8] == PNG
        assert f"![{plot}]({plot})" in report
