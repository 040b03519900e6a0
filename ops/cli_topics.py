"""`sluicegate topics ...`: declarative topic provisioning (see streams/topicspec.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.provision import ProvisionError, apply_topics, plan_topics
from sluicegate.streams.topicspec import Plan, TopicSpecError, load_topic_file

topics_app = typer.Typer(
    help="Create and reconcile Kafka topics from a YAML file.", no_args_is_help=True
)
_err = Console(stderr=True)
_STYLE = {"+": "green", "~": "yellow", "!": "red", "=": "dim"}


class TopicsSettings(BaseSettings):
    """Where `topics apply` connects: `SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS` etc."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()


def _print(plan: Plan) -> None:
    out = Console(highlight=False)
    for line in plan.diff_lines():
        out.print(f"[{_STYLE[line[0]]}]{line}[/]", soft_wrap=True)


@topics_app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="The topic file, e.g. topics.yaml.")] = Path(
        "topics.yaml"
    ),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the diff against the cluster; change nothing.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(help="Exit 3 when something differs that apply will not change (`!` lines)."),
    ] = True,
) -> None:
    """Make the cluster's topics match PATH: create, add partitions, set configs (idempotent).

    Prints `+` create, `~` change, `=` unchanged, `!` differs but is not changed
    (fewer partitions, another replication factor). Never deletes a topic.
    """
    try:
        desired = load_topic_file(path).resolved()
        kafka = TopicsSettings().kafka
        run = plan_topics if dry_run else apply_topics
        plan = asyncio.run(run(kafka, desired))
    except (TopicSpecError, ProvisionError) as exc:
        _err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    _print(plan)
    verb = "would change" if dry_run else "changed"
    _err.print(
        f"{verb} {len(plan.changes)}, unchanged {len(plan.unchanged)}, blocked {len(plan.blockers)}"
    )
    if plan.blockers and strict:
        raise typer.Exit(code=3)


@topics_app.command("acls")
def acls(
    client: Annotated[
        list[str] | None,
        typer.Option(help="Client app name (repeatable): principal User:sg-client-<app>."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Served model (repeatable; default every catalog model)."),
    ] = None,
    clients_route_themselves: Annotated[
        bool, typer.Option(help="Let clients write sg.work.* directly (SDK via_router=False).")
    ] = False,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Create the ACLs (as a super user from SLUICEGATE_KAFKA__*)."),
    ] = False,
) -> None:
    """Print (or with --apply, create) the per-service Kafka ACLs of docs/security.md.

    Principals: User:sg-client-<app>, User:sg-router, User:sg-worker-<model>,
    User:sg-telemetry. Idempotent; never removes an ACL.
    """
    from sluicegate.schemas.catalog import CATALOG

    from .acls import AclError, acl_bindings, acl_rows, create_acls

    rows = acl_rows(
        TopicSettings(),
        clients=client or [],
        models=model or list(CATALOG),
        clients_route_themselves=clients_route_themselves,
    )
    bindings = acl_bindings(rows)
    out = Console(highlight=False)
    for binding in bindings:
        out.print(str(binding), soft_wrap=True)
    if not apply:
        _err.print(f"{len(bindings)} ACLs; --apply creates them")
        return
    try:
        created = asyncio.run(create_acls(TopicsSettings().kafka, bindings))
    except AclError as exc:
        _err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    _err.print(f"created {created} ACLs (existing ones kept)")
