"""The benchmark's outputs: results.json (stable keys), report.md, PNG plots."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sluicegate.ops.models.bench_repository import DYNAMIC

from .figures import Figure, capacity, point_figures, ratio, sample_figures, spread
from .points import Point
from .run import BenchResult
from .simulated import headline, report_lines

__all__ = ["figures", "headline_table", "ratios", "write_report"]


def figures(result: BenchResult) -> list[Figure]:
    """Every headline figure of `result`: one value per round, median, spread, goal."""
    transport = str(result.config.get("transport"))
    return [
        *point_figures(result.points, transport=transport, capacity_rps=result.capacity_rps),
        *sample_figures(result.samples),
        # (h) the simulated H100: one round (simulated.py stops adding processes at 90 %).
        *sample_figures({f"simulated_{k}": [v] for k, v in headline(result.simulated).items()}),
    ]


def ratios(result: BenchResult, figs: Sequence[Figure] | None = None) -> dict[str, object]:
    """The headline figures' medians under stable keys: `pipeline_vs_direct: {text: ...}`,
    `null_vs_relay: ...` (results.json and what `sluicegate bench run` prints)."""
    out: dict[str, object] = {}
    for fig in figs if figs is not None else figures(result):
        key, _, workload = fig.key.partition(".")
        if workload:
            per = out.setdefault(key, {})
            assert isinstance(per, dict)
            per[workload] = fig.median
        else:
            out[key] = fig.median
    router = result.router
    if router:
        # The router must outrun the workers it feeds (issue: >= 3x the pool's peak).
        peak = max((capacity(result.points, "text", m) for m in ("budget", "direct")), default=0.0)
        out["router_vs_worker_peak"] = ratio(router.get("router_rps", 0.0), peak)
    if result.simulated:
        out["simulated_gpu"] = headline(result.simulated)
    return out


def _value(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    return f"{x:+.1f} ms" if unit == "ms" else f"{x:.2f}"


def headline_table(figs: Sequence[Figure]) -> list[str]:
    """figure | median | spread | goal | met? (markdown rows)."""
    rows = [
        "| figure | median | spread (min – max) | rounds | goal | met? |",
        "|---|---:|---|---:|---|---|",
    ]
    for fig in figs:
        med, lo, hi = spread(fig.values)
        span = "-" if lo is None else f"{_value(lo, fig.unit)} – {_value(hi, fig.unit)}"
        goal = "-" if fig.goal is None else f"{fig.goal}{' ms' if fig.unit == 'ms' else ''}"
        met = {True: "yes", False: "**no**", None: "-"}[fig.met]
        rows.append(
            f"| {fig.label} | {_value(med, fig.unit)} | {span} | {len(fig.values)} | {goal} "
            f"| {met} |"
        )
    return rows


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def _table(points: Sequence[Point]) -> list[str]:
    rows = [
        "| workload | mode | round | offered /s | sent | ok | expired | failed | throughput /s "
        "| p50 ms | p95 ms | p99 ms | mean batch | padding waste |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = sorted(points, key=lambda p: (p.workload != "text", p.mode, p.offered_rps, p.round))
    for p in ordered:
        offered = "backlog" if p.offered_rps == float("inf") else f"{p.offered_rps:g}"
        rows.append(
            f"| {p.workload} | {p.mode} | {p.round + 1} | {offered} | {p.sent} | {p.ok} | "
            f"{p.expired} | {p.failed} | {p.throughput_rps:.1f} | {_fmt(p.p50_ms)} | "
            f"{_fmt(p.p95_ms)} | {_fmt(p.p99_ms)} | {p.mean_batch:.1f} | "
            f"{100 * p.padding_waste:.0f} % |"
        )
    return rows


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plots(result: BenchResult, out: Path, figs: Sequence[Figure]) -> list[str]:
    files = []
    for workload in sorted({p.workload for p in result.points}, reverse=True):
        pts = [p for p in result.points if p.workload == workload]
        modes = sorted({p.mode for p in pts})
        fig, ax = plt.subplots(figsize=(7, 4.5))
        finite = [p for p in pts if p.offered_rps != float("inf")]
        top = max(p.offered_rps for p in finite)
        for mode in modes:
            loads = sorted({p.offered_rps for p in finite if p.mode == mode})
            served = [
                float(np.median([p.throughput_rps for p in _at(finite, mode, x)])) for x in loads
            ]
            (line,) = ax.plot(loads, served, marker="o", label=mode)
            # The mode's capacity (median over rounds of its best rate), drawn level.
            caps = [
                capacity([p for p in pts if p.round == r], workload, mode) for r in _rounds(pts)
            ]
            ax.axhline(float(np.median(caps)), color=line.get_color(), linestyle="--", lw=0.8)
        ax.plot([0, top], [0, top], color="grey", linestyle=":", label="offered = served")
        ax.set(xlabel="offered load (requests/s)", ylabel="ok results/s (median over rounds)")
        ax.set_title(f"{workload}: throughput vs offered load (dashed: each mode's capacity)")
        ax.legend()
        files.append(_save(fig, out, f"throughput-{workload}.png"))

        highest = max(p.offered_rps for p in finite)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mode in modes:
            # Every round's latencies at that load, pooled.
            lat = np.sort(np.array([x for p in _at(finite, mode, highest) for x in p.latencies_ms]))
            if len(lat):
                ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=mode)
        ax.set_xscale("log")
        ax.set(xlabel="end-to-end latency (ms, log)", ylabel="share of ok results")
        ax.set_title(f"{workload}: latency CDF at {highest:g} requests/s offered, all rounds")
        ax.legend()
        files.append(_save(fig, out, f"latency-cdf-{workload}.png"))
    shown = [f for f in figs if f.unit == "×" and f.values]
    if shown:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.5))
        for row, f in enumerate(shown):
            ax.scatter(f.values, [row] * len(f.values), color="tab:blue", zorder=3, s=18)
            med = f.median
            if med is not None:
                ax.scatter([med], [row], marker="|", color="black", s=200, zorder=4)
            if f.goal is not None:
                ax.scatter([f.goal.target], [row], marker="x", color="tab:red", zorder=2)
        ax.set_yticks(range(len(shown)), [f.label for f in shown], fontsize=7)
        ax.axvline(1.0, color="grey", linestyle=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("ratio (log); dots: one per round, bar: median, x: goal")
        ax.set_title("headline ratios, every round")
        files.append(_save(fig, out, "ratios-per-round.png"))
    return files


def _at(points: Sequence[Point], mode: str, load: float) -> list[Point]:
    """`mode`'s points at offered load `load`, every round."""
    return [p for p in points if p.mode == mode and p.offered_rps == load]


def _rounds(points: Sequence[Point]) -> list[int]:
    return sorted({p.round for p in points})


_HOW = (
    "Every figure is measured in the same run. Modes run in rounds: every mode once per "
    "round, in the listed order in odd rounds and reversed in even ones (ABAB), each on a "
    "fresh worker process and fresh topics, so run order cannot decide a result. Each "
    "figure is computed within a round and reported as the median over rounds with its "
    "min – max spread. Capacity ratios compare each mode's best rate of ok results per "
    "second, on a backlog sent all at once (the `backlog` rows) or at an open-loop load; "
    "the open-loop rows show latency at loads that are fractions of the direct path's "
    "capacity; requests carry a deadline, so an overloaded mode answers some `expired` "
    'instead of queueing without bound. "At saturation, no loss of throughput" is the '
    "backlog capacity: pipeline ÷ direct and budget ÷ unbatched."
)

_DYNAMIC = (
    "`triton-dynamic` is what most teams hand-roll instead: a plain aiokafka consumer "
    "(`ops/bench/dynamic.py`, a process of its own) sending each request in its own gRPC "
    "call, up to 2 × max_batch_size in flight, to a bench-only copy of the model "
    "(`<model>-dyn`, `ops/models/bench_repository.py`) with Triton's `dynamic_batching` "
    "on ({knobs}), "
    "on a Triton the bench starts for it; the copy runs each merged batch as one padded "
    "pipeline call. Its `mean batch` comes from Triton's statistics, its padding waste is "
    "not reported (0 %). The p99 comparison is at the highest offered load below the "
    "direct path's capacity where both answered everything."
)

_COUNT = (
    "count-N is kept in the full run only, one N per mix: it is the same worker with only "
    "the batching policy changed (count + delay in arrival order, like Triton's batcher), "
    "so it isolates what the budget policy buys from what the process, the transport and "
    "the Kafka loop cost, which triton-dynamic (a different client, a different server "
    "instance) mixes together. The quick run drops it."
)


def _knobs() -> str:
    return "; ".join(
        f"{model}: preferred {'/'.join(map(str, d.preferred_batch_size))}, "
        f"max {d.max_batch_size}, {d.max_queue_delay_microseconds / 1000:g} ms delay"
        for model, d in DYNAMIC.items()
    )


def write_report(result: BenchResult, out: Path, *, command: str) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    figs = figures(result)
    headline = ratios(result, figs)
    cfg = result.config
    data = {
        **headline,
        "figures": [f.as_json() for f in figs],
        "capacity_rps": result.capacity_rps,
        "peak_worker_rss_mb": result.peak_rss_mb,
        "peak_triton_rss_mb": result.peak_triton_rss_mb,
        "over_budget_batches": result.over_budget_batches,
        "relay": result.relay,
        "router": result.router,
        "pools": result.pools,
        "samples": result.samples,
        "simulated": result.simulated,
        "config": cfg,
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "points": [p.as_json() for p in result.points],
    }
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    plots = _plots(result, out, figs)
    wall = cfg.get("wall_s")
    minutes = f"{float(wall) / 60:.1f} min" if isinstance(wall, int | float) else "?"
    lines = [
        "# sluicegate benchmark",
        "",
        f"Produced by `{command}` on {_cpus()} CPU(s), no GPU, in {minutes} wall time, "
        f"{cfg.get('rounds', 1)} rounds. Load average (1, 5, 15 min) at the start "
        f"{cfg.get('load_start', '?')}, at the end {cfg.get('load_end', '?')}: the machine "
        "is shared, so absolute rates move between runs; the ratios compare modes measured "
        "side by side.",
        "",
        _HOW,
        "",
        "## Headline figures",
        "",
        *headline_table(figs),
        "",
        _DYNAMIC.format(knobs=_knobs()),
        "",
        _COUNT,
        "",
    ]
    if cfg.get("tuned_file"):
        lines += [
            f"The image workers' budget modes read the tuned budget `{cfg['tuned_file']}`.",
            "",
        ]
    else:
        lines += [
            "Budgets: each model's default (`sluicegate bench run --tuned-file FILE` gives "
            "the image workers' budget modes a `sluicegate tune` result instead).",
            "",
        ]
    lines += ["## Capacity and memory", ""]
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
            "  (ONNX Runtime keeps what it allocated, so a mode's Triton peak includes what "
            "modes before it left; triton-dynamic runs on a Triton of its own)"
        )
    lines += [f"- over-budget batches, {k}: {v}" for k, v in result.over_budget_batches.items()]
    if result.relay:
        r = result.relay
        lines.append(
            f"- backlog of {r['records']:.0f} (median over rounds): bare relay "
            f"{r['relay_rps']:.0f} records/s, null-model worker {r['null_rps']:.0f} results/s"
        )
    if result.router:
        r = result.router
        lines.append(
            f"- ingress router (median over rounds): {r['router_rps']:.0f} records/s against "
            f"a bare relay's {r['relay_rps']:.0f} over {r['count']:.0f} records"
        )
    if result.pools:
        p = result.pools
        lines.append(
            f"- two pools (CPU + the a100 stand-in, {p['standin_share']:.0%} of requests on it) "
            f"{p['two_pool_rps']:.1f} requests/s vs the CPU pool alone {p['cpu_pool_rps']:.1f} "
            f"over {p['requests']:.0f} mixed texts through the router (medians over rounds); "
            "both pools share this machine's cores"
        )
    lines += report_lines(result.simulated)
    lines += ["", "## Every point", "", *_table(result.points), "", "## Plots", ""]
    lines += [f"![{name}]({name})" for name in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return headline


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
