"""(f) Two pools vs the CPU pool alone, on the mixed text workload, through the router.

Both runs go through a real router (in this process) to real worker
processes: first with only the CPU pool (`pools=("cpu",)`), then with the
a100 stand-in next to it (`pools=("a100", "cpu")`: its own Triton on this
machine's CPU, `ops/stack/pools.py`), each fed the same backlog of mixed
requests (short and long texts) all at once; throughput is requests
answered per second from the first send to the last result. The figure is
the ratio. Both pools share this machine's cores, so the ratio shows what
splitting by size and running two servers side by side buys (or costs)
here, not what a real A100 would add.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from sluicegate.ops.stack.pools import StandinPool, StandinPorts
from sluicegate.ops.stack.process import ManagedProcess, free_port
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import TopicSettings
from sluicegate.schemas.topics import POOLS
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.streams.router import Router, RouterSettings
from sluicegate.streams.routing import RoutingSettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    delete_topics,
    ensure_topics,
    streams_topics,
)

from .workload import Workload

__all__ = ["bench_pools"]

Say = Callable[[str], None]


async def bench_pools(
    workload: Workload,
    kafka: KafkaSettings,
    cpu_triton_url: str,
    cache_dir: Path,
    state: Path,
    *,
    quick: bool,
    say: Say,
    rounds: int = 1,
) -> tuple[dict[str, float], list[float]]:
    """Median throughputs of the two-pool stack and of the CPU pool alone (and their
    ratio), and the ratio of each round; rounds alternate which setup runs first."""
    count = 100 if quick else 512
    say("pools: starting the a100 stand-in's Triton")
    standin = await asyncio.to_thread(_standin, cache_dir, state, say)
    cpu_rps: list[float] = []
    two_rps: list[float] = []
    shares: list[float] = []
    try:
        for r in range(rounds):
            setups: list[tuple[str, ...]] = [("cpu",), ("a100", "cpu")]
            for pools in setups if r % 2 == 0 else reversed(setups):
                what = "the CPU pool alone" if pools == ("cpu",) else "CPU + the a100 stand-in"
                say(f"pools, round {r + 1}/{rounds}: {count} requests via the router to {what}")
                rate, share = await _run(
                    pools, workload, kafka, cpu_triton_url, standin, state, count
                )
                if pools == ("cpu",):
                    cpu_rps.append(rate)
                else:
                    two_rps.append(rate)
                    shares.append(share)
    finally:
        await asyncio.to_thread(standin.stop, [])
    per_round = [round(t / c, 3) if c else 0.0 for t, c in zip(two_rps, cpu_rps, strict=True)]
    cpu, two = statistics.median(cpu_rps), statistics.median(two_rps)
    return {
        "requests": float(count),
        "cpu_pool_rps": round(cpu, 2),
        "two_pool_rps": round(two, 2),
        "two_pool_over_cpu": round(statistics.median(per_round), 3),
        # Share of the two-pool runs answered by the stand-in (routed as large).
        "standin_share": round(statistics.median(shares), 3),
    }, per_round


def _standin(cache_dir: Path, state: Path, say: Say) -> StandinPool:
    standin = StandinPool(
        state_dir=state,
        cache_dir=cache_dir.resolve(),
        host="127.0.0.1",
        ports=StandinPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
    )
    standin.start_triton(say)
    return standin


async def _run(
    pools: Sequence[str],
    workload: Workload,
    kafka: KafkaSettings,
    cpu_triton_url: str,
    standin: StandinPool,
    state: Path,
    count: int,
) -> tuple[float, float]:
    """(requests/s, share answered by a100) for one run on topics of its own."""
    prefix = f"bench.pools.{uuid.uuid4().hex[:6]}"
    topics = TopicSettings.prefixed(prefix)
    names = default_topics(topics, pools=POOLS) + streams_topics(topics)
    await ensure_topics(kafka, names, compacted=compacted_topics(topics))
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(
                _worker(workload.model, "cpu", kafka, topics, cpu_triton_url, None, state)
            )
            if "a100" in pools:
                await stack.enter_async_context(
                    _worker(workload.model, "a100", kafka, topics, "", standin, state)
                )
            router = Router(
                settings=RouterSettings(
                    kafka=kafka,
                    topics=topics,
                    routing=RoutingSettings(pools=tuple(pools)),
                    cache_ttl_s=0,  # every request reaches a pool
                    router_group_id=f"{prefix}.router",
                )
            )
            await router.start()
            stack.push_async_callback(router.stop)
            client = await stack.enter_async_context(
                Client(
                    settings=ClientSettings(
                        kafka=kafka, topics=topics, via_router=True, timeout_s=600
                    )
                )
            )
            requests = [
                InferenceRequest(
                    request_id=uuid.uuid4().hex,
                    model=workload.model,
                    texts=list(workload.item(i).inputs.texts),
                )
                for i in range(count)
            ]
            futures = [client.expect(r.request_id) for r in requests]
            start = time.perf_counter()
            for r in requests:
                await client.send(r)
            results = [
                await client.wait(r.request_id, f, timeout=600)
                for r, f in zip(requests, futures, strict=True)
            ]
            elapsed = time.perf_counter() - start
    finally:
        await delete_topics(kafka, names)
    on_a100 = sum(1 for r in results if r.pool == "a100")
    return count / elapsed, on_a100 / count


@contextlib.asynccontextmanager
async def _worker(
    model: str,
    pool: str,
    kafka: KafkaSettings,
    topics: TopicSettings,
    triton_url: str,
    standin: StandinPool | None,
    state: Path,
) -> AsyncIterator[None]:
    """A `sluicegate worker --pool <pool>` process on `topics`; drained on exit."""
    name = f"bench-pools-{model}-{pool}"
    proc = ManagedProcess(name=name, state_dir=state)
    ready = state / f"{name}.ready"
    ready.unlink(missing_ok=True)
    env = {
        **os.environ,
        "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SLUICEGATE_GROUP_ID": f"{topics.work(model, pool)}.group",
        "PYTHONUNBUFFERED": "1",
        **topics.as_env(),
    }
    if standin is not None:
        env = standin.worker_env(model, env)
    else:
        env["SLUICEGATE_TRITON__URL"] = triton_url
    argv = [sys.executable, "-m", "sluicegate", "worker", "--model", model, "--pool", pool]
    proc.start([*argv, "--ready-file", str(ready)], env=env)
    try:
        await asyncio.to_thread(proc.wait_for, ready, what=f"bench worker {name}")
        yield
    finally:
        await asyncio.to_thread(proc.stop, grace=60)
