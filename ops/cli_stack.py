"""`up`, `status`, `down`, `demo`, `broker`, `triton`: the local stack, top level."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .cli_common import console, fail, start_telemetry
from .serve import wait_for_signal
from .stack.process import StackError
from .stack.stack import LocalStack, StackSettings

stack_app = typer.Typer()


@stack_app.command()
def up(
    model: Annotated[
        list[str] | None, typer.Option(help="Serve only these models (repeatable).")
    ] = None,
    observability: Annotated[
        bool,
        typer.Option(help="Also run an OpenTelemetry Collector; trace Triton and the workers."),
    ] = False,
    pools: Annotated[
        list[str] | None,
        typer.Option(
            "--pools",
            help="Pools to run, e.g. cpu,a100. a100 is a STAND-IN on this machine's CPU: a "
            "second Triton serving the a100 target's models, its own workers and work topics.",
        ),
    ] = None,
    workers_per_device: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes per model on the device, in one consumer group. One "
            "Python process cannot keep a fast GPU busy: docs/scaling.md says how many a card "
            "needs (`sluicegate bench` measures it against a simulated H100/A100; with "
            "SLUICEGATE_BACKEND=simulated they share one simulated card).",
        ),
    ] = 1,
) -> None:
    """Start Kafka, Triton and one worker per model in the background (state in .state/).

    With `--pools cpu,a100` the router routes large requests to the a100
    stand-in and small ones to CPU, and fails over to CPU if the stand-in dies.

    The workers, the router and the rollups run under a supervisor process
    (`<state>/supervisor/`) that restarts one that dies, with backoff;
    `sluicegate status` shows restarts and the last exit reason.
    """
    settings = StackSettings()
    if observability:
        settings = settings.model_copy(update={"observability": True})
    if workers_per_device != 1:
        settings = settings.model_copy(update={"workers_per_device": workers_per_device})
    stack = LocalStack(settings, progress=console.log)
    try:
        stack.up(models=model, pools=pools)
    except StackError as exc:
        raise fail(str(exc)) from None
    _print_status(stack)
    console.print("stack is up: `sluicegate submit ...`, `sluicegate status`, `sluicegate down`")


@stack_app.command()
def status() -> None:
    """Show each part of the local stack and its health (exit 1 if any is down)."""
    stack = LocalStack(StackSettings())
    if not _print_status(stack):
        raise typer.Exit(code=1)


def _print_status(stack: LocalStack) -> bool:
    table = Table(title=f"sluicegate local stack ({stack.state_dir})")
    for col in ("part", "pid", "health", "where"):
        table.add_column(col)
    parts = stack.status()
    for part in parts:
        health = "[green]ready[/]" if part.healthy else "[red]down[/]"
        table.add_row(part.name, str(part.pid or "-"), health, part.detail)
    Console().print(table)
    return all(part.healthy for part in parts)


@stack_app.command()
def down() -> None:
    """Stop every part of the local stack (workers drain and commit first)."""
    stopped = LocalStack(StackSettings(), progress=console.log).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command(hidden=True)
def supervise(
    state_dir: Annotated[Path, typer.Option(help="The supervisor's dir (plan.json in it).")],
) -> None:
    """Run the parts of plan.json, restarting any that exits (started by `up`)."""
    import logging

    from .stack.supervisor import Supervisor

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    Supervisor(directory=state_dir).run()


@stack_app.command()
def broker() -> None:
    """Run only the local Kafka broker in the foreground until Ctrl-C."""
    stack = LocalStack(StackSettings(), progress=console.log)
    try:
        stack.kafka.start(progress=console.log)
    except StackError as exc:
        raise fail(str(exc)) from None
    console.print(f"Kafka ready on {stack.kafka.bootstrap_servers}; Ctrl-C stops it")
    wait_for_signal()
    stack.kafka.stop()


@stack_app.command()
def triton(
    repository: Annotated[
        Path | None,
        typer.Option(help="Serve this prebuilt repository (manifest checked) instead of building."),
    ] = None,
    model_config_name: Annotated[
        str | None, typer.Option(help="Load configs/<name>.pbtxt where a model has one.")
    ] = None,
) -> None:
    """Build the model repository and run only Triton in the foreground until Ctrl-C."""
    from sluicegate.inference.manifest import ManifestError

    from .models.build import build_repository, verify_repository
    from .stack.triton import LocalTriton

    stack = LocalStack(StackSettings(), progress=console.log)
    server = stack.triton
    extra = (f"--model-config-name={model_config_name}",) if model_config_name else ()
    if repository is not None or extra:
        config = replace(
            server.config, repository=(repository or stack.repository).absolute(), extra_args=extra
        )
        server = LocalTriton(config)
    try:
        if repository is None:
            build_repository(stack.repository, progress=console.log)
        verify_repository(server.config.repository)
        server.start()
    except (StackError, ManifestError) as exc:
        raise fail(str(exc)) from None
    console.print(f"Triton ready on {server.grpc_url} (gRPC); Ctrl-C stops it")
    wait_for_signal()
    server.stop()


@stack_app.command()
def demo(
    count: Annotated[int, typer.Option(help="Requests in the mixed stream.")] = 36,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 300.0,
    observability: Annotated[
        bool, typer.Option(help="Trace everything into a local collector (`sluicegate trace`).")
    ] = False,
) -> None:
    """Bring the stack up, run a mixed stream of OCR / embedding / doc-match requests, tear down."""
    from .demo import run_demo
    from .stack.collector import otel_env

    settings = StackSettings().model_copy(update={"observability": observability})
    collector = LocalStack(settings).collector.config
    env = otel_env(collector, service="sg-client", prometheus_port=None) if observability else {}
    telemetry = start_telemetry("sg-client", env=env if observability else None)
    try:
        code = run_demo(settings, count=count, timeout=timeout)
    except StackError as exc:
        raise fail(str(exc)) from None
    finally:
        telemetry.shutdown()
    if observability:
        console.print(f"traces: {collector.traces_file}; read one with `sluicegate trace ID`")
    raise typer.Exit(code=code)
