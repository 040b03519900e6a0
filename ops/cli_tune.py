"""`sluicegate tune`: sweep Triton's latency against padded batch cost, write the knee."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from sluicegate.schemas.catalog import CATALOG
from sluicegate.schemas.topics import POOLS

from .cli_common import console, fail

__all__ = ["tune_app"]

tune_app = typer.Typer()

_HELP = (
    "Calibrate the batch budget of a model on a pool against the real Triton.\n\n"
    "Times batches of the benchmark's request mix at growing padded cost (1, 2, 4, ... "
    "members of one size bucket; --sizes to choose) and finds the knee: the smallest "
    "padded cost reaching --fraction of the best throughput, or one item per batch "
    "when throughput is flat or falls with batch size.\n\n"
    "Writes budget, max_batch_size and max_queue_delay_microseconds for MODEL x POOL to "
    "the tuned-budget file the workers read (SLUICEGATE_BATCH__TUNED_FILE, default "
    "<state dir>/tuned-budgets.json; SLUICEGATE_BATCH__* variables still win), a PNG "
    "plot and a table. Talks to the local stack's Triton (`sluicegate up`) unless "
    "--triton-url names one."
)


def _state_dir() -> Path:
    return Path(os.environ.get("SLUICEGATE_STATE_DIR") or ".state")


def _stack_triton(pool: str) -> str:
    """The local stack's Triton for `pool` from its stack.json (the a100 stand-in's for a100)."""
    path = _state_dir() / "stack.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(
            f"no local stack ({path} is missing): start it with `sluicegate up`, "
            "or pass --triton-url"
        ) from None
    except (OSError, ValueError) as exc:
        raise fail(f"{path} is not readable JSON ({exc}); run `sluicegate up` again") from None
    standin = data.get("a100_standin") if pool == "a100" else None
    url = (standin or {}).get("triton_grpc") if isinstance(standin, dict) else None
    url = url or data.get("triton_grpc")
    if not isinstance(url, str) or not url:
        raise fail(f"{path} names no Triton; run `sluicegate up` again, or pass --triton-url")
    return url


@tune_app.command("tune", help=_HELP)
def tune(
    model: Annotated[str, typer.Option(help="Model to tune: text-embed, ocr or doc-match.")],
    pool: Annotated[str, typer.Option(help="Pool the budget is for: cpu, a100 or mi200.")] = "cpu",
    triton_url: Annotated[
        str | None, typer.Option(help="Triton gRPC host:port (default: the local stack's).")
    ] = None,
    sizes: Annotated[
        str | None,
        typer.Option(help="Batch sizes to time, e.g. 1,2,3,4 (default 1,2,4,... up to max)."),
    ] = None,
    calls: Annotated[int, typer.Option(min=1, help="Timed calls per batch size.")] = 5,
    fraction: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of the best throughput the knee needs.")
    ] = 0.9,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Tuned-budget file (default SLUICEGATE_BATCH__TUNED_FILE or the stack's)."
        ),
    ] = None,
    plot_file: Annotated[
        Path | None,
        typer.Option("--plot", help="PNG plot (default tune-<model>-<pool>.png beside it)."),
    ] = None,
) -> None:
    from sluicegate.workers import tuned as tuned_file
    from sluicegate.workers.budgets import default_policy

    from .tune.knee import ladder, tuned_budget
    from .tune.sweep import Sweep, TritonNotReady, mix_for, plot, sweep

    if model not in CATALOG:
        raise fail(f"unknown model {model!r}; choose one of {', '.join(sorted(CATALOG))}")
    if pool not in POOLS:
        raise fail(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    try:
        size_list = None if sizes is None else [int(s) for s in sizes.split(",") if s.strip()]
        policy = default_policy(model, pool)
        mix = mix_for(model)
        rungs = ladder([item.cost for item in mix.items], policy, sizes=size_list)
    except ValueError as exc:
        raise fail(f"{exc} (--sizes takes positive integers, e.g. 1,2,4)") from None
    url = triton_url or _stack_triton(pool)
    env_file = os.environ.get("SLUICEGATE_BATCH__TUNED_FILE")
    target = out or (Path(env_file) if env_file else tuned_file.default_path())
    unit = "px" if model in ("ocr", "doc-match") else "tokens"
    console.print(f"tuning {model} on {pool} through Triton at {url}: {len(rungs)} batch sizes")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("sweeping", total=len(rungs))

        def step(index: int, rung: object) -> None:
            bar.update(task, completed=index + 1)

        try:
            timings = asyncio.run(
                sweep(Sweep(url=url, model=model, calls=calls), mix, rungs, progress=step)
            )
        except TritonNotReady as exc:
            raise fail(str(exc)) from None
    result = tuned_budget(timings, policy, fraction=fraction)
    try:
        current = tuned_file.load(target, missing_ok=True)
    except ValueError as exc:
        raise fail(str(exc)) from None
    tuned_file.save(target, current.with_budget(model, pool, result))
    picture = plot(
        timings,
        unit=unit,
        title=f"{model} on {pool}: throughput and latency vs padded cost",
        out=plot_file or target.with_name(f"tune-{model}-{pool}.png"),
    )
    table = Table(title=f"{model} x {pool}")
    for column in ("batch", f"padded {unit}", f"real {unit}", "latency ms", f"{unit}/s", ""):
        table.add_column(column, justify="right")
    for rung in result.measured["rungs"]:
        mark = "knee" if rung["padded_cost"] == result.budget else ""
        table.add_row(
            str(rung["batch_size"]),
            f"{rung['padded_cost']:,}",
            f"{rung['real_cost']:,}",
            f"{rung['latency_ms']:.1f}",
            f"{rung['throughput']:,.0f}",
            mark,
        )
    console.print(table)
    console.print(
        f"budget {result.budget:,} {unit}, max_batch_size {result.max_batch_size}, "
        f"max_queue_delay {result.max_queue_delay_microseconds} µs -> {target}; plot {picture}"
    )
