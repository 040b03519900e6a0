"""(g) Capacity planning against a simulated accelerator (workers/backends/simulated.py).

For each simulated card (H100, then A100 unless quick): 1, 2, 3, ...
`sluicegate worker --pool a100` processes share ONE simulated card (one
device file) and drain the same backlog of the text mix through Kafka.
Each round reports records/s and how busy the card was (modelled busy
time / wall time), both over the steady middle of the drain, and stops
once the card is >= 90 % busy or a further process gains less than 2
points. From the one-process round it
also reports what the card could do at that batch shape (items / busy time)
and so how many worker processes a card needs: the figure to set
`sluicegate up --workers-per-device` and the compose / k8s replicas to.

On this 2-core machine the processes share two cores with Kafka, so the
rounds above 2 processes measure the host more than the design; the
projected count is the figure that carries to a GPU host.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from sluicegate.ops.stack.process import ManagedProcess
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import encode
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.topology import default_topics, delete_topics, ensure_topics
from sluicegate.workers.backends.simulated import DeviceCounters, SimulatedDevice

from .relay import count_outputs, produce_backlog
from .workload import text_workload

__all__ = [
    "bench_simulated",
    "headline",
    "needed_processes",
    "report_lines",
    "steady_rates",
]

Say = Callable[[str], None]
GOAL = 0.9  # the card busy this share of the time counts as saturated
_POOL = "a100"  # the GPU budgets (256 texts, 65,536 padded tokens per batch)
_PARTITIONS = 6  # more than the most processes a round runs


def steady_rates(samples: Sequence[tuple[float, int, int]]) -> tuple[float, float]:
    """(card utilisation, records/s) between the first and the last change of the card.

    `samples`: (seconds, busy nanoseconds, items) read every fraction of a
    second while the backlog drains. The first and last intervals in which the
    card changed state (workers starting, the tail of the backlog) are left
    out, so both figures are the ones at saturation.
    """
    if len(samples) < 2:
        raise ValueError("need at least two samples of the device counters")
    busy0, busy_end = samples[0][1], samples[-1][1]
    moving = [i for i, (_, b, _) in enumerate(samples) if busy0 < b < busy_end]
    if len(moving) >= 2 and samples[moving[-1]][0] > samples[moving[0]][0]:
        i, j = moving[0], moving[-1]
    else:  # a drain too short to leave out its edges
        i, j = 0, len(samples) - 1
    (t0, b0, n0), (t1, b1, n1) = samples[i], samples[j]
    if t1 <= t0:
        return 0.0, 0.0
    return (b1 - b0) / 1e9 / (t1 - t0), (n1 - n0) / (t1 - t0)


def needed_processes(*, card_rps: float, process_rps: float, goal: float = GOAL) -> int:
    """Worker processes that keep a card `goal` busy, each adding `process_rps`."""
    if process_rps <= 0:
        raise ValueError("a worker process that answers nothing cannot fill a card")
    return max(1, math.ceil(goal * card_rps / process_rps))


async def bench_simulated(
    kafka: KafkaSettings, state: Path, *, quick: bool, say: Say
) -> dict[str, float]:
    """Rounds of 1, 2, ... worker processes against one simulated card; figures by name."""
    n = 2000 if quick else 6000
    workload = text_workload(seed=7)
    values = [
        encode(
            InferenceRequest(
                request_id=f"s{i}", model=workload.model, texts=list(workload.item(i).inputs.texts)
            )
        )
        for i in range(n)
    ]
    out: dict[str, float] = {"simulated_records": float(n)}
    for kind in ("h100",) if quick else ("h100", "a100"):
        best = 0.0
        for procs in range(1, (3 if quick else 4) + 1):
            say(f"simulated {kind}: {procs} worker process(es) draining {n} requests")
            rps, util, counters = await _round(kafka, state, kind, procs, values)
            out[f"{kind}_rps_{procs}p"] = round(rps, 1)
            out[f"{kind}_util_{procs}p"] = round(util, 3)
            if procs == 1:
                card_rps = counters.items / (counters.busy_ns / 1e9) if counters.busy_ns else 0.0
                out[f"{kind}_card_rps"] = round(card_rps, 1)
                out[f"{kind}_mean_batch"] = round(counters.items / max(1, counters.batches), 1)
                # Results handed back after their batch ended (timer resolution, load).
                out[f"{kind}_late_ms_per_batch"] = round(
                    counters.late_ns / 1e6 / max(1, counters.batches), 2
                )
                if rps > 0:
                    out[f"{kind}_procs_needed"] = float(
                        needed_processes(card_rps=card_rps, process_rps=rps)
                    )
            gained = util - best
            best = max(best, util)
            out[f"{kind}_procs_run"] = float(procs)
            if util >= GOAL or (procs > 1 and gained < 0.02):
                break
        out[f"{kind}_best_util"] = round(best, 3)
    return out


async def _round(
    kafka: KafkaSettings, state: Path, kind: str, procs: int, values: list[bytes]
) -> tuple[float, float, DeviceCounters]:
    tag = f"bench.sim.{kind}.{procs}.{uuid.uuid4().hex[:6]}"
    topics = TopicSettings.prefixed(tag)
    created = default_topics(topics, pools=(_POOL,))
    await ensure_topics(kafka, created, partitions=_PARTITIONS)
    device_file = state / "simulated" / f"{tag}.dev"
    device = SimulatedDevice(path=device_file)
    try:
        samples: list[tuple[float, int, int]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while True:
                counters = await asyncio.to_thread(device.counters)
                samples.append((time.monotonic(), counters.busy_ns, counters.items))
                if stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)

        # The backlog first, so that nothing else (this process producing it)
        # competes with the workers for the host's cores while they drain it;
        # the processes start together and the steady window leaves out their
        # ramp (the first to join drains alone until the others are in).
        await produce_backlog(kafka, topics.work("text-embed", _POOL), values)
        sampler = asyncio.create_task(sample())
        try:
            async with _workers(kafka, topics, tag, kind, device_file, procs, state):
                seen, _ = await count_outputs(
                    kafka, topics.results, expected=len(values), timeout_s=300
                )
        finally:
            stop.set()
            await sampler
        if seen < len(values):
            raise RuntimeError(f"simulated {kind}: {seen} of {len(values)} requests answered")
        util, rps = steady_rates(samples)
        return rps, util, await asyncio.to_thread(device.counters)
    finally:
        device.close()
        await delete_topics(kafka, created)


@contextlib.asynccontextmanager
async def _workers(
    kafka: KafkaSettings,
    topics: TopicSettings,
    tag: str,
    kind: str,
    device_file: Path,
    procs: int,
    state: Path,
) -> AsyncIterator[None]:
    """`procs` worker processes of one group, all on the one simulated card."""
    env = dict(
        os.environ,
        SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        SLUICEGATE_BACKEND="simulated",
        SLUICEGATE_SIMULATED__DEVICE=kind,
        SLUICEGATE_SIMULATED__DEVICE_FILE=str(device_file),
        SLUICEGATE_GROUP_ID=f"{tag}.group",
        PYTHONUNBUFFERED="1",
        **topics.as_env(),
    )
    started: list[tuple[ManagedProcess, Path]] = []
    try:
        for i in range(procs):  # all at once, then wait for each
            proc = ManagedProcess(name=f"sim-{kind}-{procs}-{i}", state_dir=state / "simulated")
            ready = state / "simulated" / f"{tag}-{i}.ready"
            argv = [sys.executable, "-m", "sluicegate", "worker", "--model", "text-embed"]
            proc.start([*argv, "--pool", _POOL, "--ready-file", str(ready)], env=env)
            started.append((proc, ready))
        for i, (proc, ready) in enumerate(started):
            await asyncio.to_thread(proc.wait_for, ready, what=f"simulated-card worker {i}")
        yield
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop, grace=60) for p, _ in started))


def report_lines(sim: dict[str, float]) -> list[str]:
    """report.md's section on the simulated cards (empty when the run had none)."""
    if not sim:
        return []
    lines = ["", "## Capacity planning: one simulated GPU", ""]
    lines.append(
        f"Backlogs of {sim['simulated_records']:.0f} texts drained by 1, 2, ... worker "
        "processes sharing one simulated card (workers/backends/simulated.py; latency "
        "figures and sources in docs/scaling.md). Utilisation: the card's modelled busy "
        "time over the wall time of the steady middle of the drain."
    )
    lines += ["", "| card | processes | records/s | card utilisation |", "|---|---:|---:|---:|"]
    for kind in ("h100", "a100"):
        for procs in range(1, int(sim.get(f"{kind}_procs_run", 0)) + 1):
            lines.append(
                f"| {kind} | {procs} | {sim[f'{kind}_rps_{procs}p']:,.0f} "
                f"| {sim[f'{kind}_util_{procs}p']:.1%} |"
            )
    lines.append("")
    for kind in ("h100", "a100"):
        if f"{kind}_card_rps" not in sim:
            continue
        lines.append(
            f"- {kind}: the card runs {sim[f'{kind}_card_rps']:,.0f} records/s at this batch "
            f"shape (mean batch {sim[f'{kind}_mean_batch']:.0f}); one process keeps it "
            f"{sim[f'{kind}_util_1p']:.1%} busy, so >= {GOAL:.0%} takes about "
            f"{sim.get(f'{kind}_procs_needed', float('nan')):.0f} worker processes "
            f"(best measured here: {sim[f'{kind}_best_util']:.1%} with "
            f"{sim[f'{kind}_procs_run']:.0f}; this host's cores bound the rest)"
        )
    return lines


def headline(sim: dict[str, float]) -> dict[str, float]:
    """The figures report.md's headline table carries."""
    keys = ("h100_util_1p", "h100_best_util", "h100_procs_needed", "h100_rps_1p")
    return {k: sim[k] for k in keys if k in sim}
