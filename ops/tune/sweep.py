"""`sluicegate tune`'s I/O half: time the ladder through Triton, write the file and the plot.

Calls go through the worker's own backend (`workers.backends.TritonBackend`),
one at a time (the latency of one batch alone, as perf_analyzer measures at
concurrency 1), each rung warmed with one untimed call first. A "call" of a
rung runs all of the largest rung's items in batches of the rung's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sluicegate.ops.bench.workload import Workload, image_workload, text_workload
from sluicegate.workers.backends import TritonBackend
from sluicegate.workers.backends.base import ModelInputs
from sluicegate.workers.errors import BackendError

from .knee import Rung, Timing, cover, knee

__all__ = ["Sweep", "TritonNotReady", "mix_for", "plot", "sweep"]

Progress = Callable[[int, Rung], None]  # (rung index, rung) after each rung


class TritonNotReady(RuntimeError):
    """Triton is not reachable or does not serve the model: the message names the fix."""


def mix_for(model: str) -> Workload:
    """The benchmark's request mix for `model` (text for text-embed, pages for ocr/doc-match)."""
    if model == "text-embed":
        return text_workload()
    if model in ("ocr", "doc-match"):
        return image_workload()
    raise ValueError(f"`tune` has no request mix for model {model!r}; use text-embed or ocr")


@dataclass(frozen=True, kw_only=True)
class Sweep:
    url: str
    model: str
    calls: int  # timed calls per rung


async def sweep(
    cfg: Sweep, mix: Workload, rungs: Sequence[Rung], *, progress: Progress | None = None
) -> list[Timing]:
    backend = TritonBackend(url=cfg.url, timeout_s=120.0)
    try:
        if not await backend.wait_ready(cfg.model):
            raise TritonNotReady(
                f"Triton at {cfg.url} is not reachable or does not serve {cfg.model!r}; "
                "start the local stack with `sluicegate up` (or pass --triton-url to a "
                "Triton that serves it)"
            )
        timings = []
        items = rungs[-1].members  # every rung runs these (`knee.cover`)
        for index, rung in enumerate(rungs):
            batches = [[_inputs(mix, i) for i in chunk] for chunk in cover(rung, items)]
            costs = [sum(mix.items[i].cost for i in chunk) for chunk in cover(rung, items)]
            await _call(backend, cfg, batches[0])  # warm: first calls of a shape pay extra
            latencies: list[float] = []
            for _ in range(cfg.calls):
                for batch in batches:
                    start = time.perf_counter()
                    await _call(backend, cfg, batch)
                    latencies.append(time.perf_counter() - start)
            timings.append(
                Timing(
                    rung=rung,
                    latencies_s=tuple(latencies),
                    real_cost=cfg.calls * sum(costs),
                    seconds=sum(latencies),
                )
            )
            if progress is not None:
                progress(index, rung)
        return timings
    finally:
        await backend.close()


def _inputs(mix: Workload, index: int) -> ModelInputs:
    return mix.items[index].inputs


async def _call(backend: TritonBackend, cfg: Sweep, batch: list[ModelInputs]) -> None:
    try:
        await backend.infer(cfg.model, batch)
    except BackendError as exc:
        raise TritonNotReady(
            f"Triton at {cfg.url} failed a {len(batch)}-item batch of {cfg.model!r}: {exc}; "
            "check `sluicegate status` (restart the stack with `sluicegate up`)"
        ) from exc


def plot(timings: Sequence[Timing], *, unit: str, title: str, out: Path) -> Path:
    """Throughput and latency against padded cost, the knee marked; a PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = knee(timings)
    ordered = sorted(timings, key=lambda t: t.rung.padded_cost)
    x = [t.rung.padded_cost for t in ordered]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(x, [t.throughput for t in ordered], "o-", color="tab:blue")
    left.set_xlabel(f"padded batch cost ({unit})")
    left.set_ylabel(f"throughput ({unit}/s)", color="tab:blue")
    left.set_xscale("log", base=2)
    right = left.twinx()
    right.plot(x, [t.latency_s * 1000 for t in ordered], "s--", color="tab:red")
    right.set_ylabel("batch latency (ms, median)", color="tab:red")
    left.axvline(found.rung.padded_cost, color="grey", linestyle=":")
    left.annotate(
        f"knee: {found.rung.padded_cost} ({len(found.rung.costs)} item(s))",
        (found.rung.padded_cost, found.throughput),
        textcoords="offset points",
        xytext=(6, -14),
    )
    left.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
