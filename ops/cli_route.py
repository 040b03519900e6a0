"""`sluicegate route set|show|rollback`: model versions over the sg.control topic."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

from sluicegate.schemas.control import RouteGuards, RouteSpec
from sluicegate.schemas.topics import POOLS, Pool

from .cli_common import console

route_app = typer.Typer(
    help="Model versions: canary weights, shadow, rollback (via the sg.control topic).",
    no_args_is_help=True,
)


def control_topic() -> tuple[Any, str]:
    """The brokers and control topic a client command uses (they follow the local stack)."""
    from sluicegate.streams.client import ClientSettings

    s = ClientSettings()
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
    max_error_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Guard: roll back when a canary's error rate passes this."
        ),
    ] = None,
    max_p99_ratio: Annotated[
        float | None,
        typer.Option(min=1.0, help="Guard: roll back when canary p99 / primary p99 passes this."),
    ] = None,
    min_shadow_similarity: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Guard: roll back when shadow agreement drops below."),
    ] = None,
    min_requests: Annotated[
        int, typer.Option(min=1, help="Requests (or shadow pairs) a window needs to trip a guard.")
    ] = 20,
) -> None:
    """Set a model's route; every router applies it within seconds.

    With a guard option, the telemetry rollups (`sluicegate telemetry`) watch
    every window and roll the route back to the one it replaces by themselves
    when a canary breaks a guard (a `rollback` event on sg.telemetry.rollup says why).
    """
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
    limits = (max_error_rate, max_p99_ratio, min_shadow_similarity)
    guards = None
    if any(v is not None for v in limits):
        guards = RouteGuards(
            max_error_rate=max_error_rate,
            max_p99_ratio=max_p99_ratio,
            min_shadow_similarity=min_shadow_similarity,
            min_requests=min_requests,
        )
    try:
        spec = RouteSpec(
            model=model,
            versions=versions,
            shadow=shadow,
            shadow_fraction=shadow_fraction,
            pools=pools,
            guards=guards,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    kafka, topic = control_topic()
    _print_spec(asyncio.run(publish_route(kafka, topic, spec)))


@route_app.command("show")
def route_show() -> None:
    """Print the current route of every configured model (JSON)."""
    from sluicegate.streams.control import read_routes

    kafka, topic = control_topic()
    routes = asyncio.run(read_routes(kafka, topic))
    out = {m: json.loads(s.model_dump_json(exclude={"previous"})) for m, s in routes.items()}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


@route_app.command("rollback")
def route_rollback(model: Annotated[str, typer.Option(help="Model to roll back.")]) -> None:
    """Restore the model's previous route (a second rollback undoes the first)."""
    from sluicegate.streams.control import rollback_route
    from sluicegate.streams.errors import NoEarlierRouteError

    kafka, topic = control_topic()
    try:
        _print_spec(asyncio.run(rollback_route(kafka, topic, model)))
    except NoEarlierRouteError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
