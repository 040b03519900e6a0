"""The bench's headline figures: per-round values, median, spread, goals (ops/bench/figures.py)."""

from __future__ import annotations

import math

from sluicegate.ops.bench.figures import (
    Figure,
    Goal,
    low_load_p50_gap,
    p99_ratio,
    point_figures,
    sample_figures,
    spread,
)
from sluicegate.ops.bench.points import Point

INF = float("inf")


def point(
    mode: str,
    rps: float,
    *,
    offered: float = INF,
    round_: int = 0,
    workload: str = "text",
    p50: float = 10.0,
    p99: float = 50.0,
    ok: int = 10,
    sent: int = 10,
) -> Point:
    return Point(
        mode=mode,
        workload=workload,
        offered_rps=offered,
        sent=sent,
        ok=ok,
        expired=0,
        failed=sent - ok,
        throughput_rps=rps,
        p50_ms=p50,
        p95_ms=p99,
        p99_ms=p99,
        mean_batch=1.0,
        padding_waste=0.0,
        round=round_,
    )


def test_spread_is_median_min_max_and_empty_is_none() -> None:
    assert spread([1.2, 0.8, 1.0]) == (1.0, 0.8, 1.2)
    assert spread([1.0, 2.0]) == (1.5, 1.0, 2.0)
    assert spread([]) == (None, None, None)


def test_goals_are_met_by_the_median_not_by_the_best_round() -> None:
    at_least = Figure(key="k", label="k", values=(1.4, 1.2, 1.25), goal=Goal(">=", 1.3))
    assert at_least.median == 1.25 and at_least.met is False
    at_most = Figure(key="k", label="k", values=(4.0, 6.0, 4.5), goal=Goal("<=", 5.0), unit="ms")
    assert at_most.met is True
    assert Figure(key="k", label="k", values=(1.0,)).met is None  # no goal
    assert Figure(key="k", label="k", values=(), goal=Goal(">=", 1)).met is None  # no value
    assert str(Goal(">=", 1.3)) == "≥ 1.3" and str(Goal("<=", 5.0)) == "≤ 5"


def test_capacity_ratios_are_computed_within_each_round() -> None:
    # Round 0: budget 200 vs dynamic 100 (2.0); round 1: 150 vs 150 (1.0); round 2: 300/200.
    pts = [
        point("budget", 200, round_=0),
        point("triton-dynamic", 100, round_=0),
        point("budget", 150, round_=1),
        point("triton-dynamic", 150, round_=1),
        point("budget", 300, round_=2),
        point("triton-dynamic", 200, round_=2),
        # A mode's capacity is its best rate in the round, open-loop points included.
        point("budget", 250, offered=100.0, round_=0),
    ]
    figs = {f.key: f for f in point_figures(pts, transport="shm", capacity_rps={"text": 180})}
    fig = figs["budget_vs_triton_dynamic.text"]
    assert fig.values == (2.5, 1.0, 1.5)
    assert fig.median == 1.5 and fig.goal == Goal(">=", 1.3) and fig.met is True
    assert "pipeline_vs_direct.text" not in figs  # no direct points, no figure


def test_count_ratio_takes_the_best_count_mode_and_alt_transport_is_named() -> None:
    pts = [
        point("budget", 100),
        point("count-8", 40),
        point("count-32", 50),
        point("budget-grpc", 80),
    ]
    figs = {f.key: f for f in point_figures(pts, transport="shm", capacity_rps={})}
    assert figs["budget_vs_count.text"].values == (2.0,)
    assert figs["shm_vs_grpc.text"].values == (1.25,)


def test_low_load_gap_is_budget_minus_unbatched_p50_at_the_lowest_load() -> None:
    pts = [
        point("budget", 50, offered=50.0, p50=14.0),
        point("unbatched", 50, offered=50.0, p50=11.5),
        point("budget", 90, offered=150.0, p50=80.0),
        point("unbatched", 60, offered=150.0, p50=900.0),
    ]
    assert low_load_p50_gap(pts, "text") == 2.5
    assert low_load_p50_gap(pts, "image") is None
    # A side that answered nothing ok has no p50: no figure rather than NaN.
    silent = [point("budget", 0, offered=50.0, ok=0, p50=math.nan), pts[1]]
    assert low_load_p50_gap(silent, "text") is None


def test_p99_ratio_uses_the_highest_load_under_capacity_where_both_answered_all() -> None:
    pts = [
        point("budget", 50, offered=50.0, p99=40.0),
        point("triton-dynamic", 50, offered=50.0, p99=80.0),
        # Under capacity, but triton-dynamic shed requests here: skipped.
        point("budget", 130, offered=130.0, p99=100.0),
        point("triton-dynamic", 110, offered=130.0, p99=900.0, ok=8),
        # Above capacity (200): never the comparison point.
        point("budget", 150, offered=300.0, p99=1000.0),
        point("triton-dynamic", 100, offered=300.0, p99=2000.0),
    ]
    assert p99_ratio(pts, "text", "budget", "triton-dynamic", below=200.0) == 0.5
    assert p99_ratio(pts, "text", "budget", "triton-dynamic", below=10.0) is None


def test_sample_figures_carry_labels_and_goals_and_accept_new_keys() -> None:
    figs = {f.key: f for f in sample_figures({"null_vs_relay": [0.4, 0.6, 0.5], "new": [2.0]})}
    assert figs["null_vs_relay"].goal == Goal(">=", 0.5) and figs["null_vs_relay"].met is True
    assert figs["new"].label == "new" and figs["new"].goal is None
    data = figs["null_vs_relay"].as_json()
    assert data["median"] == 0.5 and data["min"] == 0.4 and data["max"] == 0.6
    assert data["goal"] == "≥ 0.5" and data["met"] is True and data["values"] == [0.4, 0.6, 0.5]
