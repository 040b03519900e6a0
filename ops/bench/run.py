"""The whole benchmark: stack up, every mode at every load, report written.

Modes (each at the same offered loads, same seeded request mix):

    direct      (a) the worker's budget batches sent straight to Triton, no Kafka
    budget      (b) sluicegate: Kafka -> worker with the budget batcher -> Triton
    budget-alt  (b) the same with the other Triton transport (grpc vs shm)
    unbatched   (c) one request per Triton call, through Kafka
    count-N     (d) count-based batching (max N + delay, arrival order), through Kafka
    null/relay  (e) the null-model worker vs a bare aiokafka relay draining a backlog
    pools       (f) CPU + the a100 stand-in vs the CPU pool alone, via the router (pools.py)
    simulated   (g) 1, 2, ... workers on one simulated H100/A100: records/s, utilisation

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
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import encode
from sluicegate.schemas.models import InferenceRequest
from sluicegate.workers.backends import TritonBackend
from sluicegate.workers.config import WorkerSettings

from .direct import run_direct
from .kafka_run import KafkaRun, RssProbe, bench_topics, triton_probe, worker_process
from .points import Point
from .pools import bench_pools
from .relay import count_outputs, produce_backlog
from .router_relay import bench_router_vs_relay
from .simulated import bench_simulated
from .workload import Workload, image_workload, poisson_arrivals, text_workload

__all__ = ["BenchConfig", "BenchResult", "run_bench"]

Say = Callable[[str], None]
Tick = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    quick: bool = False
    seed: int = 7
    transport: str = "shm"  # what `sluicegate up` runs; "budget-<other>" runs the other
    cache_dir: Path = Path(".cache")


@dataclass
class BenchResult:
    points: list[Point] = field(default_factory=list)
    capacity_rps: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_triton_rss_mb: dict[str, float] = field(default_factory=dict)
    over_budget_batches: dict[str, int] = field(default_factory=dict)
    relay: dict[str, float] = field(default_factory=dict)
    router: dict[str, float] = field(default_factory=dict)
    pools: dict[str, float] = field(default_factory=dict)  # (f) two pools vs CPU alone
    simulated: dict[str, float] = field(default_factory=dict)  # (g) simulated GPU (simulated.py)
    config: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Mode:
    name: str
    env: dict[str, str]
    strategy: str = "budget"
    max_batch_size: int | None = None


def _modes(cfg: BenchConfig, workload: str) -> list[_Mode]:
    other = "shm" if cfg.transport == "grpc" else "grpc"
    env = {"SLUICEGATE_TRITON__TRANSPORT": cfg.transport}
    # Count batches stay within the Triton model's max_batch_size (64 text, 16 ocr).
    # An image batch padded to its largest page grows Triton's memory fast: a
    # count-16 OCR batch of mixed pages took a model stub to 15 GB here.
    counts = (8,) if cfg.quick else ((8, 32) if workload == "text" else (2, 4))
    modes = [
        _Mode("budget", dict(env)),
        _Mode("unbatched", dict(env), "count", 1),
        *(_Mode(f"count-{n}", dict(env), "count", n) for n in counts),
    ]
    if not cfg.quick:
        modes.append(_Mode(f"budget-{other}", {"SLUICEGATE_TRITON__TRANSPORT": other}))
    for mode in modes:
        if mode.max_batch_size is not None:
            mode.env["SLUICEGATE_BATCH__STRATEGY"] = mode.strategy
            mode.env["SLUICEGATE_BATCH__MAX_BATCH_SIZE"] = str(mode.max_batch_size)
    return modes


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """`name` set to `value` (unset when None) for the block, then restored."""
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _servers(
    cache_dir: Path, state: Path, say: Say
) -> Iterator[tuple[KafkaSettings, str, str | None]]:
    """A Kafka broker and a Triton on free loopback ports, stopped on exit."""
    kafka = LocalKafka(  # one node on free ports
        KafkaLocalConfig.cluster(
            state_dir=state / "kafka", cache_dir=cache_dir.resolve(), size=1, heap="512m"
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
            yield kafka.settings(), triton.grpc_url, triton.admin_key()
        finally:
            triton.stop()
    finally:
        kafka.stop()


async def run_bench(
    cfg: BenchConfig,
    *,
    say: Say,
    tick: Tick,
    servers: tuple[KafkaSettings, str, str | None] | None = None,
) -> BenchResult:
    """Run every mode; on `servers` (Kafka settings, Triton gRPC url, Triton admin key) if given,
    else on a Kafka and a Triton of their own, started on free ports and stopped afterwards."""
    result = BenchResult(config={"quick": cfg.quick, "seed": cfg.seed, "transport": cfg.transport})
    say("generating the request mix")
    workloads = [text_workload(seed=cfg.seed)]
    if not cfg.quick:
        workloads.append(image_workload(seed=cfg.seed))
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp, contextlib.ExitStack() as stack:
        state = Path(tmp)
        kafka, triton_url, admin_key = servers or stack.enter_context(
            _servers(cfg.cache_dir, state, say)
        )
        # Worker processes inherit it: the shm transport registers regions with it.
        stack.enter_context(_environ("SLUICEGATE_TRITON__ADMIN_KEY", admin_key))
        for workload in workloads:
            await _workload(cfg, workload, kafka, triton_url, state, result, say, tick)
        await _null_vs_relay(cfg, kafka, triton_url, state, result, say, tick)
        count = 2000 if cfg.quick else 5000
        say(f"router: {count} requests through the ingress router and a bare relay")
        result.router = await bench_router_vs_relay(kafka, count=count)
        tick("router vs relay", count, count)
        args = (workloads[0], kafka, triton_url, cfg.cache_dir, state)
        result.pools = await bench_pools(*args, quick=cfg.quick, say=say)
        result.simulated = await bench_simulated(kafka, state, quick=cfg.quick, say=say)
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
    """Every mode of one workload at the same loads, plus a backlog sent all at once.

    The backlog point measures each mode's capacity (its throughput when it
    is never idle); the open-loop points its latency below and above the
    direct path's capacity.
    """
    text = workload.name == "text"
    duration = (3.0 if cfg.quick else 5.0) if text else 20.0
    max_latency = 20.0 if text else 60.0
    fractions = (0.5, 1.5) if cfg.quick else (0.3, 0.8, 1.5)
    backlog = (300 if cfg.quick else 600) if text else 32
    settings = WorkerSettings(model=workload.model, pool="cpu")
    policy = settings.policy()
    backend = TritonBackend(
        url=triton_url,
        transport=cfg.transport,  # type: ignore[arg-type]
        admin_key=os.environ.get("SLUICEGATE_TRITON__ADMIN_KEY"),
    )
    try:
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
        result.capacity_rps[workload.name] = round(capacity, 2)
        say(f"{workload.name}: direct capacity {capacity:.1f} requests/s")
        schedule = [
            (rate, poisson_arrivals(rate, duration, seed=cfg.seed + k))
            for k, rate in enumerate(round(f * capacity, 2) for f in fractions)
        ]
        schedule.append((float("inf"), [0.0] * backlog))
        index = 0
        for rate, arrivals in schedule:
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
                on_done=_counter(tick, _label(workload, "direct", rate), len(arrivals)),
            )
            index += len(arrivals)
            result.points.append(point)

        for mode in _modes(cfg, workload.name):
            await _kafka_mode(
                mode, workload, schedule, kafka, triton_url, state, result, tick, max_latency
            )
            # A stopped worker's last batches may still queue in Triton; one
            # call through the same model instance returns once they are done.
            await backend.infer(workload.model, [workload.item(0).inputs])
    finally:
        await backend.close()


def _label(workload: Workload, mode: str, rate: float) -> str:
    load = "backlog" if rate == float("inf") else f"{rate:g}/s"
    return f"{workload.name} {mode} @ {load}"


async def _kafka_mode(
    mode: _Mode,
    workload: Workload,
    schedule: list[tuple[float, list[float]]],
    kafka: KafkaSettings,
    triton_url: str,
    state: Path,
    result: BenchResult,
    tick: Tick,
    max_latency: float,
) -> None:
    policy = WorkerSettings(model=workload.model, pool="cpu").policy()
    triton = triton_probe(triton_url)
    if triton is not None:
        triton.start()
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
            for rate, arrivals in schedule:
                point = await gen.point(
                    workload,
                    mode=mode.name,
                    arrivals=arrivals,
                    offered_rps=rate,
                    max_latency_s=max_latency,
                    first_index=index,
                    on_done=_answered(tick, _label(workload, mode.name, rate), len(arrivals)),
                )
                index += len(arrivals)
                result.points.append(point)
            key = f"{workload.name}/{mode.name}"
            result.over_budget_batches[key] = (
                sum(1 for b in gen.batches if b.size > 1 and b.padded_cost > policy.budget)
                if mode.strategy == "budget"
                else 0
            )
        result.peak_rss_mb[key] = round(rss.peak_mb, 1)
    if triton is not None:
        await triton.stop()
        result.peak_triton_rss_mb[key] = round(triton.peak_mb, 1)


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
            async with ctx:
                seen, rate = await count_outputs(
                    kafka, run.topics.results, expected=n, timeout_s=120
                )
            tick(f"overhead {name}", seen, n)
            rates[name] = rate
    result.relay = {
        "relay_rps": round(rates["relay"], 1),
        "null_rps": round(rates["null"], 1),
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
