"""`sluicegate dlq replay`: send dead letters back where they came from (see ops/dlq.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.table import Table

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings

from .dlq import ReplayFilter, ReplaySummary, replay

dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
_err = Console(stderr=True, highlight=False)


class DlqSettings(BaseSettings):
    """Where `dlq replay` connects and its topics: `SLUICEGATE_KAFKA__*`, `SLUICEGATE_TOPICS__*`."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()


def parse_time(value: str | None) -> int | None:
    """Unix epoch ms from an ISO-8601 time (UTC unless it says) or a number of epoch ms."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO-8601 time (2026-11-23T22:00) nor epoch milliseconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dlq_app.command("replay")
def replay_cmd(
    code: Annotated[
        list[str] | None,
        typer.Option(help="Replay only letters with this sg-dlq-code (repeatable)."),
    ] = None,
    request_id: Annotated[
        list[str] | None, typer.Option(help="Replay only this request id (repeatable).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Dead-lettered at or after: ISO-8601 (UTC) or epoch ms.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Dead-lettered before: ISO-8601 (UTC) or epoch ms.")
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0.1, help="At most this many records a second.")
    ] = 100.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be replayed; send nothing.")
    ] = False,
) -> None:
    """Send dead letters back to their source topic once their cause is fixed.

    Reads sg.dlq up to its current end; each letter that matches goes back to
    the topic in its sg-dlq-source-topic header, without its sg-dlq-* headers
    and with sg-replayed-from. Only sg.requests and work topics are replayed
    into; letters from other topics (a malformed control record) are counted
    as refused. Exit 0 when something matched, 1 when nothing did.
    """
    settings = DlqSettings()
    selection = ReplayFilter(
        codes=frozenset(code or ()),
        request_ids=frozenset(request_id or ()),
        since_ms=parse_time(since),
        until_ms=parse_time(until),
    )

    def progress(s: ReplaySummary) -> None:
        verb = "would replay" if dry_run else "replayed"
        _err.print(
            f"{s.topic}: read {s.read} of {s.available}, matched {s.matched}, {verb} {s.replayed}"
        )

    summary = asyncio.run(
        replay(
            settings.kafka,
            settings.topics,
            selection,
            dry_run=dry_run,
            rate_per_s=rate,
            progress=progress,
        )
    )
    table = Table(title="dry run: nothing sent" if dry_run else "replayed")
    table.add_column("what")
    table.add_column("records", justify="right")
    table.add_row("read", str(summary.read))
    table.add_row("matched", str(summary.matched))
    for topic, n in sorted(summary.by_topic.items()):
        table.add_row(f"{'would go' if dry_run else 'sent'} to {topic}", str(n))
    for reason, n in sorted(summary.refused.items()):
        table.add_row(f"refused: {reason}", str(n))
    Console(highlight=False).print(table)
    if summary.matched == 0:
        raise typer.Exit(code=1)
