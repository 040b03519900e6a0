"""Idle dispatch, measured: does a lone request still wait for batch mates?

Three worker processes on one Kafka and one Triton, each on topics of its
own, fed the benchmark's text mix in interleaved rounds (ABC, BCA, CAB, ...):

- ``budget``: the default (a partial batch starts at once while the backend is idle);
- ``budget-delay``: ``SLUICEGATE_BATCH__IDLE_DISPATCH=false`` (waits the delay, as before);
- ``unbatched``: ``SLUICEGATE_BATCH__STRATEGY=count`` + ``MAX_BATCH_SIZE=1``.

Per round each mode gets a Poisson low-load point (p50 against unbatched)
and a backlog sent at once (throughput against budget-delay: idle dispatch
must not lose packing at saturation). Prints the per-round figures and the
median and spread of each ratio. Run it as
``python -m sluicegate.ops.bench.idle_dispatch [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from sluicegate.runtime.kafka import KafkaSettings

from .kafka_run import KafkaRun, bench_topics, worker_process
from .points import Point
from .servers import local_servers
from .workload import Workload, poisson_arrivals, text_workload

MODES: dict[str, dict[str, str]] = {
    "budget": {},
    "budget-delay": {"SLUICEGATE_BATCH__IDLE_DISPATCH": "false"},
    "unbatched": {"SLUICEGATE_BATCH__STRATEGY": "count", "SLUICEGATE_BATCH__MAX_BATCH_SIZE": "1"},
}


@contextlib.asynccontextmanager
async def _mode(
    name: str, kafka: KafkaSettings, triton_url: str, key: str | None, state: Path
) -> AsyncIterator[KafkaRun]:
    env = dict(MODES[name])
    if key:
        env["SLUICEGATE_TRITON__ADMIN_KEY"] = key
    async with (
        bench_topics(kafka, f"idle-{name}") as run,
        worker_process(
            model="text-embed",
            kafka=kafka,
            triton_url=triton_url,
            run=run,
            env=env,
            state_dir=state / "workers",
        ),
        KafkaRun(kafka, run).started() as gen,
    ):
        yield gen


async def _measure(args: argparse.Namespace, state: Path) -> None:
    work: Workload = text_workload(seed=11)
    names = list(MODES)
    with local_servers(args.cache.resolve(), state, print) as (kafka, triton_url, key):
        async with contextlib.AsyncExitStack() as stack:
            gens: dict[str, KafkaRun] = {}
            for n in names:
                gens[n] = await stack.enter_async_context(_mode(n, kafka, triton_url, key, state))
            # Warm-up: first calls pay Triton's and the worker's cold start.
            for n in names:
                await gens[n].point(
                    work, mode=n, arrivals=[0.0] * 20, offered_rps=float("inf"),
                    max_latency_s=60, first_index=0,
                )  # fmt: skip
            low: dict[str, list[Point]] = {n: [] for n in names}
            sat: dict[str, list[Point]] = {n: [] for n in names}
            queued: dict[str, list[float]] = {n: [] for n in names}
            index = 1000
            for r in range(args.rounds):
                order = names[r % 3 :] + names[: r % 3]
                arrivals = poisson_arrivals(args.rate, args.seconds, seed=100 + r)
                for n in order:
                    p = await gens[n].point(
                        work, mode=n, arrivals=arrivals, offered_rps=args.rate,
                        max_latency_s=60, first_index=index,
                    )  # fmt: skip
                    low[n].append(p)
                    waits = [
                        gens[n].queue_ms[f"{n}-{index + k}"]
                        for k in range(len(arrivals))
                        if f"{n}-{index + k}" in gens[n].queue_ms
                    ]
                    queued[n].append(statistics.median(waits))
                    print(f"round {r} {n:13} low  p50 {p.p50_ms:7.1f} ms  p99 {p.p99_ms:7.1f} "
                          f"ms  queue p50 {queued[n][-1]:5.2f} ms  mean batch {p.mean_batch:.2f}  "
                          f"ok {p.ok}/{p.sent}")  # fmt: skip
                for n in order:
                    p = await gens[n].point(
                        work, mode=n, arrivals=[0.0] * args.backlog,
                        offered_rps=float("inf"), max_latency_s=120, first_index=index + 50_000,
                    )  # fmt: skip
                    sat[n].append(p)
                    print(
                        f"round {r} {n:13} sat  {p.throughput_rps:7.1f} rec/s  mean batch "
                        f"{p.mean_batch:.2f}  waste {p.padding_waste:.2f}  ok {p.ok}/{p.sent}"
                    )
                index += 100_000
    _summary(low, sat, queued)


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def _summary(
    low: dict[str, list[Point]], sat: dict[str, list[Point]], queued: dict[str, list[float]]
) -> None:
    for n in low:
        p50s = [p.p50_ms for p in low[n]]
        print(f"{n:13} low-load p50 ms: {_spread(p50s)}")
        print(f"{n:13} low-load median queue wait ms: {_spread(queued[n])}")
    for other in ("budget", "budget-delay"):
        diffs = [a.p50_ms - b.p50_ms for a, b in zip(low[other], low["unbatched"], strict=True)]
        print(f"{other} p50 - unbatched p50 (ms, per round): {_spread(diffs)}")
    ratios = [
        a.throughput_rps / b.throughput_rps
        for a, b in zip(sat["budget"], sat["budget-delay"], strict=True)
    ]
    print(f"saturation throughput budget / budget-delay: {_spread(ratios)}")
    ratios = [
        a.throughput_rps / b.throughput_rps
        for a, b in zip(sat["budget"], sat["unbatched"], strict=True)
    ]
    print(f"saturation throughput budget / unbatched: {_spread(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--backlog", type=int, default=400)
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    args = parser.parse_args()
    # Stop like Ctrl-C (the workers, Triton and Kafka are stopped on the way out).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="sg-idle-") as tmp:
        asyncio.run(_measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
