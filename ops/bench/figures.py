"""The headline figures: one value per round, their median and spread, and the goal each meets.

Pure bookkeeping over measured points (no I/O): every figure is computed
within each round (modes interleaved ABAB, so run order cannot decide it),
then summarised across rounds as median and min-max. A goal is met when the
median is on the right side of it; the spread says how far to trust that.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from .points import Point

__all__ = [
    "Figure",
    "Goal",
    "capacity",
    "low_load_p50_gap",
    "p99_ratio",
    "point_figures",
    "ratio",
    "sample_figures",
    "spread",
]


@dataclass(frozen=True)
class Goal:
    op: Literal[">=", "<="]
    target: float

    def met(self, value: float) -> bool:
        return value >= self.target if self.op == ">=" else value <= self.target

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.target:g}"


@dataclass(frozen=True, kw_only=True)
class Figure:
    key: str  # stable key in results.json, e.g. "budget_vs_triton_dynamic.text"
    label: str  # what the report's headline table calls it
    values: tuple[float, ...]  # one per round that measured it, in round order
    goal: Goal | None = None
    unit: str = "×"  # "×" for ratios, "ms" for differences of latencies

    @property
    def median(self) -> float | None:
        return spread(self.values)[0]

    @property
    def met(self) -> bool | None:
        """None without a goal or a value."""
        m = self.median
        return None if self.goal is None or m is None else self.goal.met(m)

    def as_json(self) -> dict[str, object]:
        med, lo, hi = spread(self.values)
        return {
            "key": self.key,
            "label": self.label,
            "median": med,
            "min": lo,
            "max": hi,
            "values": list(self.values),
            "goal": str(self.goal) if self.goal else None,
            "met": self.met,
            "unit": self.unit,
        }


def spread(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(median, min, max) of `values`, rounded to 3 decimals; Nones when empty."""
    if not values:
        return None, None, None
    return (
        round(statistics.median(values), 3),
        round(min(values), 3),
        round(max(values), 3),
    )


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 and a == a else None


def capacity(points: Sequence[Point], workload: str, mode: str) -> float:
    """A mode's capacity: its best throughput, on the backlog or at an open-loop load."""
    mine = [p.throughput_rps for p in points if p.workload == workload and p.mode == mode]
    return max(mine, default=0.0)


def _at(points: Sequence[Point], workload: str, mode: str, load: float) -> Point | None:
    return next(
        (p for p in points if p.workload == workload and p.mode == mode and p.offered_rps == load),
        None,
    )


def _loads(points: Sequence[Point], workload: str) -> list[float]:
    """The open-loop offered loads of `workload`, lowest first (the backlog left out)."""
    return sorted({p.offered_rps for p in points if p.workload == workload} - {float("inf")})


def low_load_p50_gap(points: Sequence[Point], workload: str) -> float | None:
    """budget p50 - unbatched p50 (ms) at the lowest offered load: what waiting for
    batch mates costs a request when none are coming."""
    loads = _loads(points, workload)
    if not loads:
        return None
    budget = _at(points, workload, "budget", loads[0])
    alone = _at(points, workload, "unbatched", loads[0])
    if budget is None or alone is None or budget.ok == 0 or alone.ok == 0:
        return None
    return round(budget.p50_ms - alone.p50_ms, 2)


def p99_ratio(
    points: Sequence[Point], workload: str, num: str, den: str, *, below: float
) -> float | None:
    """num's p99 ÷ den's p99 at the highest offered load under `below` (the direct path's
    capacity) where both answered every request ok: equal load, neither side shedding."""
    for load in reversed([x for x in _loads(points, workload) if x < below]):
        a, b = _at(points, workload, num, load), _at(points, workload, den, load)
        if a and b and a.ok == a.sent > 0 and b.ok == b.sent > 0:
            return ratio(a.p99_ms, b.p99_ms)
    return None


#: (key, label, numerator mode, denominator mode(s), goal per workload).
_CAPACITY_RATIOS: tuple[tuple[str, str, str, str, Mapping[str, Goal]], ...] = (
    (
        "pipeline_vs_direct",
        "pipeline ÷ direct Triton (capacity)",
        "budget",
        "direct",
        {"text": Goal(">=", 0.9)},
    ),
    (
        "budget_vs_unbatched",
        "budget ÷ unbatched (capacity)",
        "budget",
        "unbatched",
        {"text": Goal(">=", 1.0), "image": Goal(">=", 1.0)},
    ),
    (
        "budget_vs_triton_dynamic",
        "budget ÷ triton-dynamic (capacity)",
        "budget",
        "triton-dynamic",
        {"text": Goal(">=", 1.3)},
    ),
    ("budget_vs_count", "budget ÷ best count-N (capacity)", "budget", "count-", {}),
)


def _cap_ratio(points: Sequence[Point], *, w: str, num: str, dens: Sequence[str]) -> float | None:
    return ratio(capacity(points, w, num), max(capacity(points, w, d) for d in dens))


def _rounds(points: Sequence[Point]) -> list[list[Point]]:
    by_round: dict[int, list[Point]] = {}
    for p in points:
        by_round.setdefault(p.round, []).append(p)
    return [by_round[r] for r in sorted(by_round)]


def _per_round(
    points: Sequence[Point], compute: Callable[[Sequence[Point]], float | None]
) -> tuple[float, ...]:
    values = (compute(pts) for pts in _rounds(points))
    return tuple(v for v in values if v is not None)


def point_figures(
    points: Sequence[Point], *, transport: str, capacity_rps: Mapping[str, float]
) -> list[Figure]:
    """Every figure the measured points give, per workload, one value per round.

    `capacity_rps`: the direct path's capacity per workload (the p99 comparison
    is made below it)."""
    figures: list[Figure] = []
    modes = {p.mode for p in points}
    for workload in sorted({p.workload for p in points}, reverse=True):  # text first
        for key, label, num, den, goals in _CAPACITY_RATIOS:
            dens = sorted(m for m in modes if m.startswith(den)) if den.endswith("-") else [den]
            if num not in modes or not dens or not set(dens) <= modes:
                continue

            figures.append(
                Figure(
                    key=f"{key}.{workload}",
                    label=f"{label}, {workload}",
                    values=_per_round(points, partial(_cap_ratio, w=workload, num=num, dens=dens)),
                    goal=goals.get(workload),
                )
            )
        alt = next((m for m in sorted(modes) if m.startswith("budget-")), None)
        if alt is not None:
            other = alt.split("-", 1)[1]
            figures.append(
                Figure(
                    key=f"{transport}_vs_{other}.{workload}",
                    label=f"{transport} ÷ {other} (capacity), {workload}",
                    values=_per_round(
                        points, partial(_cap_ratio, w=workload, num="budget", dens=[alt])
                    ),
                )
            )
        if {"budget", "triton-dynamic"} <= modes:
            figures.append(
                Figure(
                    key=f"p99_budget_vs_triton_dynamic.{workload}",
                    label=f"p99 budget ÷ triton-dynamic at equal load, {workload}",
                    values=_per_round(
                        points,
                        partial(
                            p99_ratio,
                            workload=workload,
                            num="budget",
                            den="triton-dynamic",
                            below=capacity_rps.get(workload, 0.0),
                        ),
                    ),
                    goal=Goal("<=", 1.0) if workload == "text" else None,
                )
            )
        if {"budget", "unbatched"} <= modes:
            figures.append(
                Figure(
                    key=f"low_load_p50_gap_ms.{workload}",
                    label=f"p50 budget − unbatched at the lowest load (ms), {workload}",
                    values=_per_round(points, partial(low_load_p50_gap, workload=workload)),
                    goal=Goal("<=", 5.0) if workload == "text" else None,
                    unit="ms",
                )
            )
    return figures


#: Figures measured outside the points (one value per round in `BenchResult.samples`).
_SAMPLES: dict[str, tuple[str, Goal | None]] = {
    "null_vs_relay": ("null-model worker ÷ bare aiokafka relay (backlog)", Goal(">=", 0.5)),
    "router_vs_relay": ("ingress router ÷ bare relay, at-least-once", Goal(">=", 0.6)),
    "router_eos_vs_relay": ("ingress router ÷ bare relay, exactly-once", None),
    "two_pools_vs_cpu": ("two pools ÷ the CPU pool alone (via the router)", None),
    # (h) one simulated H100 (simulated.py); one round: the run stops adding processes
    # at 90 % or when a process adds less than 2 points.
    "simulated_h100_rps_1p": ("records/s one worker process feeds a simulated H100", None),
    "simulated_h100_util_1p": ("simulated H100 busy share, one worker process", None),
    "simulated_h100_best_util": (
        "simulated H100 busy share, best process count tried",
        Goal(">=", 0.9),
    ),
    "simulated_h100_procs_needed": ("worker processes an H100 needs for 90 % busy", None),
}


def sample_figures(samples: Mapping[str, Sequence[float]]) -> list[Figure]:
    """A figure per key of `samples` (a key without a known label is its own label)."""
    figures = []
    for key, values in samples.items():
        label, goal = _SAMPLES.get(key, (key, None))
        figures.append(Figure(key=key, label=label, values=tuple(values), goal=goal))
    return figures
