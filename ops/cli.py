"""The `sluicegate` command line: the composition root of the project."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from sluicegate.schemas.models import ImageInput, InferenceRequest, InferenceResult, TelemetryEvent

from .cli_bench import bench
from .cli_models import register_model_commands
from .cli_observability import register as register_observability
from .cli_streams import register as register_streams
from .cli_topics import topics_app
from .stack.process import StackError
from .stack.stack import LocalStack, StackSettings

app = typer.Typer(
    name="sluicegate",
    help="Streaming inference over Kafka: budget-batched requests into Triton, one result each.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Build and inspect the Triton model repository.", no_args_is_help=True
)
schema_app = typer.Typer(
    help="The wire format, for producers in any language.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(schema_app, name="schema")
app.command()(bench)
app.add_typer(topics_app, name="topics")
register_model_commands(models_app)
console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(code=1)


# -- the local stack ---------------------------------------------------------


@app.command()
def up(
    model: Annotated[
        list[str] | None, typer.Option(help="Serve only these models (repeatable).")
    ] = None,
    observability: Annotated[
        bool,
        typer.Option(help="Also run an OpenTelemetry Collector; trace Triton and the workers."),
    ] = False,
) -> None:
    """Start Kafka, Triton and one worker per model in the background (state in .state/)."""
    settings = StackSettings()
    if observability:
        settings = settings.model_copy(update={"observability": True})
    stack = LocalStack(settings, progress=console.log)
    try:
        stack.up(models=model)
    except StackError as exc:
        raise _fail(str(exc)) from None
    _print_status(stack)
    console.print("stack is up: `sluicegate submit ...`, `sluicegate status`, `sluicegate down`")


@app.command()
def status() -> None:
    """Show each part of the local stack and its health (exit 1 if any is down)."""
    stack = LocalStack(StackSettings())
    if not _print_status(stack):
        raise typer.Exit(code=1)


def _print_status(stack: LocalStack) -> bool:
    table = Table(title=f"sluicegate local stack ({stack.state_dir})")
    for col in ("part", "pid", "health", "where"):
        table.add_column(col)
    parts = stack.status()
    for part in parts:
        health = "[green]ready[/]" if part.healthy else "[red]down[/]"
        table.add_row(part.name, str(part.pid or "-"), health, part.detail)
    Console().print(table)
    return all(part.healthy for part in parts)


@app.command()
def down() -> None:
    """Stop every part of the local stack (workers drain and commit first)."""
    stopped = LocalStack(StackSettings(), progress=console.log).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def broker() -> None:
    """Run only the local Kafka broker in the foreground until Ctrl-C."""
    stack = LocalStack(StackSettings(), progress=console.log)
    try:
        stack.kafka.start(progress=console.log)
    except StackError as exc:
        raise _fail(str(exc)) from None
    console.print(f"Kafka ready on {stack.kafka.bootstrap_servers}; Ctrl-C stops it")
    _wait_for_signal()
    stack.kafka.stop()


@app.command()
def triton(
    repository: Annotated[
        Path | None,
        typer.Option(help="Serve this prebuilt repository (manifest checked) instead of building."),
    ] = None,
    model_config_name: Annotated[
        str | None, typer.Option(help="Load configs/<name>.pbtxt where a model has one.")
    ] = None,
) -> None:
    """Build the model repository and run only Triton in the foreground until Ctrl-C."""
    from sluicegate.inference.manifest import ManifestError

    from .models.build import build_repository, verify_repository
    from .stack.triton import LocalTriton

    stack = LocalStack(StackSettings(), progress=console.log)
    server = stack.triton
    extra = (f"--model-config-name={model_config_name}",) if model_config_name else ()
    if repository is not None or extra:
        config = replace(
            server.config, repository=(repository or stack.repository).absolute(), extra_args=extra
        )
        server = LocalTriton(config)
    try:
        if repository is None:
            build_repository(stack.repository, progress=console.log)
        verify_repository(server.config.repository)
        server.start()
    except (StackError, ManifestError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"Triton ready on {server.grpc_url} (gRPC); Ctrl-C stops it")
    _wait_for_signal()
    server.stop()


def _wait_for_signal() -> None:
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    while not received:
        time.sleep(0.2)


@models_app.command("build")
def models_build(
    dest: Annotated[
        Path | None, typer.Option(help="Repository dir (default .cache/model-repository).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="cpu, a100 or mi200 (repeatable: configs/<target>.pbtxt for each, "
            "served with `--model-config-name <target>`; the first is the default)."
        ),
    ] = None,
    variants: Annotated[
        Path, typer.Option(help="Where `models variants` wrote the fp16/int8/bf16 ONNX files.")
    ] = Path(".cache/model-variants"),
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-hash every artifact against the manifest.")
    ] = False,
) -> None:
    """Generate the Triton model repository (default: the cpu target the local stack runs)."""
    from sluicegate.inference.manifest import ManifestError

    from .models.build import build_repository, verify_repository

    path = dest or LocalStack(StackSettings()).repository
    try:
        path = build_repository(
            path, targets=target or ["cpu"], variants=variants, progress=console.log
        )
        if verify:
            console.log(f"manifest verified: {', '.join(verify_repository(path))}")
    except (StackError, ManifestError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"model repository ready: {path}")


# -- the worker ---------------------------------------------------------------


@app.command()
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
    from .cli_observability import start_telemetry as setup
    from .serve import serve_until_signalled

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

    telemetry = setup(f"sg-worker-{model}")  # from OTEL_*; off unless they say where to send
    try:
        serve_until_signalled(worker, ready_file)
    finally:
        telemetry.shutdown()


# -- clients ------------------------------------------------------------------


@app.command()
def submit(
    model: Annotated[str, typer.Option(help="text-embed, ocr or doc-match.")],
    image: Annotated[list[Path] | None, typer.Option(help="Image file (repeatable).")] = None,
    text: Annotated[list[str] | None, typer.Option(help="Text input (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 120.0,
    request_id: Annotated[str | None, typer.Option(help="Default: a random id.")] = None,
    priority: Annotated[int, typer.Option(min=0, max=9)] = 0,
    deadline_s: Annotated[
        float | None, typer.Option(help="Answer `expired` if not run within this many seconds.")
    ] = None,
    by_reference: Annotated[
        bool, typer.Option(help="Send images as file:// + sha256 instead of inline.")
    ] = False,
) -> None:
    """Produce one request to Kafka (and with --wait, print its result)."""
    from sluicegate.streams.client import Client, ClientSettings, ResultTimeout

    images = []
    for path in image or []:
        if not path.is_file():
            raise _fail(f"image {path} does not exist")
        if by_reference:
            images.append(ImageInput.from_file(str(path)))
        else:
            mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
            images.append(ImageInput.inline(path.read_bytes(), mime))  # type: ignore[arg-type]
    deadline = None if deadline_s is None else time.time_ns() // 1_000_000 + int(deadline_s * 1000)
    try:
        request = InferenceRequest(
            request_id=request_id or uuid.uuid4().hex,
            model=model,
            texts=list(text or []),
            images=images,
            priority=priority,
            deadline_ms=deadline,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None

    async def go() -> InferenceResult | None:
        async with Client(settings=ClientSettings()) as client:
            if not wait:
                await client.send(request)
                return None
            return await client.submit(request, timeout=timeout)

    from .cli_observability import start_telemetry as setup

    telemetry = setup("sg-client")  # from OTEL_*; off unless they say where to send
    try:
        result = asyncio.run(go())
    except ResultTimeout as exc:
        raise _fail(str(exc)) from None
    finally:
        telemetry.shutdown()
    if result is None:
        console.print(f"sent {request.request_id}")
        return
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        Console().print(result.model_dump(mode="json"))
    if result.status.value != "ok":
        raise typer.Exit(code=2)


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


@app.command()
def demo(
    count: Annotated[int, typer.Option(help="Requests in the mixed stream.")] = 36,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 300.0,
    observability: Annotated[
        bool, typer.Option(help="Trace everything into a local collector (`sluicegate trace`).")
    ] = False,
) -> None:
    """Bring the stack up, run a mixed stream of OCR / embedding / doc-match requests, tear down."""
    from .cli_observability import start_telemetry as setup
    from .demo import run_demo
    from .stack.collector import otel_env

    settings = StackSettings().model_copy(update={"observability": observability})
    collector = LocalStack(settings).collector.config
    env = otel_env(collector, service="sg-client", prometheus_port=None) if observability else {}
    telemetry = setup("sg-client", env=env if observability else None)
    try:
        code = run_demo(settings, count=count, timeout=timeout)
    except StackError as exc:
        raise _fail(str(exc)) from None
    finally:
        telemetry.shutdown()
    if observability:
        console.print(f"traces: {collector.traces_file}; read one with `sluicegate trace ID`")
    raise typer.Exit(code=code)


register_observability(app)
register_streams(app)
from .cli_chaos import chaos  # noqa: E402  (registered after the core commands)

app.command()(chaos)


def main() -> None:
    app()
