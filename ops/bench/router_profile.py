"""Profile the ingress router and measure router ÷ relay in ABAB rounds, on a broker of its own.

    python -m sluicegate.ops.bench.router_profile rounds --rounds 4 --count 5000
    python -m sluicegate.ops.bench.router_profile profile --count 20000 --out router.speedscope

`rounds` starts a throwaway local Kafka (free loopback ports, a temporary
state dir), then runs `bench_router_vs_relay` alternately at-least-once and
exactly-once for `--rounds` rounds each, and prints every round and the
median and spread (min..max) of each ratio with the load average before and
after: the figure issue 16 asks for, with its error bar. `profile` routes
`--count` records through the router with py-spy sampling this process
(`py-spy record --pid <self> --nonblocking`, only while the router runs;
relay and seeding excluded), and prints py-spy's top frames. Both are
developer tools: nothing here is part of `make test` or `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.router import Router
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    delete_topics,
    ensure_topics,
    streams_topics,
)

from .profile import py_spy
from .router_relay import _seed, bench_router_vs_relay, bench_settings, through_router
from .servers import local_kafka

_REPO = Path(__file__).resolve().parents[2]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _base_router(path: Path) -> type[Router]:
    """`Router` from another copy of the streams package (e.g. `git archive` of an older
    commit, unpacked as `<path>/streams_base`), to compare against in the same run."""
    import sluicegate

    sluicegate.__path__.append(str(path))
    base: type[Router] = importlib.import_module("sluicegate.streams_base.router").Router
    return base


async def _rounds(
    kafka: KafkaSettings, *, rounds: int, count: int, base: Path | None
) -> dict[str, Any]:
    modes = ["at_least_once", "exactly_once"]
    kinds = [(d, "") for d in modes] + ([(d, "base") for d in modes] if base else [])
    runs: dict[str, list[dict[str, float]]] = {f"{d}{k and '.' + k}": [] for d, k in kinds}
    base_cls = _base_router(base) if base else Router
    load_before = _load()
    for i in range(rounds):
        order = kinds if i % 2 == 0 else kinds[::-1]  # ABAB: no kind always runs last
        for delivery, kind in order:
            cls = base_cls if kind else Router
            figures = await bench_router_vs_relay(kafka, count=count, delivery=delivery, router=cls)
            name = f"{delivery}{kind and '.' + kind}"
            runs[name].append(figures)
            print(f"round {i + 1} {name}: {json.dumps(figures)} load {_load()}", flush=True)
    summary: dict[str, Any] = {"count": count, "rounds": rounds, "load_before": load_before}
    for name, done in runs.items():
        ratios = [f["ratio"] for f in done]
        summary[name] = {
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "router_rps_median": round(statistics.median(f["router_rps"] for f in done)),
            "relay_rps_median": round(statistics.median(f["relay_rps"] for f in done)),
        }
    summary["load_after"] = _load()
    return summary


class _GcTime:
    """A `gc.callbacks` entry adding up the time spent collecting."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self.by_generation = [0.0, 0.0, 0.0]  # seconds
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            took = time.perf_counter() - self._start
            self.seconds += took
            self.collections[info["generation"]] += 1
            self.by_generation[info["generation"]] += took


async def _profile(
    kafka: KafkaSettings,
    *,
    count: int,
    delivery: str,
    out: Path,
    rate: int,
    gil: bool,
    router: type[Router] = Router,
) -> dict[str, Any]:
    prefix = f"prof{uuid.uuid4().hex[:8]}"
    topics = TopicSettings.prefixed(prefix)
    names = [*default_topics(topics), *streams_topics(topics)]
    await ensure_topics(kafka, names, compacted=compacted_topics(topics))
    try:
        await _seed(kafka, [topics.requests], count)
        settings = bench_settings(kafka, topics, group=f"{prefix}.router", delivery=delivery)
        spy = py_spy()
        fmt = "speedscope" if out.suffix == ".speedscope" else "raw"
        cmd = [spy, "record", "--nonblocking", "-r", str(rate), "-f", fmt, "-o", str(out)]
        if gil:
            cmd.append("--gil")  # only the thread holding the GIL: where CPU time goes
        sampler = await asyncio.create_subprocess_exec(*cmd, "--pid", str(os.getpid()))
        await asyncio.sleep(1.0)  # py-spy attaches
        collecting = _GcTime()
        gc.callbacks.append(collecting)
        try:
            cpu = time.process_time()
            seconds = await through_router(settings, count, router=router)
            cpu = time.process_time() - cpu
        finally:
            gc.callbacks.remove(collecting)
            sampler.send_signal(2)  # SIGINT: py-spy writes what it sampled
            await asyncio.wait_for(sampler.wait(), 60)
    finally:
        await delete_topics(kafka, names)
    return {
        "count": count,
        "delivery": delivery,
        "router_rps": round(count / seconds, 1),
        # CPU time of this process (every thread) per routed record: steadier than the
        # rate on a loaded machine.
        "cpu_us_per_record": round(cpu / count * 1e6, 1),
        # Time in the garbage collector per routed record, and its collections by generation.
        "gc_us_per_record": round(collecting.seconds / count * 1e6, 1),
        "gc_collections": collecting.collections,
        "gc_ms_by_generation": [round(t * 1000) for t in collecting.by_generation],
        "gc_objects": len(gc.get_objects()),
        "load": _load(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["rounds", "profile"])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delivery", default="at_least_once")
    parser.add_argument("--out", type=Path, default=Path("router.txt"))
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--base", type=Path, help="also time the Router found here")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args(argv)

    async def go(kafka: KafkaSettings) -> dict[str, Any]:
        if args.mode == "rounds":
            return await _rounds(kafka, rounds=args.rounds, count=args.count, base=args.base)
        return await _profile(
            kafka,
            count=args.count,
            delivery=args.delivery,
            out=args.out,
            rate=args.rate,
            gil=args.gil,
            router=_base_router(args.base) if args.base else Router,
        )

    if args.bootstrap:
        result = asyncio.run(go(KafkaSettings(bootstrap_servers=args.bootstrap)))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="sg-router-prof-") as state,
            local_kafka(_REPO / ".cache", Path(state), print) as kafka,
        ):
            result = asyncio.run(go(kafka))
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
