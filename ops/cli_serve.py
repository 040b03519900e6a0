"""`worker`, `router`, `telemetry`: run one service in the foreground (top level)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli_common import start_telemetry

if TYPE_CHECKING:
    from sluicegate.workers.config import WorkerSettings
from .serve import serve_until_signalled

serve_app = typer.Typer()

ReadyFile = Annotated[
    Path | None, typer.Option(help="Touched once the process has joined its consumer group.")
]
HeartbeatFile = Annotated[
    Path | None,
    typer.Option(help="Touched every 5 s while the event loop runs (for a liveness probe)."),
]


@serve_app.command()
def worker(
    model: Annotated[str, typer.Option(help="Model to serve: text-embed, ocr or doc-match.")],
    pool: Annotated[str, typer.Option(help="Pool whose work topic to read.")] = "cpu",
    ready_file: Annotated[
        Path | None, typer.Option(help="Touched once the worker has joined its group.")
    ] = None,
    heartbeat_file: HeartbeatFile = None,
) -> None:
    """Serve one model: read sg.work.<model>.<pool>, batch, call Triton, write results.

    Started while Triton is down (or still loading the model), the worker waits
    for it with backoff instead of exiting; with --ready-file, the file
    `<ready-file minus suffix>.waiting` says so meanwhile (`sluicegate status`
    shows waiting-for-triton).

    SLUICEGATE_BACKEND=onnxruntime runs the model in this process instead of
    Triton; SLUICEGATE_BACKEND=simulated against a modelled H100/A100
    (SLUICEGATE_SIMULATED__DEVICE, __DEVICE_FILE: docs/scaling.md);
    SLUICEGATE_TRITON__TRANSPORT=grpc|shm picks how inputs reach Triton.
    """
    from sluicegate.workers.config import WorkerSettings
    from sluicegate.workers.engine import Worker
    from sluicegate.workers.readiness import wait_for_backend

    from .backends import make_backend

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = WorkerSettings(model=model, pool=pool)

    @contextlib.asynccontextmanager
    async def worker() -> AsyncIterator[Worker]:
        backend = make_backend(settings)
        waiting = None if ready_file is None else ready_file.with_suffix(".waiting")
        try:
            await wait_for_backend(
                backend, model, on_waiting=lambda n, why: _waiting(waiting, settings, n, why)
            )
            if waiting is not None:
                waiting.unlink(missing_ok=True)
            yield Worker(settings=settings, backend=backend)
        finally:
            await backend.close()

    # From OTEL_*; off unless they say where to send.
    telemetry = start_telemetry(f"sg-worker-{model}")
    try:
        serve_until_signalled(worker, ready_file, heartbeat_file)
    finally:
        telemetry.shutdown()


def _waiting(path: Path | None, settings: WorkerSettings, attempt: int, reason: str) -> None:
    """Record that the worker waits for its backend (read by `sluicegate status`)."""
    if path is None:
        return
    target = settings.triton.url if settings.backend == "triton" else settings.backend
    state: dict[str, object] = {"state": f"waiting-for-{settings.backend}", "backend": target}
    state |= {"attempt": attempt, "reason": reason[:300]}
    path.write_text(json.dumps(state) + "\n")


@serve_app.command()
def router(ready_file: ReadyFile = None, heartbeat_file: HeartbeatFile = None) -> None:
    """Run the ingress router: sg.requests -> validate, mask, quota, route -> sg.work.*."""
    from sluicegate.streams.router import Router, RouterSettings

    settings = RouterSettings()
    telemetry = start_telemetry("sg-router")  # from OTEL_*; off unless they say where to send
    try:
        serve_until_signalled(
            lambda: contextlib.nullcontext(Router(settings=settings)), ready_file, heartbeat_file
        )
    finally:
        telemetry.shutdown()


@serve_app.command()
def telemetry(ready_file: ReadyFile = None, heartbeat_file: HeartbeatFile = None) -> None:
    """Run the telemetry rollups: sg.telemetry -> windows -> sg.telemetry.rollup, /metrics."""
    from sluicegate.streams.telemetry import TelemetryRollups, TelemetrySettings

    settings = TelemetrySettings()
    serve_until_signalled(
        lambda: contextlib.nullcontext(TelemetryRollups(settings=settings)),
        ready_file,
        heartbeat_file,
    )
