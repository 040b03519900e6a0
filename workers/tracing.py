"""The worker's spans and metrics, called from a few points of the engine.

Per request (a child of the context its record's headers carry, so a
request's trace is complete on its own):

    process sg.work.<model>.<pool>   CONSUMER, read -> result acknowledged;
      attributes: partition, offset, key, sg.request_id, sg.cost, queue wait;
      links to the batch that ran it
      send <reply topic>             PRODUCER, its context goes into the
                                     result's and the telemetry's headers

Per batch (a root with one link per request's span):

    process sg.work.<model>.<pool>   CONSUMER, messaging.batch.message_count
      inference.GRPCInferenceService/ModelInfer   CLIENT (the Triton backend)
        Triton's own server / model / compute spans

Only ids, counts, costs and codes go into attributes, never request content.
With tracing and metrics off these are calls into OpenTelemetry's no-op API.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes.rpc_attributes import RPC_METHOD, RPC_SYSTEM_NAME
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import (
    INVALID_SPAN,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)

from sluicegate.runtime import tracing
from sluicegate.schemas.codec import Headers, headers
from sluicegate.schemas.models import InferenceResult
from sluicegate.schemas.models import Status as ResultStatus

from .metrics import WorkerMetrics

if TYPE_CHECKING:  # the Triton backend imports this module; admission imports the backends
    from sluicegate.runtime.records import Record

    from .admission import Admitted
    from .variants import Refused, Resolved, Variant

COST = "sg.cost"
QUEUE_WAIT_MS = "sg.queue_wait_ms"
PADDED_COST = "sg.batch.padded_cost"
PADDING = "sg.batch.padding"
# What ran: on batch spans (the variant) and request spans (the result's labels).
MODEL_VERSION = "sg.model_version"
PRECISION = "sg.precision"
DEVICE_KIND = "sg.device_kind"
POOL = "sg.pool"


def label_variant(span: Span, variant: Variant | None) -> None:
    """Say on `span` which version, precision and device a batch runs on."""
    if variant is not None and span.is_recording():
        span.set_attributes(
            {
                MODEL_VERSION: variant.version,
                PRECISION: variant.precision,
                DEVICE_KIND: variant.device_kind,
                "sg.triton_model": variant.triton_model,
            }
        )


class WorkerObserver:
    """Spans and metrics of one worker. Cheap when OpenTelemetry is not configured."""

    def __init__(
        self,
        *,
        model: str,
        pool: str,
        topic: str,
        budget: int,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._tracer = tracing.get_tracer(tracer_provider)
        self._on = tracing.enabled(self._tracer)
        self._topic = topic
        self._budget = budget
        self.metrics = WorkerMetrics(
            model=model, pool=pool, topic=topic, meter_provider=meter_provider
        )

    def request_started(
        self, rec: Record, admitted: Admitted, placed: Resolved | Refused | None = None
    ) -> Span:
        """The request's span, started as its record is admitted; ended by `answered`.

        Where the router's preferred precision has no variant for the version
        (`placed.fell_back`), the span says so (`sg.precision.requested`); the
        result and the span's `sg.precision` say what ran.
        """
        cost = admitted.cost
        self.metrics.admitted(tokens=cost.tokens, pixels=cost.pixels)
        if not self._on:
            return INVALID_SPAN
        parent = tracing.extract(rec.headers)
        with tracing.process_span(
            self._tracer,
            self._topic,
            parent=parent,
            record=rec,
            request_id=admitted.request.request_id,
            attributes={COST: cost.units}
            if placed is None or not placed.fell_back
            else {COST: cost.units, "sg.precision.requested": placed.fell_back},
            end_on_exit=False,
        ) as span:
            return span

    def refused(self, rec: Record, request_id: str | None, code: str) -> Span:
        """A span for a record that never became a request (undecodable, invalid)."""
        if not self._on:
            return INVALID_SPAN
        with tracing.process_span(
            self._tracer,
            self._topic,
            parent=tracing.extract(rec.headers),
            record=rec,
            request_id=request_id,
            attributes={ERROR_TYPE: code},
            end_on_exit=False,
        ) as span:
            span.set_status(Status(StatusCode.ERROR, code))
            return span

    def batch_started(self, spans: Sequence[Span], queue_ms: Sequence[float]) -> Span:
        """The batch's span, linking every request's span (and each request back to it)."""
        if not spans or not spans[0].is_recording():
            return INVALID_SPAN
        links = [tracing.link_to(trace.set_span_in_context(s)) for s in spans]
        with tracing.process_span(
            self._tracer,
            self._topic,
            links=links,
            batch_size=len(spans),
            end_on_exit=False,
        ) as batch:
            batch_context = batch.get_span_context()
            for span, waited in zip(spans, queue_ms, strict=True):
                span.set_attribute(QUEUE_WAIT_MS, round(waited, 3))
                span.add_link(batch_context)
            return batch

    def backend_call(self, batch: Span) -> AbstractContextManager[object]:
        """Make the batch span current so the backend's CLIENT span is its child."""
        if not batch.is_recording():
            return nullcontext()
        return trace.use_span(batch, end_on_exit=False)

    def batch_finished(
        self,
        batch: Span,
        *,
        size: int,
        tokens: int,
        pixels: int,
        padded_cost: int,
        padding: float,
        backend_s: float,
        errors: Sequence[str],
    ) -> None:
        error = errors[0] if errors else None
        self.metrics.batch(
            size=size,
            tokens=tokens,
            pixels=pixels,
            padding=padding,
            fill=padded_cost / self._budget,
            backend_s=backend_s,
            error=error if len(errors) == size else None,
        )
        if batch.is_recording():
            batch.set_attributes({PADDED_COST: padded_cost, PADDING: round(padding, 4)})
            if error is not None:
                batch.set_attribute(ERROR_TYPE, error)
                batch.set_status(Status(StatusCode.ERROR, f"{len(errors)} of {size} failed"))
            batch.end()

    def result_send(
        self, request: Span, topic: str, result: InferenceResult
    ) -> AbstractContextManager[Headers]:
        """`send <topic>` under the request's span; yields the headers to produce with.

        The headers get the send span's context, so a consumer of the results
        topic continues the request's trace.
        """
        if not request.is_recording():
            return nullcontext(headers())
        return self._result_send(request, topic, result)

    @contextmanager
    def _result_send(self, request: Span, topic: str, result: InferenceResult) -> Iterator[Headers]:
        out = headers()
        with tracing.producer_span(
            self._tracer,
            topic,
            parent=trace.set_span_in_context(request),
            key=result.request_id.encode(),
            request_id=result.request_id,
        ) as span:
            tracing.inject(out)
            yield out
            if result.error is not None:
                span.set_attribute(ERROR_TYPE, result.error.code)

    def telemetry_headers(self, span: Span) -> Headers:
        out = headers()
        # Usually ended by now (the answer or batch is done): its context still holds.
        if span.get_span_context().is_valid:
            tracing.inject(out, trace.set_span_in_context(span, Context()))
        return out

    def answered(self, span: Span, result: InferenceResult | None, *, process_s: float) -> None:
        """The request's result was acknowledged: record it and end its span.

        `result` is None for a record with no request id to answer (DLQ only).
        """
        if result is None:
            span.end()
            return
        error = result.error.code if result.error is not None else None
        timings = result.timings
        self.metrics.answered(
            status=result.status.value,
            error=error,
            process_s=process_s,
            queue_s=None if timings.batch_size == 0 else timings.queue_ms / 1000,
            latency_s=None if timings.total_ms is None else timings.total_ms / 1000,
        )
        if span.is_recording():
            span.set_attribute("sg.status", result.status.value)
            span.set_attributes(
                {
                    "sg.model": result.model,
                    POOL: result.pool,
                    MODEL_VERSION: result.model_version,
                    PRECISION: result.precision,
                    DEVICE_KIND: result.device_kind,
                }
            )
            if error is not None:
                span.set_attribute(ERROR_TYPE, error)
            if result.status is ResultStatus.ERROR:
                span.set_status(Status(StatusCode.ERROR, error or result.status.value))
            span.end()

    def sample(self, *, in_flight_cost: int, paused: int, lag: dict[int, int]) -> None:
        self.metrics.sample(in_flight_cost=in_flight_cost, paused=paused, lag=lag)


GRPC_INFER = "inference.GRPCInferenceService/ModelInfer"


def grpc_client_span(
    tracer: Tracer, *, url: str, model: str, batch_size: int
) -> AbstractContextManager[dict[str, str]]:
    """The CLIENT span of one Triton gRPC call; yields the gRPC metadata to send.

    The metadata carries the span's W3C context (`traceparent`), so a Triton
    in OpenTelemetry trace mode makes its server spans children of this one.
    Exceptions mark the span failed with their type only: Triton's messages
    may quote request content.
    """
    if not tracing.enabled(tracer):
        return nullcontext({})
    return _grpc_client_span(tracer, url=url, model=model, batch_size=batch_size)


@contextmanager
def _grpc_client_span(
    tracer: Tracer, *, url: str, model: str, batch_size: int
) -> Iterator[dict[str, str]]:
    metadata: dict[str, str] = {}
    host, _, port = url.rpartition(":")
    attrs: dict[str, str | int] = {
        RPC_SYSTEM_NAME: "grpc",
        RPC_METHOD: GRPC_INFER,
        SERVER_ADDRESS: host or url,
        "sg.model": model,
        "sg.batch.size": batch_size,
    }
    if port.isdigit():
        attrs[SERVER_PORT] = int(port)
    with tracer.start_as_current_span(
        GRPC_INFER,
        kind=SpanKind.CLIENT,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            propagate.inject(metadata)
        try:
            yield metadata
        except Exception as exc:
            span.set_attribute(ERROR_TYPE, type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
