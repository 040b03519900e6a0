"""CLI commands of the streams part: router, telemetry, route, cancel, bench-router, top."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sluicegate.schemas.control import RouteSpec
from sluicegate.schemas.topics import POOLS, Pool

from .serve import serve_until_signalled

console = Console(stderr=True)
route_app = typer.Typer(
    help="Model versions: canary weights, shadow, rollback (via the sg.control topic).",
    no_args_is_help=True,
)


ReadyFile = Annotated[
    Path | None, typer.Option(help="Touched once the process has joined its consumer group.")
]


def router(ready_file: ReadyFile = None) -> None:
    """Run the ingress router: sg.requests -> validate, mask, quota, route -> sg.work.*."""
    from sluicegate.streams.router import Router, RouterSettings

    from .cli_observability import start_telemetry

    settings = RouterSettings()
    telemetry = start_telemetry("sg-router")  # from OTEL_*; off unless they say where to send
    try:
        serve_until_signalled(lambda: contextlib.nullcontext(Router(settings=settings)), ready_file)
    finally:
        telemetry.shutdown()


def telemetry(ready_file: ReadyFile = None) -> None:
    """Run the telemetry rollups: sg.telemetry -> windows -> sg.telemetry.rollup, /metrics."""
    from sluicegate.streams.telemetry import TelemetryRollups, TelemetrySettings

    settings = TelemetrySettings()
    serve_until_signalled(
        lambda: contextlib.nullcontext(TelemetryRollups(settings=settings)), ready_file
    )


def _control() -> tuple[Any, str]:
    from sluicegate.streams.router import RouterSettings

    s = RouterSettings()
    return s.kafka, s.topics.control


def _print_spec(spec: RouteSpec) -> None:
    sys.stdout.write(spec.model_dump_json(indent=2, exclude={"previous"}) + "\n")


@route_app.command("set")
def route_set(
    model: Annotated[str, typer.Option(help="text-embed, ocr or doc-match.")],
    version: Annotated[
        list[str],
        typer.Option(help="VERSION=WEIGHT (repeatable), e.g. --version 1=90 --version 2=10."),
    ],
    shadow: Annotated[str | None, typer.Option(help="Version that gets a shadow copy.")] = None,
    shadow_fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    pool: Annotated[list[str] | None, typer.Option(help="Allowed pools (repeatable).")] = None,
) -> None:
    """Set a model's route; every router applies it within seconds."""
    from sluicegate.streams.control import publish_route

    versions: dict[str, float] = {}
    for item in version:
        name, sep, weight = item.partition("=")
        try:
            versions[name] = float(weight) if sep else 1.0
        except ValueError:
            raise typer.BadParameter(f"{item!r}: use VERSION=WEIGHT") from None
    bad = [p for p in pool or [] if p not in POOLS]
    if bad:
        raise typer.BadParameter(f"unknown pool(s) {bad}; pools are {', '.join(POOLS)}")
    pools: tuple[Pool, ...] | None = tuple(pool) if pool else None  # type: ignore[arg-type]
    try:
        spec = RouteSpec(
            model=model,
            versions=versions,
            shadow=shadow,
            shadow_fraction=shadow_fraction,
            pools=pools,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    kafka, topic = _control()
    _print_spec(asyncio.run(publish_route(kafka, topic, spec)))


@route_app.command("show")
def route_show() -> None:
    """Print the current route of every configured model (JSON)."""
    from sluicegate.streams.control import read_routes

    kafka, topic = _control()
    routes = asyncio.run(read_routes(kafka, topic))
    out = {m: json.loads(s.model_dump_json(exclude={"previous"})) for m, s in routes.items()}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


@route_app.command("rollback")
def route_rollback(model: Annotated[str, typer.Option(help="Model to roll back.")]) -> None:
    """Restore the model's previous route (a second rollback undoes the first)."""
    from sluicegate.streams.control import rollback_route
    from sluicegate.streams.errors import NoEarlierRouteError

    kafka, topic = _control()
    try:
        _print_spec(asyncio.run(rollback_route(kafka, topic, model)))
    except NoEarlierRouteError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None


def cancel(request_id: Annotated[str, typer.Argument(help="The request to cancel.")]) -> None:
    """Cancel a request: routers and workers answer it `rejected: cancelled` if not yet run."""
    from sluicegate.streams.control import publish_cancel

    kafka, topic = _control()
    asyncio.run(publish_cancel(kafka, topic, request_id))
    console.print(f"cancel for {request_id} published on {topic}")


def bench_router(
    count: Annotated[int, typer.Option(help="Requests pushed through each path.")] = 5000,
) -> None:
    """Measure the router against a bare aiokafka relay on the running broker (prints JSON)."""
    from sluicegate.streams.router import RouterSettings

    from .bench.router_relay import bench_router_vs_relay

    figures = asyncio.run(bench_router_vs_relay(RouterSettings().kafka, count=count))
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")


def top(
    window: Annotated[int, typer.Option(help="Window to show: 10 or 60 seconds.")] = 10,
) -> None:
    """A live view of the telemetry rollups (Ctrl-C quits)."""
    from .top import run_top

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_top(window_s=window))


def register(app: typer.Typer) -> None:
    """Add the streams commands to the `sluicegate` app."""
    app.command()(router)
    app.command()(telemetry)
    app.command()(cancel)
    app.command("bench-router")(bench_router)
    app.command()(top)
    app.add_typer(route_app, name="route")
