"""Trace context over Kafka headers and the worker's span structure (in-memory SDK)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sluicegate.runtime import tracing
from sluicegate.runtime.records import RecordData
from sluicegate.schemas.codec import header, headers
from sluicegate.schemas.cost import Cost
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status, Timings
from sluicegate.workers.admission import Admitted
from sluicegate.workers.backends.base import ModelInputs
from sluicegate.workers.tracing import WorkerObserver, grpc_client_span

TOPIC = "sg.work.text-embed.cpu"
SECRET = "the quarterly numbers are confidential"


@pytest.fixture
def sdk() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_headers_round_trip_the_w3c_context(
    sdk: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = sdk
    tracer = tracing.get_tracer(provider)
    with tracer.start_as_current_span("caller") as span:
        hdrs = tracing.inject(headers())
        hdrs = tracing.inject(hdrs)  # injecting twice replaces, never duplicates
    assert [k for k, _ in hdrs].count("traceparent") == 1
    assert header(hdrs, "sg-schema") is not None
    extracted = trace.get_current_span(tracing.extract(hdrs)).get_span_context()
    assert extracted.trace_id == span.get_span_context().trace_id
    assert extracted.span_id == span.get_span_context().span_id
    assert extracted.is_remote


def test_tracing_off_adds_no_headers_and_extracts_nothing() -> None:
    hdrs = tracing.inject(headers())  # no SDK provider installed in the test process
    assert hdrs == headers()
    ctx = trace.get_current_span(tracing.extract(hdrs)).get_span_context()
    assert not ctx.is_valid
    with tracing.producer_span(tracing.get_tracer(), "sg.requests") as span:
        assert not span.is_recording()


def test_producer_and_batch_spans_follow_messaging_semconv(
    sdk: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = sdk
    tracer = tracing.get_tracer(provider)
    contexts = []
    for i in range(3):
        with tracing.producer_span(tracer, "sg.requests", key=b"k", request_id=f"r{i}"):
            contexts.append(tracing.extract(tracing.inject([])))
    with (
        tracer.start_as_current_span("unrelated"),
        tracing.process_span(
            tracer, TOPIC, links=[tracing.link_to(c) for c in contexts], batch_size=3
        ),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send = spans["send sg.requests"]
    assert send.kind is SpanKind.PRODUCER
    assert send.attributes is not None
    assert send.attributes["messaging.system"] == "kafka"
    assert send.attributes["messaging.destination.name"] == "sg.requests"
    assert send.attributes["messaging.operation.type"] == "send"
    batch = spans[f"process {TOPIC}"]
    assert batch.kind is SpanKind.CONSUMER
    assert batch.parent is None, "a batch span is a root even under another current span"
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 3
    linked = {link.context.trace_id for link in batch.links}
    assert linked == {trace.get_current_span(c).get_span_context().trace_id for c in contexts}


def test_worker_observer_builds_one_trace_per_request_and_a_linked_batch(
    sdk: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = sdk
    client = tracing.get_tracer(provider)
    obs = WorkerObserver(
        model="text-embed", pool="cpu", topic=TOPIC, budget=1000, tracer_provider=provider
    )
    requests, spans = [], []
    for i in range(2):
        request = InferenceRequest(request_id=f"req{i}", model="text-embed", texts=[SECRET])
        with tracing.producer_span(client, TOPIC, request_id=request.request_id):
            hdrs = tracing.inject(headers())
        rec = RecordData(TOPIC, 0, i, request.request_id.encode(), b"", hdrs)
        admitted = Admitted(
            request=request,
            inputs=ModelInputs(texts=(SECRET,)),
            cost=Cost(tokens=7, pixels=0, units=7),
        )
        requests.append(request)
        spans.append(obs.request_started(rec, admitted))
    batch = obs.batch_started(spans, [1.5, 2.5])
    with (
        obs.backend_call(batch),
        grpc_client_span(client, url="127.0.0.1:8001", model="text-embed", batch_size=2) as md,
    ):
        assert md["traceparent"].split("-")[1] == format(batch.get_span_context().trace_id, "032x")
    obs.batch_finished(
        batch, size=2, tokens=14, pixels=0, padded_cost=14, padding=0.0, backend_s=0.1, errors=[]
    )
    for request, span in zip(requests, spans, strict=True):
        result = InferenceResult(
            request_id=request.request_id,
            status=Status.OK,
            model="text-embed",
            outputs={"text": SECRET},
            timings=Timings(queue_ms=1.0, compute_ms=2.0, batch_size=2),
        )
        with obs.result_send(span, "sg.results", result) as out:
            assert header(out, "traceparent") is not None
        obs.answered(span, result, process_s=0.01)

    finished: list[ReadableSpan] = list(exporter.get_finished_spans())
    by_trace: dict[int, list[ReadableSpan]] = {}
    for s in finished:
        by_trace.setdefault(s.context.trace_id, []).append(s)
    batch_span = next(
        s for s in finished if s.attributes and "messaging.batch.message_count" in s.attributes
    )
    grpc = next(s for s in finished if s.kind is SpanKind.CLIENT)
    assert grpc.parent is not None and grpc.parent.span_id == batch_span.context.span_id
    assert grpc.attributes is not None and grpc.attributes["rpc.system.name"] == "grpc"
    for request in requests:
        (tid,) = {
            s.context.trace_id
            for s in finished
            if s.attributes and s.attributes.get(tracing.REQUEST_ID) == request.request_id
        }
        names = sorted((s.name, s.kind.name) for s in by_trace[tid])
        assert names == [
            (f"process {TOPIC}", "CONSUMER"),
            ("send sg.results", "PRODUCER"),
            (f"send {TOPIC}", "PRODUCER"),
        ]
        assert any(link.context.trace_id == tid for link in batch_span.links)
        process = next(s for s in by_trace[tid] if s.kind is SpanKind.CONSUMER)
        assert [link.context.span_id for link in process.links] == [batch_span.context.span_id]
        assert process.attributes is not None and process.attributes["sg.cost"] == 7
    for s in finished:
        assert SECRET not in repr(dict(s.attributes or {})), s.name


def test_a_refused_record_gets_a_failed_span_in_its_producers_trace(
    sdk: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = sdk
    obs = WorkerObserver(
        model="text-embed", pool="cpu", topic=TOPIC, budget=1000, tracer_provider=provider
    )
    with tracing.producer_span(tracing.get_tracer(provider), TOPIC) as send:
        hdrs = tracing.inject(headers())
    span = obs.refused(RecordData(TOPIC, 2, 9, None, b"\xc1", hdrs), None, "decode_error")
    obs.answered(span, None, process_s=0.0)  # a DLQ record only: no result to send
    (refused,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert refused.context.trace_id == send.get_span_context().trace_id
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes is not None and refused.attributes["error.type"] == "decode_error"
    assert refused.attributes["messaging.kafka.offset"] == 9


def test_with_tracing_off_the_worker_hooks_are_inert() -> None:
    obs = WorkerObserver(model="text-embed", pool="cpu", topic=TOPIC, budget=1000)
    assert not obs.metrics.enabled
    rec = RecordData(TOPIC, 0, 0, None, b"", headers())
    admitted = Admitted(
        request=InferenceRequest(request_id="r", model="text-embed", texts=["x"]),
        inputs=ModelInputs(texts=("x",)),
        cost=Cost(tokens=1, pixels=0, units=1),
    )
    span = obs.request_started(rec, admitted)
    assert not span.is_recording() and not span.get_span_context().is_valid
    assert not obs.batch_started([span], [0.0]).is_recording()
    with grpc_client_span(tracing.get_tracer(), url="h:1", model="m", batch_size=1) as md:
        assert md == {}
