"""`worker`, `router`, `telemetry`: run one service in the foreground (top level)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer

from .cli_common import start_telemetry
from .serve import serve_until_signalled

serve_app = typer.Typer()

ReadyFile = Annotated[
    Path | None, typer.Option(help="Touched once the process has joined its consumer group.")
]


@serve_app.command()
def worker(
    model: Annotated[str, typer.Option(help="Model to serve: text-embed, ocr or doc-match.")],
    pool: Annotated[str, typer.Option(help="Pool whose work topic to read.")] = "cpu",
    ready_file: Annotated[
        Path | None, typer.Option(help="Touched once the worker has joined its group.")
    ] = None,
) -> None:
    """Serve one model: read sg.work.<model>.<pool>, batch, call Triton, write results.

    SLUICEGATE_BACKEND=onnxruntime runs the model in this process instead of
    Triton; SLUICEGATE_TRITON__TRANSPORT=grpc|shm picks how inputs reach Triton.
    """
    from sluicegate.workers.config import WorkerSettings
    from sluicegate.workers.engine import Worker

    from .backends import make_backend

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = WorkerSettings(model=model, pool=pool)

    @contextlib.asynccontextmanager
    async def worker() -> AsyncIterator[Worker]:
        backend = make_backend(settings)
        try:
            yield Worker(settings=settings, backend=backend)
        finally:
            await backend.close()

    # From OTEL_*; off unless they say where to send.
    telemetry = start_telemetry(f"sg-worker-{model}")
    try:
        serve_until_signalled(worker, ready_file)
    finally:
        telemetry.shutdown()


@serve_app.command()
def router(ready_file: ReadyFile = None) -> None:
    """Run the ingress router: sg.requests -> validate, mask, quota, route -> sg.work.*."""
    from sluicegate.streams.router import Router, RouterSettings

    settings = RouterSettings()
    telemetry = start_telemetry("sg-router")  # from OTEL_*; off unless they say where to send
    try:
        serve_until_signalled(lambda: contextlib.nullcontext(Router(settings=settings)), ready_file)
    finally:
        telemetry.shutdown()


@serve_app.command()
def telemetry(ready_file: ReadyFile = None) -> None:
    """Run the telemetry rollups: sg.telemetry -> windows -> sg.telemetry.rollup, /metrics."""
    from sluicegate.streams.telemetry import TelemetryRollups, TelemetrySettings

    settings = TelemetrySettings()
    serve_until_signalled(
        lambda: contextlib.nullcontext(TelemetryRollups(settings=settings)), ready_file
    )
