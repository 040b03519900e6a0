"""The whole benchmark: stack up, every mode at every load, in interleaved rounds, report written.

Modes (each at the same offered loads, same seeded request mix):

    direct          (a) the worker's budget batches sent straight to Triton, no Kafka
    budget          (b) sluicegate: Kafka -> worker with the budget batcher -> Triton
    budget-alt      (b) the same with the other Triton transport (grpc vs shm; full run)
    unbatched       (c) one request per Triton call, through Kafka
    triton-dynamic  (g) a hand-rolled aiokafka consumer, one Triton call per request,
                        Triton's own dynamic batcher merging them (dynamic.py)
    count-N         (d) count-based batching (max N + delay, arrival order) in the same
                        worker (full run): the batching policy alone, everything else equal
    null/relay      (e) the null-model worker vs a bare aiokafka relay draining a backlog
    router/relay        the ingress router vs a bare relay (router_relay.py)
    pools           (f) CPU + the a100 stand-in vs the CPU pool alone, via the router (pools.py)
    simulated       (h) 1, 2, ... workers on one simulated H100/A100: records/s, utilisation

Offered loads are fractions of the direct path's capacity, measured first in
the same run by sending a backlog all at once. Run order must not decide a
result: every mode runs once per round, in the listed order in even rounds
and reversed in odd ones (ABAB), and each figure is computed within a round
and reported as the median over rounds with its spread (figures.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.workers.backends import TritonBackend
from sluicegate.workers.config import WorkerSettings

from .direct import run_direct
from .dynamic import DynamicTriton, dynamic_process, dynamic_triton
from .kafka_run import KafkaRun, RssProbe, bench_topics, triton_probe, worker_process
from .overhead import null_vs_relay
from .points import Point
from .pools import bench_pools
from .router_relay import bench_router_vs_relay
from .servers import environ, local_servers
from .simulated import bench_simulated
from .workload import Workload, image_workload, poisson_arrivals, text_workload

__all__ = ["TUNED_ENV", "BenchConfig", "BenchResult", "run_bench"]

Say = Callable[[str], None]
Tick = Callable[[str, int, int], None]

#: Where a worker reads a tuned budget file (`sluicegate tune`, i16b); the bench
#: passes `BenchConfig.tuned_file` to the image workers' budget modes through it.
TUNED_ENV = "SLUICEGATE_BATCH__TUNED_FILE"


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    quick: bool = False
    seed: int = 7
    transport: str = "shm"  # what `sluicegate up` runs; "budget-<other>" runs the other
    cache_dir: Path = Path(".cache")
    rounds: int | None = None  # None: 2 quick, 3 full
    # A tuned budget file (`sluicegate tune --model ocr`) for the image workers' budget
    # modes; None: the model's default budget.
    tuned_file: Path | None = None

    @property
    def round_count(self) -> int:
        return self.rounds or (2 if self.quick else 3)


@dataclass
class BenchResult:
    points: list[Point] = field(default_factory=list)
    capacity_rps: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_triton_rss_mb: dict[str, float] = field(default_factory=dict)
    over_budget_batches: dict[str, int] = field(default_factory=dict)
    relay: dict[str, float] = field(default_factory=dict)  # medians over rounds
    router: dict[str, float] = field(default_factory=dict)  # medians over rounds
    pools: dict[str, float] = field(default_factory=dict)  # (f) two pools vs CPU alone
    # Per-round values of the figures not computed from points: null_vs_relay,
    # router_vs_relay, router_eos_vs_relay, two_pools_vs_cpu.
    samples: dict[str, list[float]] = field(default_factory=dict)
    # (h) the simulated GPU (simulated.py): records/s, utilisation, processes needed.
    simulated: dict[str, float] = field(default_factory=dict)
    # quick, seed, transport, rounds, tuned_file, load_start/load_end (1/5/15 min), wall_s.
    config: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Mode:
    name: str
    env: dict[str, str]
    strategy: str = "budget"
    max_batch_size: int | None = None
    kind: str = "worker"  # worker | direct | dynamic


def _modes(cfg: BenchConfig, workload: str) -> list[_Mode]:
    other = "shm" if cfg.transport == "grpc" else "grpc"
    env = {"SLUICEGATE_TRITON__TRANSPORT": cfg.transport}
    budget_env = dict(env)
    if cfg.tuned_file is not None and workload == "image":
        budget_env[TUNED_ENV] = str(cfg.tuned_file.resolve())
    modes = [
        _Mode("direct", {}, kind="direct"),
        _Mode("budget", budget_env),
        _Mode("unbatched", dict(env), "count", 1),
        _Mode("triton-dynamic", {}, kind="dynamic"),
    ]
    if not cfg.quick:
        # One count-N point per mix, the best of the earlier runs' (8, 32) and (2, 4):
        # the same worker with only the batching policy changed. Count batches stay
        # within the Triton model's max_batch_size; an image batch padded to its
        # largest page grows Triton's memory fast (count-16 OCR took a stub to 15 GB).
        n = 8 if workload == "text" else 2
        modes.append(_Mode(f"count-{n}", dict(env), "count", n))
        alt_env = {**budget_env, "SLUICEGATE_TRITON__TRANSPORT": other}
        modes.append(_Mode(f"budget-{other}", alt_env))
    for mode in modes:
        if mode.max_batch_size is not None:
            mode.env["SLUICEGATE_BATCH__STRATEGY"] = mode.strategy
            mode.env["SLUICEGATE_BATCH__MAX_BATCH_SIZE"] = str(mode.max_batch_size)
    return modes


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run_bench(
    cfg: BenchConfig,
    *,
    say: Say,
    tick: Tick,
    servers: tuple[KafkaSettings, str, str | None] | None = None,
) -> BenchResult:
    """Run every mode in `cfg.round_count` interleaved rounds; on `servers` (Kafka
    settings, Triton gRPC url, Triton admin key) if given, else on a Kafka and a
    Triton of their own, started on free ports and stopped afterwards."""
    began = time.monotonic()
    rounds = cfg.round_count
    result = BenchResult(
        config={
            "quick": cfg.quick,
            "seed": cfg.seed,
            "transport": cfg.transport,
            "rounds": rounds,
            "tuned_file": str(cfg.tuned_file) if cfg.tuned_file else None,
            "load_start": _load(),
        }
    )
    say(f"generating the request mix; {rounds} rounds, load average {_load()}")
    workloads = [text_workload(seed=cfg.seed)]
    if not cfg.quick:
        workloads.append(image_workload(seed=cfg.seed))
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp, contextlib.ExitStack() as stack:
        state = Path(tmp)
        kafka, triton_url, admin_key = servers or stack.enter_context(
            local_servers(cfg.cache_dir, state, say)
        )
        # Worker processes inherit it: the shm transport registers regions with it.
        stack.enter_context(environ("SLUICEGATE_TRITON__ADMIN_KEY", admin_key))
        for workload in workloads:
            await _workload(cfg, workload, kafka, triton_url, state, result, say, tick)
        text = workloads[0]
        result.relay, result.samples["null_vs_relay"] = await null_vs_relay(
            text,
            kafka,
            triton_url,
            state,
            records=1500 if cfg.quick else 4000,
            rounds=rounds,
            say=say,
            tick=tick,
        )
        await _router(cfg, kafka, result, say, tick)
        args = (text, kafka, triton_url, cfg.cache_dir, state)
        result.pools, result.samples["two_pools_vs_cpu"] = await bench_pools(
            *args, quick=cfg.quick, say=say, rounds=rounds
        )
        result.simulated = await bench_simulated(kafka, state, quick=cfg.quick, say=say)
    result.config["load_end"] = _load()
    result.config["wall_s"] = round(time.monotonic() - began, 1)
    return result


async def _router(
    cfg: BenchConfig, kafka: KafkaSettings, result: BenchResult, say: Say, tick: Tick
) -> None:
    """Router vs a bare relay, once per round (and exactly-once too in the full run)."""
    count = 2000 if cfg.quick else 5000
    deliveries = ("at_least_once",) if cfg.quick else ("at_least_once", "exactly_once")
    runs: dict[str, list[dict[str, float]]] = {d: [] for d in deliveries}
    for r in range(cfg.round_count):
        for delivery in deliveries if r % 2 == 0 else reversed(deliveries):
            say(f"router, round {r + 1}: {count} requests ({delivery}) and a bare relay")
            runs[delivery].append(
                await bench_router_vs_relay(kafka, count=count, delivery=delivery)
            )
            tick(f"router {delivery} (round {r + 1})", count, count)
    alo = runs["at_least_once"]
    result.samples["router_vs_relay"] = [x["ratio"] for x in alo]
    if "exactly_once" in runs:
        result.samples["router_eos_vs_relay"] = [x["ratio"] for x in runs["exactly_once"]]
    result.router = {
        "count": count,
        "relay_rps": round(statistics.median(x["relay_rps"] for x in alo), 1),
        "router_rps": round(statistics.median(x["router_rps"] for x in alo), 1),
    }


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
    """Every mode of one workload at the same loads plus a backlog, in interleaved rounds.

    The backlog point measures each mode's capacity (its throughput when it
    is never idle); the open-loop points its latency below (and, for text in
    the full run, above) the direct path's capacity.
    """
    text = workload.name == "text"
    duration = (3.0 if cfg.quick else 4.0) if text else 15.0
    max_latency = 20.0 if text else 60.0
    fractions = (0.3, 0.8, 1.5) if text and not cfg.quick else (0.3, 0.8)
    backlog = (300 if cfg.quick else 500) if text else 24
    settings = WorkerSettings(model=workload.model, pool="cpu")
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
            policy=settings.policy(),
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
        modes = _modes(cfg, workload.name)
        rounds = cfg.round_count
        with contextlib.ExitStack() as stack:
            dyn = None
            if any(m.kind == "dynamic" for m in modes):
                dyn = stack.enter_context(dynamic_triton(cfg.cache_dir, state, workload.model, say))
            for r in range(rounds):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    say(f"{workload.name}, round {r + 1}/{rounds}: {mode.name}")
                    if mode.kind == "direct":
                        await _direct_mode(backend, workload, settings, schedule, result, tick, r)
                        continue
                    run = _Run(workload, schedule, kafka, triton_url, state, max_latency, r)
                    await _kafka_mode(mode, run, result, tick, dyn)
                    # A stopped worker's last batches may still queue in Triton; one
                    # call through the same model instance returns once they are done.
                    await backend.infer(workload.model, [workload.item(0).inputs])
    finally:
        await backend.close()


async def _direct_mode(
    backend: TritonBackend,
    workload: Workload,
    settings: WorkerSettings,
    schedule: list[tuple[float, list[float]]],
    result: BenchResult,
    tick: Tick,
    round_: int,
) -> None:
    index = 0
    for rate, arrivals in schedule:
        point = await run_direct(
            backend,
            workload,
            mode="direct",
            policy=settings.policy(),
            arrivals=arrivals,
            offered_rps=rate,
            max_in_flight=settings.max_in_flight_batches,
            max_latency_s=60.0 if workload.name == "image" else 20.0,
            first_index=index,
            on_done=_counter(tick, _label(workload, "direct", rate, round_), len(arrivals)),
        )
        index += len(arrivals)
        result.points.append(dataclasses.replace(point, round=round_))


def _label(workload: Workload, mode: str, rate: float, round_: int) -> str:
    load = "backlog" if rate == float("inf") else f"{rate:g}/s"
    return f"{workload.name} {mode} @ {load} (round {round_ + 1})"


@dataclass(frozen=True)
class _Run:
    """What one mode's run in one round works on."""

    workload: Workload
    schedule: list[tuple[float, list[float]]]
    kafka: KafkaSettings
    triton_url: str
    state: Path
    max_latency: float
    round: int


async def _kafka_mode(
    mode: _Mode, run: _Run, result: BenchResult, tick: Tick, dyn: DynamicTriton | None
) -> None:
    """One mode through Kafka at every load of the schedule: a worker process of its
    own (or, for triton-dynamic, the hand-rolled consumer) on topics of its own."""
    workload = run.workload
    policy = WorkerSettings(model=workload.model, pool="cpu").policy()
    triton = triton_probe(dyn.url if mode.kind == "dynamic" and dyn else run.triton_url)
    if triton is not None:
        triton.start()
    key = f"{workload.name}/{mode.name}"
    async with bench_topics(run.kafka, f"{workload.name}-{mode.name}") as topics:
        consumer: contextlib.AbstractAsyncContextManager[RssProbe]
        if mode.kind == "dynamic":
            assert dyn is not None
            consumer = dynamic_process(run.kafka, topics, workload.model, dyn, run.state)
        else:
            consumer = worker_process(
                model=workload.model,
                kafka=run.kafka,
                triton_url=run.triton_url,
                run=topics,
                env=mode.env,
                state_dir=run.state / "workers",
            )
        async with consumer as rss, KafkaRun(run.kafka, topics).started() as gen:
            index = 0
            for rate, arrivals in run.schedule:
                before = await dyn.batch_counts() if mode.kind == "dynamic" and dyn else None
                point = await gen.point(
                    workload,
                    mode=mode.name,
                    arrivals=arrivals,
                    offered_rps=rate,
                    max_latency_s=run.max_latency,
                    first_index=index,
                    on_done=_answered(
                        tick, _label(workload, mode.name, rate, run.round), len(arrivals)
                    ),
                )
                point = dataclasses.replace(point, round=run.round)
                if before is not None and dyn is not None:
                    # No telemetry from Triton's batcher: its statistics give the mean batch.
                    after = await dyn.batch_counts()
                    runs = after[1] - before[1]
                    mean = (after[0] - before[0]) / runs if runs else 0.0
                    point = dataclasses.replace(point, mean_batch=mean)
                index += len(arrivals)
                result.points.append(point)
            over = (
                sum(1 for b in gen.batches if b.size > 1 and b.padded_cost > policy.budget)
                if mode.strategy == "budget" and mode.kind == "worker"
                else 0
            )
            result.over_budget_batches[key] = result.over_budget_batches.get(key, 0) + over
        result.peak_rss_mb[key] = max(result.peak_rss_mb.get(key, 0.0), round(rss.peak_mb, 1))
    if triton is not None:
        await triton.stop()
        peak = max(result.peak_triton_rss_mb.get(key, 0.0), round(triton.peak_mb, 1))
        result.peak_triton_rss_mb[key] = peak


def _answered(tick: Tick, label: str, total: int) -> Callable[[int], None]:
    return lambda n: tick(label, n, total)


def _counter(tick: Tick, label: str, total: int) -> Callable[[], None]:
    done = [0]

    def bump() -> None:
        done[0] += 1
        tick(label, done[0], total)

    return bump
