"""`sluicegate chaos run|list`: the fault-injection harness (see ops/chaos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from .stack.process import StackError
from .stack.stack import StackSettings

chaos_app = typer.Typer(
    help="Fault injection: seed unique requests into a stack of its own, break it, "
    "count every result (`run`); `list` names the scenarios.",
    no_args_is_help=True,
)


@chaos_app.command("run")
def run(
    scenario: Annotated[
        str,
        typer.Option(
            help="kill-worker, scale-workers, broker-restart, triton-restart, slow-triton, "
            "overload, leader-kill (comma-separated), or all."
        ),
    ] = "all",
    requests: Annotated[
        int, typer.Option(min=10, help="Unique requests seeded per scenario.")
    ] = 10_000,
    mode: Annotated[
        Literal["at_least_once", "exactly_once"],
        typer.Option(help="Delivery mode of the routers and workers."),
    ] = "exactly_once",
    burst_s: Annotated[float, typer.Option(help="Length of the overload burst, seconds.")] = 60.0,
    slow_s: Annotated[float, typer.Option(help="Seconds Triton stays slowed.")] = 30.0,
    kills: Annotated[
        int, typer.Option(min=1, help="kill -9s in the kill-worker and kill-router scenarios.")
    ] = 5,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Where the chaos stacks keep their files (default: a temp dir)."),
    ] = None,
) -> None:
    """Seed N unique requests into a local stack of its own, inject faults, count every result.

    Exits 1 if any request was lost, or (exactly_once) any result duplicated, or a run
    did not finish within its time bound.
    """
    from .chaos.main import run_scenarios, table
    from .chaos.run import Options
    from .chaos.scenarios import SCENARIOS

    log = Console(stderr=True)
    names = list(SCENARIOS) if scenario == "all" else scenario.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        log.print(
            f"[red]error:[/] unknown scenario {unknown[0]!r}; "
            f"choose from {', '.join(SCENARIOS)} or all"
        )
        raise typer.Exit(code=2)
    try:
        reports = run_scenarios(
            names,
            requests=requests,
            mode=mode,
            cache_dir=StackSettings().cache_dir.resolve(),
            state_dir=state_dir,
            options=Options(kills=kills, burst_s=burst_s, slow_s=slow_s),
            progress=log.log,
        )
    except StackError as exc:
        log.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    Console(width=max(Console().width, 200)).print(table(reports))
    if not all(r.passed for r in reports):
        raise typer.Exit(code=1)


@chaos_app.command("list")
def list_scenarios() -> None:
    """Name each scenario, what it breaks and how many brokers it runs on."""
    from .chaos.scenarios import SCENARIOS

    for s in SCENARIOS.values():
        Console().print(f"{s.name:16} {s.brokers} broker(s)  {s.summary}")
