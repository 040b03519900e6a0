"""`sluicegate trace`, `bench-tracing` and `dashboards`: observability commands."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from .stack.stack import LocalStack, StackSettings

if TYPE_CHECKING:
    from .telemetry import Telemetry


def trace(
    request_id: Annotated[str, typer.Argument(help="The request's id (as `submit` printed it).")],
    file: Annotated[
        Path | None,
        typer.Option(help="Collector output (default: the local stack's traces.jsonl)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the spans to arrive.")] = 5.0,
) -> None:
    """Print a request's trace as a tree, with the batch trace it links to."""
    from .traceview import load_spans, render, request_traces

    path = file or LocalStack(StackSettings()).collector.config.traces_file
    deadline = time.monotonic() + wait
    while True:
        traces = request_traces(load_spans(path), request_id)
        if traces or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not traces:
        Console(stderr=True).print(
            f"[red]error:[/] no spans of request {request_id} in {path}; was the stack started "
            "with `sluicegate up --observability` (and the client run with OTEL_* set)?"
        )
        raise typer.Exit(code=1)
    Console().print(render(traces, request_id))


def bench_tracing(
    iterations: Annotated[int, typer.Option(help="Simulated requests per variant.")] = 20_000,
) -> None:
    """Measure the per-request cost of the tracing hooks: absent, off, and on."""
    from .bench.tracing_overhead import measure

    sys.stdout.write(json.dumps(measure(iterations=iterations), indent=2) + "\n")


def dashboards(
    check: Annotated[
        bool, typer.Option(help="Exit 1 if the committed JSON differs from the generated one.")
    ] = False,
) -> None:
    """Generate the Grafana dashboard JSON (compose/grafana/dashboards/sluicegate.json)."""
    from .dashboards import OUTPUT, render, write

    if check:
        same = OUTPUT.exists() and OUTPUT.read_text() == render()
        Console(stderr=True).print(f"{OUTPUT}: {'up to date' if same else 'STALE'}")
        raise typer.Exit(code=0 if same else 1)
    Console(stderr=True).print(f"wrote {write()}")


def register(app: typer.Typer) -> None:
    app.command()(trace)
    app.command("bench-tracing")(bench_tracing)
    app.command()(dashboards)


def start_telemetry(service: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """`ops.telemetry.setup` for a command: a bad `OTEL_*` value exits 1 naming the fix."""
    from .telemetry import TelemetryConfigError, setup

    try:
        return setup(service, env=env)
    except (TelemetryConfigError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
