"""`sluicegate generate dashboards|k8s|collector`: files and binaries generated from code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_common import console, fail
from .stack.process import StackError
from .stack.stack import StackSettings

generate_app = typer.Typer(
    help="Generate what is derived from code: the Grafana dashboard, the Kubernetes "
    "manifests (ops/k8s), the OpenTelemetry Collector binary.",
    no_args_is_help=True,
)

Check = Annotated[
    bool, typer.Option(help="Exit 1 if the committed files differ from the generated ones.")
]


@generate_app.command()
def dashboards(check: Check = False) -> None:
    """Generate the Grafana dashboard JSON (compose/grafana/dashboards/sluicegate.json)."""
    from .dashboards import OUTPUT, render, write

    if check:
        same = OUTPUT.exists() and OUTPUT.read_text() == render()
        console.print(f"{OUTPUT}: {'up to date' if same else 'STALE'}")
        raise typer.Exit(code=0 if same else 1)
    console.print(f"wrote {write()}")


@generate_app.command()
def k8s(check: Check = False) -> None:
    """Generate the Kubernetes manifests: ops/k8s/base.yaml and one pool-<pool>.yaml per pool."""
    from .k8s.generate import generated, write

    if check:
        stale = [p for p, text in generated().items() if not p.exists() or p.read_text() != text]
        for path in stale:
            console.print(f"{path}: STALE")
        console.print("manifests up to date" if not stale else "run `sluicegate generate k8s`")
        raise typer.Exit(code=1 if stale else 0)
    for path in write():
        console.print(f"wrote {path}")


@generate_app.command()
def collector(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Build under this cache dir (default: the stack's).")
    ] = None,
) -> None:
    """Build the OpenTelemetry Collector (ocb, pinned) into <cache>/otelcol; print its path."""
    from .stack.collector import build_collector

    try:
        binary = build_collector(cache_dir or StackSettings().cache_dir, progress=console.log)
    except StackError as exc:
        raise fail(str(exc)) from None
    print(binary)
