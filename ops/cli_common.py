"""What every command module shares: the stderr console, failing with a message, telemetry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from .telemetry import Telemetry

console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """The exit (code 1) to raise after printing `message` as an error."""
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(code=1)


def start_telemetry(service: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """`ops.telemetry.setup` for a command: a bad `OTEL_*` value exits 1 naming the fix."""
    from .telemetry import TelemetryConfigError, setup

    try:
        return setup(service, env=env)
    except (TelemetryConfigError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
