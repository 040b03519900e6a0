"""`sluicegate bench run|router|tracing`: the benchmarks (see `ops/bench`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from .cli_common import console

bench_app = typer.Typer(
    help="Benchmarks: `run` (budget batching vs its baselines, `make bench`), "
    "`router` (router vs a bare relay), `tracing` (what the tracing hooks cost).",
    no_args_is_help=True,
)


@bench_app.command("run")
def run(
    quick: Annotated[
        bool,
        typer.Option(help="Smoke run: text only, two loads plus a backlog, 2 rounds (~8 min)."),
    ] = False,
    out: Annotated[Path, typer.Option(help="Where report.md, results.json and plots go.")] = Path(
        "bench"
    ),
    transport: Annotated[
        Literal["grpc", "shm"],
        typer.Option(help="Triton transport of the main run; the full run also tries the other."),
    ] = "shm",
    seed: Annotated[int, typer.Option(help="Seed of the request mix and the arrivals.")] = 7,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Interleaved rounds (every mode once per round, order reversed every other "
            "round); each figure is the median over rounds with its spread. Default: 2 with "
            "--quick, else 3.",
        ),
    ] = None,
    tuned_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A tuned budget file (`sluicegate tune --model ocr`) for the image workers' "
            "budget modes; default: the model's default budget.",
        ),
    ] = None,
) -> None:
    """Measure budget batching against direct Triton, unbatched, Triton's dynamic batcher
    and count batching.

    Starts its own Kafka and Triton on free loopback ports (and a second Triton
    serving the bench-only `<model>-dyn` copies), runs every mode at the same
    offered loads in interleaved rounds, writes OUT/report.md (a headline table:
    figure, median, spread, goal, met?), OUT/results.json and PNG plots, and
    prints the headline medians. Takes about 35 minutes on 2 cores (--quick:
    about 8).
    """
    from .bench.report import write_report
    from .bench.run import BenchConfig, run_bench

    cfg = BenchConfig(
        quick=quick, seed=seed, transport=transport, rounds=rounds, tuned_file=tuned_file
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def tick(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        result = asyncio.run(run_bench(cfg, say=console.log, tick=tick))
    command = "sluicegate bench run" + (" --quick" if quick else "")
    figures = write_report(result, out, command=command)
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    console.print(f"report: {out / 'report.md'}")


@bench_app.command("router")
def bench_router(
    count: Annotated[int, typer.Option(help="Requests pushed through each path.")] = 5000,
    delivery: Annotated[
        Literal["at_least_once", "exactly_once"],
        typer.Option(help="The router's delivery mode (the relay is always at-least-once)."),
    ] = "at_least_once",
) -> None:
    """Measure the router against a bare aiokafka relay on the running broker (prints JSON)."""
    from sluicegate.streams.router import RouterSettings

    from .bench.router_relay import bench_router_vs_relay

    kafka = RouterSettings().kafka
    figures = asyncio.run(bench_router_vs_relay(kafka, count=count, delivery=delivery))
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")


@bench_app.command("quarantine")
def bench_quarantine_cmd(
    count: Annotated[int, typer.Option(help="Requests per run.")] = 5000,
    rounds: Annotated[int, typer.Option(help="Runs with quarantine on and off each.")] = 2,
) -> None:
    """Measure crash-loop quarantine's cost: a null-backend worker on vs off (prints JSON)."""
    from sluicegate.workers.config import WorkerSettings

    from .bench.quarantine_cost import bench_quarantine

    figures = asyncio.run(bench_quarantine(WorkerSettings().kafka, count=count, rounds=rounds))
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")


@bench_app.command("tracing")
def bench_tracing(
    iterations: Annotated[int, typer.Option(help="Simulated requests per variant.")] = 20_000,
) -> None:
    """Measure the per-request cost of the tracing hooks: absent, off, and on."""
    from .bench.tracing_overhead import measure

    sys.stdout.write(json.dumps(measure(iterations=iterations), indent=2) + "\n")


@bench_app.command("profile")
def bench_profile(
    target: Annotated[
        list[str],
        typer.Option(help="What to profile: worker (the null-model worker) and/or router."),
    ] = ["worker", "router"],  # noqa: B006 (typer reads the default; it is never mutated)
    count: Annotated[
        int, typer.Option(help="Requests in the backlog each target drains.")
    ] = 20_000,
    out: Annotated[Path, typer.Option(help="Where <target>.folded and <target>.md go.")] = Path(
        "bench/profile"
    ),
    cache_dir: Annotated[Path, typer.Option(help="Where the Kafka jars are cached.")] = Path(
        ".cache"
    ),
) -> None:
    """Where the time goes: py-spy on the null worker / the router draining a backlog.

    Starts a Kafka of its own on free loopback ports; prints the top frames by
    own and cumulative time and writes OUT/<target>.md and OUT/<target>.folded
    (collapsed stacks; open them in speedscope).
    """
    from .bench.profile import profile

    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(
        profile(target, count=count, out=out, cache_dir=cache_dir, say=console.log)
    )
    for result in results:
        console.print(result.markdown())
