"""`sluicegate schema dump`: the wire format, for producers in any language."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Literal

import typer
from pydantic import BaseModel

from sluicegate.schemas.models import InferenceRequest, InferenceResult, TelemetryEvent

schema_app = typer.Typer(
    help="The wire format, for producers in any language.", no_args_is_help=True
)


@schema_app.command("dump")
def schema_dump(
    record: Annotated[Literal["request", "result", "telemetry"], typer.Argument()] = "request",
) -> None:
    """Print the JSON Schema of a record (fields of the msgpack map)."""
    model: dict[str, type[BaseModel]] = {
        "request": InferenceRequest,
        "result": InferenceResult,
        "telemetry": TelemetryEvent,
    }
    sys.stdout.write(json.dumps(model[record].model_json_schema(), indent=2) + "\n")
