"""Test helpers: the Go validators in .cache/bin, and whether `sluicegate ARGS` parses."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
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


REPO = Path(__file__).resolve().parent.parent


@cache
def go_tool(name: str) -> Path:
    """`.cache/bin/<name>`, built by `make tools` first if missing (fails loudly if it cannot)."""
    path = REPO / ".cache" / "bin" / name
    if not path.is_file():
        done = subprocess.run(
            ["make", "-s", "tools"], cwd=REPO, capture_output=True, text=True, timeout=1800
        )
        assert done.returncode == 0, f"`make tools` failed:\n{done.stdout}\n{done.stderr}"
    assert path.is_file(), f"`make tools` did not build {path}"
    return path
