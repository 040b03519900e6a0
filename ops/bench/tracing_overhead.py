"""What the tracing hooks cost per request: absent, present with tracing off, and on.

Each variant runs the same per-request work a worker does anyway (decode the
request record, encode its result) plus, for "off" and "on", every tracing
and metrics hook a request passes through (client send span + inject, the
worker's request span, its share of a batch span and the Triton CLIENT span,
the result's send span, the answer). "off" uses OpenTelemetry's no-op API, as
a process with no `OTEL_*` exporter configured does; "on" uses the SDK with
every span sampled, exported in batches to an exporter that drops them.
Variants interleave over several rounds and report the median, so a busy
machine skews all of them alike; compare the ratios, not the microseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import TracerProvider as ApiTracerProvider

from sluicegate.runtime import tracing
from sluicegate.runtime.records import RecordData
from sluicegate.schemas.codec import decode_request, encode, headers
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status, Timings
from sluicegate.workers.admission import Admitted
from sluicegate.workers.backends.base import ModelInputs
from sluicegate.workers.tracing import WorkerObserver, grpc_client_span

BATCH = 8
TOPIC = "sg.work.text-embed.cpu"


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _requests(n: int) -> list[InferenceRequest]:
    return [
        InferenceRequest(request_id=f"bench{i:06d}", model="text-embed", texts=["a short text"])
        for i in range(n)
    ]


def _run(
    requests: list[InferenceRequest],
    *,
    hooks: bool,
    tracer_provider: ApiTracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> float:
    """Seconds for all `requests`, in batches of BATCH."""
    client = tracing.get_tracer(tracer_provider)
    obs = WorkerObserver(
        model="text-embed",
        pool="cpu",
        topic=TOPIC,
        budget=1024,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    cost = Cost(tokens=5, pixels=0, units=5)
    started = time.perf_counter()
    for first in range(0, len(requests), BATCH):
        chunk = requests[first : first + BATCH]
        recs, spans = [], []
        for off, req in enumerate(chunk, start=first):
            if hooks:
                with tracing.producer_span(client, TOPIC, request_id=req.request_id):
                    hdrs = tracing.inject(headers())
            else:
                hdrs = headers()
            rec = RecordData(TOPIC, 0, off, req.request_id.encode(), encode(req), hdrs)
            decoded = decode_request(rec.value, rec.headers)
            admitted = Admitted(request=decoded, inputs=ModelInputs(texts=("x",)), cost=cost)
            recs.append(rec)
            if hooks:
                spans.append(obs.request_started(rec, admitted))
        if hooks:
            batch = obs.batch_started(spans, [1.0] * len(spans))
            with (
                obs.backend_call(batch),
                grpc_client_span(
                    client, url="127.0.0.1:8001", model="text-embed", batch_size=BATCH
                ),
            ):
                pass
            obs.batch_finished(
                batch, size=BATCH, tokens=40, pixels=0, padded_cost=40, padding=0.0,
                backend_s=0.01, errors=[],
            )  # fmt: skip
        for i in range(len(recs)):
            result = InferenceResult(
                request_id=chunk[i].request_id,
                status=Status.OK,
                model="text-embed",
                outputs={"tokens": 5},
                timings=Timings(queue_ms=1.0, compute_ms=2.0, batch_size=BATCH),
            )
            if hooks:
                with obs.result_send(spans[i], "sg.results", result) as out:
                    encode(result)
                obs.answered(spans[i], result, process_s=0.01)
            else:
                out = headers()
                encode(result)
            del out
    return time.perf_counter() - started


def measure(*, iterations: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """Median microseconds per request for each variant, and the ratios to the baseline."""
    requests = _requests(iterations)
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=100_000))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    variants: dict[str, Callable[[], float]] = {
        "baseline": lambda: _run(requests, hooks=False),
        "off": lambda: _run(requests, hooks=True),
        "on": lambda: _run(requests, hooks=True, tracer_provider=tp, meter_provider=mp),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    _run(requests[: BATCH * 10], hooks=True)  # warm imports and caches
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(run() / iterations * 1e6)
    tp.shutdown()
    mp.shutdown()
    us = {name: statistics.median(v) for name, v in samples.items()}
    return {
        "iterations": iterations,
        "baseline_us_per_request": round(us["baseline"], 2),
        "off_us_per_request": round(us["off"], 2),
        "on_us_per_request": round(us["on"], 2),
        "off_over_baseline": round(us["off"] / us["baseline"], 3),
        "on_over_baseline": round(us["on"] / us["baseline"], 3),
        "off_added_us_per_request": round(us["off"] - us["baseline"], 2),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
