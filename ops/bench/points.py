"""One measured point (a mode at an offered load) and how it is summarised."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["BatchStat", "Point", "summarise"]


@dataclass(frozen=True)
class BatchStat:
    size: int
    real_cost: int  # summed member cost (tokens or pixels)
    padded_cost: int  # len * max member cost


@dataclass(frozen=True, kw_only=True)
class Point:
    mode: str
    workload: str
    offered_rps: float  # requests per second offered (inf: all at once)
    sent: int
    ok: int
    expired: int
    failed: int  # error or rejected results, plus requests never answered
    throughput_rps: float  # ok results per second, first send to last ok result
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    padding_waste: float  # share of padded cost that was padding, over all batches
    latencies_ms: tuple[float, ...] = ()
    round: int = 0  # which round of the interleaved run (modes alternate order per round)

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("latencies_ms")
        data["offered_rps"] = None if self.offered_rps == float("inf") else self.offered_rps
        return data


def summarise(
    *,
    mode: str,
    workload: str,
    offered_rps: float,
    sent_at: Mapping[str, float],
    done: Mapping[str, tuple[float, str]],
    batches: Sequence[BatchStat],
) -> Point:
    """Latency = answer time - scheduled send time (same clock), over ok results only."""
    ok = {rid: t for rid, (t, status) in done.items() if status == "ok" and rid in sent_at}
    latencies = np.array([(t - sent_at[rid]) * 1000 for rid, t in ok.items()], dtype=float)
    expired = sum(1 for rid, (_, s) in done.items() if s == "expired" and rid in sent_at)
    if ok:
        span = max(ok.values()) - min(sent_at.values())
        p50, p95, p99 = (float(x) for x in np.percentile(latencies, [50, 95, 99]))
    else:
        span, p50, p95, p99 = float("inf"), float("nan"), float("nan"), float("nan")
    padded = sum(b.padded_cost for b in batches)
    real = sum(b.real_cost for b in batches)
    return Point(
        mode=mode,
        workload=workload,
        offered_rps=offered_rps,
        sent=len(sent_at),
        ok=len(ok),
        expired=expired,
        failed=len(sent_at) - len(ok) - expired,
        throughput_rps=len(ok) / span if span > 0 else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_batch=float(np.mean([b.size for b in batches])) if batches else 0.0,
        padding_waste=1 - real / padded if padded else 0.0,
        latencies_ms=tuple(float(x) for x in latencies),
    )
