"""`submit`, `cancel`, `trace`, `top`: a client's commands (top level)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from sluicegate.schemas.models import ImageInput, InferenceRequest

from .cli_common import console, fail, start_telemetry
from .cli_route import control_topic
from .stack.stack import LocalStack, StackSettings

if TYPE_CHECKING:
    from sluicegate.streams.client import ClientSettings

client_app = typer.Typer()


@client_app.command()
def submit(
    model: Annotated[
        str | None, typer.Option(help="text-embed, ocr or doc-match (not with --requests).")
    ] = None,
    image: Annotated[list[Path] | None, typer.Option(help="Image file (repeatable).")] = None,
    text: Annotated[list[str] | None, typer.Option(help="Text input (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one compact JSON document per line: each result with --wait, else "
            '{"request_id", "status": "sent", "topic"} per request sent.',
        ),
    ] = False,
    requests: Annotated[
        Path | None,
        typer.Option(
            help="JSON Lines file of InferenceRequest documents ('-': stdin), sent with at most "
            "--max-in-flight unanswered; with --wait the results print as they arrive."
        ),
    ] = None,
    max_in_flight: Annotated[int, typer.Option(min=1, help="With --requests.")] = 64,
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
    """Produce requests to Kafka (and with --wait, print their results).

    Exit status with --wait: 0 when every result is `ok`, 2 when any is not.
    """
    from sluicegate.runtime.kafka import KafkaAuthorizationError
    from sluicegate.streams.client import ClientSettings, ResultTimeout

    if requests is not None:
        if model is not None or image or text or request_id is not None:
            raise fail("--requests reads whole requests; leave out --model/--image/--text")
        batch = _read_requests(requests)
    elif model is None:
        raise fail("name a --model (text-embed, ocr, doc-match), or give --requests FILE")
    else:
        batch = [_one_request(model, image, text, request_id, priority, deadline_s, by_reference)]
    telemetry = start_telemetry("sg-client")  # from OTEL_*; off unless they say where to send
    try:
        settings = ClientSettings()
        answers = asyncio.run(_send(settings, batch, wait, timeout, max_in_flight, as_json))
    except (ResultTimeout, KafkaAuthorizationError) as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        telemetry.shutdown()
    if wait and any(status != "ok" for status in answers):
        raise typer.Exit(code=2)


def _one_request(
    model: str,
    image: list[Path] | None,
    text: list[str] | None,
    request_id: str | None,
    priority: int,
    deadline_s: float | None,
    by_reference: bool,
) -> InferenceRequest:
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
        return InferenceRequest(
            request_id=request_id or uuid.uuid4().hex,
            model=model,
            texts=list(text or []),
            images=images,
            priority=priority,
            deadline_ms=deadline,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None


def _read_requests(path: Path) -> list[InferenceRequest]:
    """Every line of a JSON Lines file as a request; a bad line exits naming its number."""
    try:
        lines = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    out = []
    for number, line in enumerate(lines.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(InferenceRequest.model_validate_json(line))
        except ValueError as exc:
            raise fail(f"{path}:{number}: not an InferenceRequest: {exc}") from None
    if not out:
        raise fail(f"{path} holds no requests (one JSON document per line)")
    return out


async def _send(
    settings: ClientSettings,
    batch: list[InferenceRequest],
    wait: bool,
    timeout: float,
    max_in_flight: int,
    as_json: bool,
) -> list[str]:
    """Send `batch` and print as they happen; returns the statuses printed."""
    from sluicegate.streams.client import Client

    statuses = []
    async with Client(settings=settings) as client:
        if not wait:
            for request in batch:
                sent = await client.send(request)
                topic = client.topic_for(sent)
                if as_json:
                    _line({"request_id": sent.request_id, "status": "sent", "topic": topic})
                else:
                    console.print(f"sent {sent.request_id} to {topic}")
            return ["sent"] * len(batch)
        async for result in client.stream(batch, max_in_flight=max_in_flight, timeout=timeout):
            statuses.append(result.status.value)
            if as_json:
                sys.stdout.write(result.model_dump_json(exclude_none=True) + "\n")
                sys.stdout.flush()
            else:
                Console().print(result.model_dump(mode="json", exclude_none=True))
    return statuses


def _line(document: dict[str, str]) -> None:
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()


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
