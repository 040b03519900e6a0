"""Does `sluicegate ARGS` parse? Checked against the real typer app, options included."""

from __future__ import annotations

from typing import Any

import typer.main

from sluicegate.ops.cli import app

try:  # typer >= 0.2x vendors its own click; older ones use the click package
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[assignment]


def cli_error(args: list[str]) -> str | None:
    """Why `sluicegate ARGS` would not parse, or None when it does."""
    command: Any = typer.main.get_command(app)
    parent = command.make_context("sluicegate", [], resilient_parsing=True)
    parent.resilient_parsing = False  # only the group's own (empty) args were lenient
    rest = list(args)
    try:
        while hasattr(command, "resolve_command"):  # a group: find the subcommand
            name, command, rest = command.resolve_command(parent, rest)
            if hasattr(command, "resolve_command"):
                parent = command.make_context(name, [], parent=parent, resilient_parsing=True)
                parent.resilient_parsing = False
        command.make_context(command.name, list(rest), parent=parent)
    except UsageError as exc:
        return str(exc.format_message())
    return None
