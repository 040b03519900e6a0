"""W3C trace context over Kafka headers, and messaging spans named by the semconv.

The one tracing module that both `workers` and `streams` use (neither may
import the other). It needs only the OpenTelemetry *API*: with no SDK
installed (tracing off) every helper here returns a non-recording span or does
nothing, at the cost of an `isinstance` check (ops/bench/tracing_overhead.py).
Process wiring (providers, exporters, `OTEL_*` variables) lives in
`ops.telemetry`.

API, for a hop that consumes one topic and produces another (the ingress
router adds its span with these two or three lines)::

    from sluicegate.runtime import tracing

    # once, at start-up, after ops.telemetry.setup() (else it is a NoOpTracer);
    # components take `tracer_provider=None` and pass it here (tests pass an SDK one)
    tracer = tracing.get_tracer(tracer_provider)

    # per record
    parent = tracing.extract(record.headers)  # the client's `send` context
    with tracing.process_span(
        tracer, record.topic, parent=parent, record=record, request_id=request.request_id
    ):
        out = tracing.inject(headers())  # the work record's parent is this span
        await producer.send(work_topic, value, key=key, headers=out)

The worker's request span then becomes a child of the router's span, and the
end-to-end test (tests/integration/test_tracing_e2e.py: `request_spans`)
expects it once one line there names it.

- `inject(headers, context=None)` appends `traceparent` / `tracestate` to a
  Kafka header list (aiokafka's `list[tuple[str, bytes]]`) and returns it; it
  appends nothing when there is no valid span context (tracing off).
- `extract(headers)` returns the `Context` carried by a record's headers (an
  empty context when there is none).
- `producer_span(tracer, topic, ...)` is the `send <topic>` PRODUCER span,
  `process_span(tracer, topic, ...)` the `process <topic>` CONSUMER span (per
  record, or per batch with `links=` and `batch_size=`). Both set the
  messaging semconv attributes (`messaging.system=kafka`,
  `messaging.destination.name`, `messaging.operation.type` / `.name`, and the
  record's partition, offset and key when given).
- `REQUEST_ID` (`sg.request_id`) is the attribute `sluicegate trace` looks a
  request up by; set it (helpers take `request_id=`) on every span of a request.

Guarantee: no helper here reads or records a record's value. Span attributes
carry ids, topics, partitions, offsets, counts and costs only; never payload
bytes, prompts, OCR text or images.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NoOpTracer,
    ProxyTracer,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Tracer,
    TracerProvider,
)
from opentelemetry.util.types import AttributeValue

__all__ = [
    "GETTER",
    "REQUEST_ID",
    "SETTER",
    "HeaderGetter",
    "HeaderSetter",
    "enabled",
    "extract",
    "get_tracer",
    "inject",
    "link_to",
    "process_span",
    "producer_span",
]

TRACER_NAME = "sluicegate"
# Our own attribute: the request a span belongs to (never its content).
REQUEST_ID = "sg.request_id"
KAFKA = msg.MessagingSystemValues.KAFKA.value

Headers = Sequence[tuple[str, bytes]]


class HeaderGetter(Getter[Headers]):
    """Reads propagation fields from aiokafka's header list (last value wins)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = None
        for name, value in carrier or ():
            if name == key and value is not None:
                found = value
        return None if found is None else [found.decode("latin-1")]

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier or ()]


class HeaderSetter(Setter[MutableSequence[tuple[str, bytes]]]):
    """Writes propagation fields into aiokafka's header list, replacing an older value."""

    def set(self, carrier: MutableSequence[tuple[str, bytes]], key: str, value: str) -> None:
        carrier[:] = [(name, v) for name, v in carrier if name != key]
        carrier.append((key, value.encode("latin-1")))


GETTER = HeaderGetter()
SETTER = HeaderSetter()
# What a span helper returns with tracing off: no generator, no context switch.
_OFF: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)


class _Record(Protocol):
    """The fields of aiokafka's ConsumerRecord a span reads (never its value)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


def get_tracer(provider: TracerProvider | None = None) -> Tracer:
    """Our tracer from `provider`, else from the global provider.

    With no provider given and none installed yet this is a `NoOpTracer`, so
    tracing off costs one `isinstance` per hook: install the SDK
    (`ops.telemetry.setup`) before building clients and workers.
    """
    if provider is None and isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
        return NoOpTracer()
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


def enabled(tracer: Tracer) -> bool:
    """False when `tracer` can only make no-op spans."""
    return not isinstance(tracer, NoOpTracer | ProxyTracer)


def inject(
    headers: list[tuple[str, bytes]], context: Context | None = None
) -> list[tuple[str, bytes]]:
    """Append the W3C context of `context` (default: the current one) to `headers`."""
    if trace.get_current_span(context).get_span_context().is_valid:
        propagate.inject(headers, context=context, setter=SETTER)
    return headers


def extract(headers: Headers | None) -> Context:
    """The context a record's headers carry; an empty `Context` when they carry none.

    Records without a `traceparent` header skip the propagators (the common
    case with tracing off everywhere).
    """
    if not headers or not any(name == "traceparent" for name, _ in headers):
        return Context()
    return propagate.extract(list(headers), getter=GETTER)


def link_to(context: Context, **attributes: AttributeValue) -> Link | None:
    """A link to the span in `context`, or None when it holds no valid span."""
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return None
    return Link(span_context, attributes=attributes or None)


def _messaging(
    topic: str,
    operation: msg.MessagingOperationTypeValues,
    name: str,
    *,
    record: _Record | None,
    key: bytes | None,
    request_id: str | None,
    batch_size: int | None,
    extra: Mapping[str, AttributeValue] | None,
) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        msg.MESSAGING_SYSTEM: KAFKA,
        msg.MESSAGING_DESTINATION_NAME: topic,
        msg.MESSAGING_OPERATION_TYPE: operation.value,
        msg.MESSAGING_OPERATION_NAME: name,
    }
    if record is not None:
        attrs[msg.MESSAGING_DESTINATION_PARTITION_ID] = str(record.partition)
        attrs[msg.MESSAGING_KAFKA_OFFSET] = record.offset
        key = key if key is not None else record.key
    if key is not None:
        attrs[msg.MESSAGING_KAFKA_MESSAGE_KEY] = key.decode("utf-8", "replace")
    if request_id is not None:
        attrs[REQUEST_ID] = request_id
    if batch_size is not None:
        attrs[msg.MESSAGING_BATCH_MESSAGE_COUNT] = batch_size
    if extra:
        attrs.update(extra)
    return attrs


def producer_span(
    tracer: Tracer,
    topic: str,
    *,
    parent: Context | None = None,
    key: bytes | None = None,
    request_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    end_on_exit: bool = True,
) -> AbstractContextManager[Span]:
    """`send <topic>`, PRODUCER: wrap one produce and `inject()` inside it.

    A child of `parent` (default: the current context), so a client continues
    its caller's trace or starts a new one.
    """
    if not enabled(tracer):
        return _OFF
    attrs = _messaging(
        topic,
        msg.MessagingOperationTypeValues.SEND,
        "send",
        record=None,
        key=key,
        request_id=request_id,
        batch_size=None,
        extra=attributes,
    )
    return tracer.start_as_current_span(
        f"send {topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=attrs,
        end_on_exit=end_on_exit,
    )


def process_span(
    tracer: Tracer,
    topic: str,
    *,
    parent: Context | None = None,
    record: _Record | None = None,
    request_id: str | None = None,
    links: Sequence[Link | None] = (),
    batch_size: int | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    end_on_exit: bool = True,
) -> AbstractContextManager[Span]:
    """`process <topic>`, CONSUMER: our work on a record (or, with `links`, a batch).

    For one record pass `parent=extract(record.headers)`: the span joins the
    request's trace. For a batch pass no parent, one link per request (see
    `link_to`) and `batch_size`: the span starts its own trace that links to
    every request's (OTel messaging semconv for batch processing).
    With `end_on_exit=False` the span outlives the block (end it yourself);
    the block then only makes it current.
    """
    if not enabled(tracer):
        return _OFF
    attrs = _messaging(
        topic,
        msg.MessagingOperationTypeValues.PROCESS,
        "process",
        record=record,
        key=None,
        request_id=request_id,
        batch_size=batch_size,
        extra=attributes,
    )
    if parent is None and batch_size is not None:
        # A batch is a root: the task that runs it may have inherited the
        # previous batch's context, and must not nest under it.
        parent = Context()
    return tracer.start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attrs,
        links=[link for link in links if link is not None],
        end_on_exit=end_on_exit,
    )
