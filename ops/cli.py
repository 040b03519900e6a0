"""The `sluicegate` command line: the composition root of the project.

Every command lives in a `typer.Typer()` of its own module and is attached
here, so this file is the map of the tree. The ones run most, or named by
compose files, the Kubernetes manifests and other processes (`worker`,
`router`, `telemetry`, `triton`), are at the top level; the rest are groups.
"""

from __future__ import annotations

import typer

from .cli_bench import bench_app
from .cli_chaos import chaos_app
from .cli_client import client_app
from .cli_dlq import dlq_app
from .cli_generate import generate_app
from .cli_models import models_app
from .cli_route import route_app
from .cli_schema import schema_app
from .cli_serve import serve_app
from .cli_stack import stack_app
from .cli_topics import topics_app
from .cli_tune import tune_app

app = typer.Typer(
    name="sluicegate",
    help="Streaming inference over Kafka: budget-batched requests into Triton, one result each.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Top level, no group name: up, status, down, demo, broker, triton.
app.add_typer(stack_app)
# Top level: worker, router, telemetry (what compose and the manifests run).
app.add_typer(serve_app)
# Top level: submit, cancel, trace, top.
app.add_typer(client_app)
app.add_typer(models_app, name="models")
app.add_typer(route_app, name="route")
app.add_typer(topics_app, name="topics")
app.add_typer(schema_app, name="schema")
app.add_typer(bench_app, name="bench")
app.add_typer(generate_app, name="generate")
app.add_typer(chaos_app, name="chaos")
app.add_typer(dlq_app, name="dlq")
# Top level: tune (calibrates a model x pool's batch budget).
app.add_typer(tune_app)


def main() -> None:
    app()
