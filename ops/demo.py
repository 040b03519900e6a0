"""`make demo` / `sluicegate demo`: a mixed stream through the real local stack.

Brings the stack up (unless it already runs), submits OCR images of several
sizes, texts of several lengths and doc-match pairs through Kafka, shows
progress while results arrive, prints what came back against the truth and
a latency / batch-size summary, and shuts down what it started. Exit status
1 if any request got no result.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from sluicegate.schemas.models import ImageInput, InferenceRequest, InferenceResult, Status
from sluicegate.streams.client import Client, ClientSettings

from .samples import Sample, cer, mixed_samples
from .stack.stack import LocalStack, StackSettings


def _request(sample: Sample, run: str, i: int) -> InferenceRequest:
    texts = (
        [sample.truth] if sample.kind == "text-embed" else [sample.query] if sample.query else []
    )
    images = [ImageInput.inline(sample.image)] if sample.image else []
    return InferenceRequest(
        request_id=f"demo-{run}-{i:04d}", model=sample.kind, texts=texts, images=images
    )


async def _submit_all(
    settings: StackSettings, samples: list[Sample], console: Console, timeout: float
) -> tuple[list[InferenceResult | None], float]:
    run = uuid.uuid4().hex[:8]
    requests = [_request(s, run, i) for i, s in enumerate(samples)]
    client_settings = ClientSettings(kafka=settings.kafka(), topics=settings.topics)
    async with Client(settings=client_settings) as client:
        futures = [client.expect(r.request_id) for r in requests]
        started = time.monotonic()
        await asyncio.gather(*(client.send(r) for r in requests))
        results: list[InferenceResult | None] = [None] * len(requests)
        columns = (
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("waiting for results", total=len(requests))
            pending = {asyncio.ensure_future(f): i for i, f in enumerate(futures)}
            late = set(pending)
            deadline = time.monotonic() + timeout
            while late and time.monotonic() < deadline:
                done, late = await asyncio.wait(
                    late, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED
                )
                for fut in done:
                    results[pending[fut]] = fut.result()
                progress.update(task, completed=sum(r is not None for r in results))
            for fut in late:
                fut.cancel()
        return results, time.monotonic() - started


def _table(samples: list[Sample], results: list[InferenceResult | None]) -> Table:
    table = Table(title="results", show_lines=False)
    for col in ("id", "model", "status", "truth | query", "answer", "score", "batch", "ms"):
        wide = col in ("truth | query", "answer")
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=38 if wide else None)
    for sample, res in zip(samples, results, strict=True):
        if res is None:
            table.add_row("-", sample.kind, "[red]no result[/]", sample.truth, "", "", "", "")
            continue
        answer, score = "", ""
        if res.status is Status.OK and sample.kind == "ocr":
            answer = res.outputs["text"].replace("\n", " ")
            score = f"CER {cer(sample.truth, answer):.1%}"
        elif res.status is Status.OK and sample.kind == "doc-match":
            answer = res.outputs["ocr_text"].replace("\n", " ")
            score = (
                f"sim {res.outputs['similarity']:.2f} ({'match' if sample.matching else 'other'})"
            )
        elif res.status is Status.OK:
            answer = f"{len(res.outputs['embedding'])}-d embedding"
            score = f"{res.outputs['tokens']} tokens"
        elif res.error is not None:
            answer = f"{res.error.code}: {res.error.message}"
        status = "[green]ok[/]" if res.status is Status.OK else f"[red]{res.status.value}[/]"
        truth = sample.truth if sample.kind != "doc-match" else f"{sample.truth} | {sample.query}"
        table.add_row(
            res.request_id[-4:],
            sample.kind,
            status,
            truth[:60],
            answer[:60],
            score,
            str(res.timings.batch_size),
            f"{res.timings.total_ms or 0:.0f}",
        )
    return table


def _summary(samples: list[Sample], results: list[InferenceResult | None], wall: float) -> Table:
    table = Table(title=f"summary ({len(samples)} requests in {wall:.1f} s)")
    for col in ("model", "results", "ok", "p50 ms", "p95 ms", "mean batch", "accuracy"):
        table.add_column(col)
    for kind in ("ocr", "text-embed", "doc-match"):
        pairs = [(s, r) for s, r in zip(samples, results, strict=True) if s.kind == kind]
        got = [r for _, r in pairs if r is not None]
        ok = [(s, r) for s, r in pairs if r is not None and r.status is Status.OK]
        lat = sorted(r.timings.total_ms or 0.0 for _, r in ok)
        p50 = statistics.median(lat) if lat else 0.0
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0
        batch = statistics.mean(r.timings.batch_size for _, r in ok) if ok else 0.0
        accuracy = ""
        if kind == "ocr" and ok:
            refs = sum(len(s.truth) for s, _ in ok)
            errs = sum(
                cer(s.truth, r.outputs["text"].replace("\n", " ")) * len(s.truth) for s, r in ok
            )
            accuracy = f"CER {errs / refs:.2%}"
        elif kind == "doc-match" and ok:
            right = sum((r.outputs["similarity"] > 0.6) == s.matching for s, r in ok)
            accuracy = f"match/other split right {right}/{len(ok)}"
        table.add_row(
            kind,
            f"{len(got)}/{len(pairs)}",
            str(len(ok)),
            f"{p50:.0f}",
            f"{p95:.0f}",
            f"{batch:.1f}",
            accuracy,
        )
    return table


def run_demo(
    settings: StackSettings,
    *,
    count: int = 36,
    timeout: float = 300,
    console: Console | None = None,
) -> int:
    console = console or Console(width=max(140, Console().width))
    stack = LocalStack(settings, progress=lambda msg: console.log(msg))
    already = all(part.healthy for part in stack.status()) and stack.kafka.is_running()
    if not already:
        stack.up()
    try:
        samples = mixed_samples(count)
        console.log(f"submitting {len(samples)} requests through Kafka")
        results, wall = asyncio.run(_submit_all(settings, samples, console, timeout))
        console.print(_table(samples, results))
        console.print(_summary(samples, results, wall))
        missing = sum(r is None for r in results)
        if missing:
            console.print(f"[red]{missing} request(s) got no result within {timeout:.0f} s[/]")
            return 1
        console.print("[green]every request got exactly one result[/]")
        return 0
    finally:
        if not already:
            console.log("stopping the stack")
            stack.down()
