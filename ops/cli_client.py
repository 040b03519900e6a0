"""`submit`, `cancel`, `trace`, `top`: a client's commands (top level)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sluicegate.schemas.models import ImageInput, InferenceRequest, InferenceResult

from .cli_common import console, fail, start_telemetry
from .cli_route import control_topic
from .stack.stack import LocalStack, StackSettings

client_app = typer.Typer()


@client_app.command()
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
    from sluicegate.runtime.kafka import KafkaAuthorizationError
    from sluicegate.streams.client import Client, ClientSettings, ResultTimeout

    images = []
    for path in image or []:
        if not path.is_file():
            raise fail(f"image {path} does not exist")
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
        raise fail(str(exc)) from None

    async def go() -> InferenceResult | None:
        async with Client(settings=ClientSettings()) as client:
            if not wait:
                await client.send(request)
                return None
            return await client.submit(request, timeout=timeout)

    telemetry = start_telemetry("sg-client")  # from OTEL_*; off unless they say where to send
    try:
        result = asyncio.run(go())
    except (ResultTimeout, KafkaAuthorizationError) as exc:
        raise fail(str(exc)) from None
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


@client_app.command()
def cancel(request_id: Annotated[str, typer.Argument(help="The request to cancel.")]) -> None:
    """Cancel a request: routers and workers answer it `rejected: cancelled` if not yet run."""
    from sluicegate.runtime.kafka import KafkaAuthorizationError
    from sluicegate.streams.control import publish_cancel

    kafka, topic = control_topic()
    try:
        asyncio.run(publish_cancel(kafka, topic, request_id))
    except KafkaAuthorizationError as exc:
        raise fail(str(exc)) from None
    console.print(f"cancel for {request_id} published on {topic}")


@client_app.command()
def trace(
    request_id: Annotated[str, typer.Argument(help="The request's id (as `submit` printed it).")],
    file: Annotated[
        Path | None,
        typer.Option(help="Collector output (default: the local stack's traces.jsonl)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the spans to arrive.")] = 5.0,
) -> None:
    """Print a request's trace as a tree, with the batch trace it links to."""
    from .traceview import load_spans, render, request_traces

    path = file or LocalStack(StackSettings()).collector.config.traces_file
    deadline = time.monotonic() + wait
    while True:
        traces = request_traces(load_spans(path), request_id)
        if traces or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not traces:
        Console(stderr=True).print(
            f"[red]error:[/] no spans of request {request_id} in {path}; was the stack started "
            "with `sluicegate up --observability` (and the client run with OTEL_* set)?"
        )
        raise typer.Exit(code=1)
    Console().print(render(traces, request_id))


@client_app.command()
def top(
    window: Annotated[int, typer.Option(help="Window to show: 10 or 60 seconds.")] = 10,
) -> None:
    """A live view of the telemetry rollups (Ctrl-C quits)."""
    from .top import run_top

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_top(window_s=window))
