"""The whole benchmark: stack up, every mode at every load, report written.

Modes (each at the same offered loads, same seeded request mix):

    direct      (a) the worker's budget batches sent straight to Triton, no Kafka
    budget      (b) sluicegate: Kafka -> worker with the budget batcher -> Triton
    budget-alt  (b) the same with the other Triton transport (grpc vs shm)
    unbatched   (c) one request per Triton call, through Kafka
    count-N     (d) count-based batching (max N + delay, arrival order), through Kafka
    null/relay  (e) the null-model worker vs a bare aiokafka relay draining a backlog

Offered loads are fractions of the direct path's capacity, measured first in
the same run by sending a backlog all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sluicegate.ops.models.build import build_repository
from sluicegate.ops.stack.kafka import KafkaLocalConfig, LocalKafka
from sluicegate.ops.stack.process import ManagedProcess, free_port, wait_until
from sluicegate.ops.stack.triton import LocalTriton, TritonLocalConfig
from sluicegate.schemas.codec import encode
from sluicegate.schemas.models import InferenceRequest
from sluicegate.schemas.settings import KafkaSettings
from sluicegate.workers.backends import TritonBackend
from sluicegate.workers.config import WorkerSettings

from .direct import run_direct
from .kafka_run import KafkaRun, RssProbe, bench_topics, worker_process
from .points import Point
from .relay import count_outputs, produce_backlog
from .workload import Workload, image_workload, poisson_arrivals, text_workload

__all__ = ["BenchConfig", "BenchResult", "run_bench"]

Say = Callable[[str], None]
Tick = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    quick: bool = False
    seed: int = 7
    transport: str = "grpc"  # the default transport; "budget-alt" runs the other
    cache_dir: Path = Path(".cache")


@dataclass
class BenchResult:
    points: list[Point] = field(default_factory=list)
    capacity_rps: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    over_budget_batches: dict[str, int] = field(default_factory=dict)
    relay: dict[str, float] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Mode:
    name: str
    env: dict[str, str]
    strategy: str = "budget"
    max_batch_size: int | None = None


def _modes(cfg: BenchConfig) -> list[_Mode]:
    other = "shm" if cfg.transport == "grpc" else "grpc"
    modes = [
        _Mode("budget", {"SLUICEGATE_TRITON__TRANSPORT": cfg.transport}),
        _Mode("unbatched", {"SLUICEGATE_TRITON__TRANSPORT": cfg.transport}, "count", 1),
        _Mode("count-8", {"SLUICEGATE_TRITON__TRANSPORT": cfg.transport}, "count", 8),
    ]
    if not cfg.quick:
        modes += [
            _Mode("count-32", {"SLUICEGATE_TRITON__TRANSPORT": cfg.transport}, "count", 32),
            _Mode(f"budget-{other}", {"SLUICEGATE_TRITON__TRANSPORT": other}),
        ]
    for mode in modes:
        if mode.max_batch_size is not None:
            mode.env["SLUICEGATE_BATCH__STRATEGY"] = mode.strategy
            mode.env["SLUICEGATE_BATCH__MAX_BATCH_SIZE"] = str(mode.max_batch_size)
    return modes


@contextlib.contextmanager
def _servers(cache_dir: Path, state: Path, say: Say) -> Iterator[tuple[KafkaSettings, str]]:
    """A Kafka broker and a Triton on free loopback ports, stopped on exit."""
    kafka = LocalKafka(
        KafkaLocalConfig(
            state_dir=state / "kafka",
            cache_dir=cache_dir.resolve(),
            port=free_port(),
            controller_port=free_port(),
        )
    )
    repository = cache_dir.resolve() / "model-repository"
    triton = LocalTriton(
        TritonLocalConfig(
            repository=repository,
            state_dir=state / "triton",
            cache_dir=cache_dir.resolve(),
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
        )
    )
    say("starting Kafka")
    kafka.start(progress=say)
    try:
        build_repository(repository, progress=say)
        say("starting Triton")
        triton.start()
        try:
            yield KafkaSettings(bootstrap_servers=kafka.bootstrap_servers), triton.grpc_url
        finally:
            triton.stop()
    finally:
        kafka.stop()


async def run_bench(
    cfg: BenchConfig,
    *,
    say: Say,
    tick: Tick,
    servers: tuple[KafkaSettings, str] | None = None,
) -> BenchResult:
    """Run every mode; on `servers` (Kafka settings, Triton gRPC url) if given, else on
    a Kafka and a Triton of its own, started on free ports and stopped afterwards."""
    result = BenchResult(config={"quick": cfg.quick, "seed": cfg.seed, "transport": cfg.transport})
    say("generating the request mix")
    workloads = [text_workload(seed=cfg.seed)]
    if not cfg.quick:
        workloads.append(image_workload(seed=cfg.seed))
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp, contextlib.ExitStack() as stack:
        state = Path(tmp)
        kafka, triton_url = servers or stack.enter_context(_servers(cfg.cache_dir, state, say))
        for workload in workloads:
            await _workload(cfg, workload, kafka, triton_url, state, result, say, tick)
        await _null_vs_relay(cfg, kafka, triton_url, state, result, say, tick)
    return result


async def _workload(
    cfg: BenchConfig,
    workload: Workload,
    kafka: KafkaSettings,
    triton_url: str,
    state: Path,
    result: BenchResult,
    say: Say,
    tick: Tick,
) -> None:
    text = workload.name == "text"
    duration = (3.0 if cfg.quick else 5.0) if text else 20.0
    max_latency = 20.0 if text else 60.0
    fractions = (0.5, 1.5) if cfg.quick else (0.3, 0.8, 1.5)
    settings = WorkerSettings(model=workload.model, pool="cpu")
    policy = settings.policy()
    backend = TritonBackend(url=triton_url, transport=cfg.transport)  # type: ignore[arg-type]
    try:
        backlog = 200 if text else 16
        say(f"{workload.name}: measuring the direct path's capacity ({backlog} at once)")
        cal = await run_direct(
            backend,
            workload,
            mode="direct",
            policy=policy,
            arrivals=[0.0] * backlog,
            offered_rps=float("inf"),
            max_in_flight=settings.max_in_flight_batches,
            max_latency_s=600,
        )
        capacity = cal.throughput_rps
        result.capacity_rps[workload.name] = capacity
        say(f"{workload.name}: direct capacity {capacity:.1f} requests/s")
        loads = [round(f * capacity, 2) for f in fractions]
        index = 0
        for k, rate in enumerate(loads):
            arrivals = poisson_arrivals(rate, duration, seed=cfg.seed + k)
            label = f"{workload.name} direct @ {rate:g}/s"
            point = await run_direct(
                backend,
                workload,
                mode="direct",
                policy=policy,
                arrivals=arrivals,
                offered_rps=rate,
                max_in_flight=settings.max_in_flight_batches,
                max_latency_s=max_latency,
                first_index=index,
                on_done=_counter(tick, label, len(arrivals)),
            )
            index += len(arrivals)
            result.points.append(point)
    finally:
        await backend.close()

    for mode in _modes(cfg):
        async with bench_topics(kafka, f"{workload.name}-{mode.name}") as run:
            async with (
                worker_process(
                    model=workload.model,
                    kafka=kafka,
                    triton_url=triton_url,
                    run=run,
                    env=mode.env,
                    state_dir=state / "workers",
                ) as rss,
                KafkaRun(kafka, run).started() as gen,
            ):
                index = 0
                for k, rate in enumerate(loads):
                    arrivals = poisson_arrivals(rate, duration, seed=cfg.seed + k)
                    label = f"{workload.name} {mode.name} @ {rate:g}/s"
                    point = await gen.point(
                        workload,
                        mode=mode.name,
                        arrivals=arrivals,
                        offered_rps=rate,
                        max_latency_s=max_latency,
                        first_index=index,
                        on_done=_answered(tick, label, len(arrivals)),
                    )
                    index += len(arrivals)
                    result.points.append(point)
                budget = policy.budget
                result.over_budget_batches[f"{workload.name}/{mode.name}"] = (
                    sum(1 for b in gen.batches if b.size > 1 and b.padded_cost > budget)
                    if mode.strategy == "budget"
                    else 0
                )
            result.peak_rss_mb[f"{workload.name}/{mode.name}"] = round(rss.peak_mb, 1)


def _answered(tick: Tick, label: str, total: int) -> Callable[[int], None]:
    return lambda n: tick(label, n, total)


def _counter(tick: Tick, label: str, total: int) -> Callable[[], None]:
    done = [0]

    def bump() -> None:
        done[0] += 1
        tick(label, done[0], total)

    return bump


async def _null_vs_relay(
    cfg: BenchConfig,
    kafka: KafkaSettings,
    triton_url: str,
    state: Path,
    result: BenchResult,
    say: Say,
    tick: Tick,
) -> None:
    n = 1500 if cfg.quick else 4000
    workload = text_workload(seed=cfg.seed)
    values = [
        encode(
            InferenceRequest(
                request_id=f"n{i}", model=workload.model, texts=list(workload.item(i).inputs.texts)
            )
        )
        for i in range(n)
    ]
    rates: dict[str, float] = {}
    cpu_us: dict[str, float] = {}
    for name in ("relay", "null"):
        async with bench_topics(kafka, f"overhead-{name}") as run:
            source = run.topics.work(workload.model, "cpu")
            await produce_backlog(kafka, source, values)
            say(f"{name}: draining a backlog of {n} requests")
            ctx: contextlib.AbstractAsyncContextManager[RssProbe]
            if name == "null":
                ctx = worker_process(
                    model=workload.model,
                    kafka=kafka,
                    triton_url=triton_url,
                    run=run,
                    env={"SLUICEGATE_BACKEND": "null"},
                    state_dir=state / "workers",
                )
            else:
                ctx = _relay_process(kafka, source, run.topics.results, run.group, state)
            async with ctx as probe:
                cpu0 = probe.cpu_s()
                seen, rate = await count_outputs(
                    kafka, run.topics.results, expected=n, timeout_s=120
                )
                # CPU per record: a figure a busy machine disturbs less than a rate.
                cpu_us[name] = (probe.cpu_s() - cpu0) / max(seen, 1) * 1e6
            tick(f"overhead {name}", seen, n)
            rates[name] = rate
    result.relay = {
        "relay_rps": round(rates["relay"], 1),
        "null_rps": round(rates["null"], 1),
        "relay_cpu_us_per_record": round(cpu_us["relay"], 1),
        "null_cpu_us_per_record": round(cpu_us["null"], 1),
        "records": n,
    }


@contextlib.asynccontextmanager
async def _relay_process(
    kafka: KafkaSettings, source: str, sink: str, group: str, state: Path
) -> AsyncIterator[RssProbe]:
    proc = ManagedProcess(name="bench-relay", state_dir=state / "relay")
    ready = state / "relay" / "relay.ready"
    argv = [sys.executable, "-m", "sluicegate.ops.bench.relay", source, sink, group, str(ready)]
    env = dict(os.environ, SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers)
    proc.start(argv, env=env)
    try:
        await asyncio.to_thread(
            wait_until, ready.exists, timeout=60, what="bench relay", alive=proc.is_running
        )
        pid = proc.pid()
        assert pid is not None
        yield RssProbe(pid)
    finally:
        await asyncio.to_thread(proc.stop, grace=30)
