"""The benchmark's outputs: results.json (stable keys), report.md, PNG plots."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .points import Point
from .run import BenchResult
from .simulated import headline, report_lines

__all__ = ["ratios", "write_report"]


def _peak(points: Sequence[Point], workload: str, mode: str) -> float:
    """A mode's capacity: its best throughput, on the backlog or at an open-loop load."""
    mine = [p.throughput_rps for p in points if p.workload == workload and p.mode == mode]
    return max(mine, default=0.0)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def ratios(result: BenchResult) -> dict[str, object]:
    """The headline figures, each a ratio of peak throughputs measured in this run."""
    pts = result.points
    workloads = sorted({p.workload for p in pts})
    out: dict[str, object] = {}
    modes = {p.mode for p in pts}
    counts = [m for m in modes if m.startswith("count-")]
    alt = next((m for m in modes if m.startswith("budget-")), None)
    for key, num, den in (
        ("pipeline_vs_direct", "budget", "direct"),
        ("budget_vs_unbatched", "budget", "unbatched"),
    ):
        out[key] = {w: _ratio(_peak(pts, w, num), _peak(pts, w, den)) for w in workloads}
    out["budget_vs_count"] = {
        w: _ratio(_peak(pts, w, "budget"), max((_peak(pts, w, c) for c in counts), default=0))
        for w in workloads
    }
    if alt is not None:
        transport = str(result.config.get("transport"))
        out[f"{transport}_vs_{alt.split('-', 1)[1]}"] = {
            w: _ratio(_peak(pts, w, "budget"), _peak(pts, w, alt)) for w in workloads
        }
    relay = result.relay
    out["null_vs_relay"] = _ratio(relay.get("null_rps", 0.0), relay.get("relay_rps", 0.0))
    router = result.router
    if router:
        out["router_vs_relay"] = _ratio(router.get("router_rps", 0.0), router.get("relay_rps", 0.0))
        # The router must outrun the workers it feeds (issue: >= 3x the pool's peak).
        peak = max((_peak(pts, "text", m) for m in ("budget", "direct")), default=0.0)
        out["router_vs_worker_peak"] = _ratio(router.get("router_rps", 0.0), peak)
    if result.pools:
        out["two_pools_vs_cpu"] = result.pools.get("two_pool_over_cpu", 0.0)
    if result.simulated:
        out["simulated_gpu"] = headline(result.simulated)
    return out


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def _table(points: Sequence[Point]) -> list[str]:
    rows = [
        "| workload | mode | offered /s | sent | ok | expired | failed | throughput /s "
        "| p50 ms | p95 ms | p99 ms | mean batch | padding waste |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        offered = "backlog" if p.offered_rps == float("inf") else f"{p.offered_rps:g}"
        rows.append(
            f"| {p.workload} | {p.mode} | {offered} | {p.sent} | {p.ok} | {p.expired} | "
            f"{p.failed} | {p.throughput_rps:.1f} | {_fmt(p.p50_ms)} | {_fmt(p.p95_ms)} | "
            f"{_fmt(p.p99_ms)} | {p.mean_batch:.1f} | {100 * p.padding_waste:.0f} % |"
        )
    return rows


def _plots(result: BenchResult, out: Path) -> list[str]:
    files = []
    for workload in sorted({p.workload for p in result.points}):
        pts = [p for p in result.points if p.workload == workload]
        modes = sorted({p.mode for p in pts})
        fig, ax = plt.subplots(figsize=(7, 4.5))
        finite = [p for p in pts if p.offered_rps != float("inf")]
        top = max(p.offered_rps for p in finite)
        for mode in modes:
            series = sorted((p.offered_rps, p.throughput_rps) for p in finite if p.mode == mode)
            (line,) = ax.plot(*zip(*series, strict=True), marker="o", label=mode)
            # The mode's capacity (best rate, backlog point included), drawn level.
            cap = _peak(pts, workload, mode)
            ax.axhline(cap, color=line.get_color(), linestyle="--", linewidth=0.8)
        ax.plot([0, top], [0, top], color="grey", linestyle=":", label="offered = served")
        ax.set(xlabel="offered load (requests/s)", ylabel="ok results/s")
        ax.set_title(f"{workload}: throughput vs offered load (dashed: each mode's best)")
        ax.legend()
        name = f"throughput-{workload}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

        highest = max(p.offered_rps for p in finite)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mode in modes:
            point = next(p for p in finite if p.mode == mode and p.offered_rps == highest)
            lat = np.sort(np.array(point.latencies_ms))
            if len(lat):
                ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=mode)
        ax.set_xscale("log")
        ax.set(xlabel="end-to-end latency (ms, log)", ylabel="share of ok results")
        ax.set_title(f"{workload}: latency CDF at {highest:g} requests/s offered")
        ax.legend()
        name = f"latency-cdf-{workload}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def write_report(result: BenchResult, out: Path, *, command: str) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    figures = ratios(result)
    data = {
        **figures,
        "capacity_rps": result.capacity_rps,
        "peak_worker_rss_mb": result.peak_rss_mb,
        "peak_triton_rss_mb": result.peak_triton_rss_mb,
        "over_budget_batches": result.over_budget_batches,
        "relay": result.relay,
        "router": result.router,
        "pools": result.pools,
        "simulated": result.simulated,
        "config": result.config,
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "points": [p.as_json() for p in result.points],
    }
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    plots = _plots(result, out)
    lines = [
        "# sluicegate benchmark",
        "",
        f"Produced by `{command}` on {_cpus()} CPU(s), no GPU. Every figure is measured in "
        "the same run; ratios compare capacity: each mode's best rate of ok results per second, "
        "on a backlog sent all at once (the `backlog` rows) or at an open-loop load. The "
        "open-loop rows show latency at loads below and above the direct path's capacity; "
        "requests carry a deadline, so an overloaded mode answers some `expired` instead of "
        "queueing without bound.",
        "",
        "## Headline ratios",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {json.dumps(v)} |" for k, v in figures.items()]
    lines += ["", "## Capacity and memory", ""]
    lines += [
        f"- direct-path capacity, {w}: {r:.1f} requests/s" for w, r in result.capacity_rps.items()
    ]
    lines += [f"- peak worker RSS, {k}: {v:.0f} MiB" for k, v in result.peak_rss_mb.items()]
    lines += [
        f"- peak Triton RSS (server + model stubs), {k}: {v:.0f} MiB"
        for k, v in result.peak_triton_rss_mb.items()
    ]
    if result.peak_triton_rss_mb:
        lines.append(
            "  (modes run in the order listed; ONNX Runtime keeps what it allocated, so a "
            "mode's Triton peak includes what earlier modes left)"
        )
    lines += [f"- over-budget batches, {k}: {v}" for k, v in result.over_budget_batches.items()]
    if result.relay:
        r = result.relay
        lines.append(
            f"- backlog of {r['records']:.0f}: bare relay {r['relay_rps']:.0f} records/s, "
            f"null-model worker {r['null_rps']:.0f} results/s"
        )
    if result.router:
        r = result.router
        lines.append(
            f"- ingress router: {r['router_rps']:.0f} records/s against a bare relay's "
            f"{r['relay_rps']:.0f} over {r['count']:.0f} records"
        )
    if result.pools:
        p = result.pools
        lines.append(
            f"- two pools (CPU + the a100 stand-in, {p['standin_share']:.0%} of requests on it) "
            f"{p['two_pool_rps']:.1f} requests/s vs the CPU pool alone {p['cpu_pool_rps']:.1f} "
            f"over {p['requests']:.0f} mixed texts through the router: "
            f"{p['two_pool_over_cpu']:.2f}x; both pools share this machine's cores"
        )
    lines += report_lines(result.simulated)
    lines += ["", "## Every point", "", *_table(result.points), "", "## Plots", ""]
    lines += [f"![{name}]({name})" for name in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return figures


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
