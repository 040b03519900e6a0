"""`sluicegate bench`: the benchmark's command line (see `ops/bench`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

console = Console(stderr=True)


def bench(
    quick: Annotated[
        bool, typer.Option(help="CI smoke run: text only, two loads, short (under 2 minutes).")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where report.md, results.json and plots go.")] = Path(
        "bench"
    ),
    transport: Annotated[
        Literal["grpc", "shm"],
        typer.Option(help="Triton transport of the main run; the full run also tries the other."),
    ] = "shm",
    seed: Annotated[int, typer.Option(help="Seed of the request mix and the arrivals.")] = 7,
) -> None:
    """Measure budget batching against direct Triton, unbatched and count batching.

    Starts its own Kafka and Triton on free loopback ports, runs every mode at
    the same offered loads, writes OUT/report.md, OUT/results.json and PNG
    plots, and prints the headline ratios. Takes about 12 minutes on 2 cores
    (--quick: under 2).
    """
    from .bench.report import write_report
    from .bench.run import BenchConfig, run_bench

    cfg = BenchConfig(quick=quick, seed=seed, transport=transport)
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
    command = "sluicegate bench" + (" --quick" if quick else "")
    figures = write_report(result, out, command=command)
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    console.print(f"report: {out / 'report.md'}")
