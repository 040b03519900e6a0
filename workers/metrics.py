"""A worker's OpenTelemetry metrics (names, units and attributes in docs/observability.md).

Instruments come from the OpenTelemetry *API*: with no `MeterProvider`
installed (metrics off) they are no-ops. The process wiring in
`ops.telemetry` exports them over OTLP and/or serves them on a Prometheus
endpoint per process. Gauges read a snapshot the engine refreshes on its
own loop (`sample`), never the engine's live state from the exporter's
thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation

# The API's placeholder until a provider is installed; private, but the only
# way to tell "metrics off" without importing the SDK.
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv._incubating.metrics.messaging_metrics import MESSAGING_PROCESS_DURATION
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.util.types import Attributes

from sluicegate.runtime.tracing import KAFKA

MODEL = "sg.model"
POOL = "sg.pool"
STATUS = "sg.status"

# Seconds: from a millisecond CPU batch to a minute-long stuck one.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_RATIOS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_TOKENS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_PIXELS = tuple(float(4**k * 1024) for k in range(10))  # 1 Ki .. 256 Mi pixels

# 0 closed, 1 half-open, 2 open: a breaker's state as a gauge value.
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class _Snapshot:
    in_flight_cost: int = 0
    paused: int = 0
    lag: dict[int, int] = field(default_factory=dict)  # partition -> messages
    circuit: int = 0


class WorkerMetrics:
    """Records one worker's metrics; every data point carries model, pool and topic."""

    def __init__(
        self, *, model: str, pool: str, topic: str, meter_provider: MeterProvider | None = None
    ) -> None:
        meter = metrics.get_meter("sluicegate", meter_provider=meter_provider)
        provider = meter_provider or metrics.get_meter_provider()
        # Decided once: install the process's provider before building a worker.
        self.enabled = not isinstance(provider, NoOpMeterProvider | _ProxyMeterProvider)
        self._base: dict[str, str] = {
            MODEL: model,
            POOL: pool,
            msg.MESSAGING_SYSTEM: KAFKA,
            msg.MESSAGING_DESTINATION_NAME: topic,
        }
        self._snap = _Snapshot()
        h = meter.create_histogram
        self.process_duration = h(
            MESSAGING_PROCESS_DURATION,
            unit="s",
            description="A request's time in the worker: read to result acknowledged",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.queue_wait = h(
            "sg.queue.wait",
            unit="s",
            description="A request's wait in the batcher: read to its batch starting",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.request_latency = h(
            "sg.request.latency",
            unit="s",
            description="Client created the request to its result produced (clock skew applies)",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.request_tokens = h(
            "sg.request.tokens",
            unit="{token}",
            description="Tokens of one admitted request (input drift)",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.request_pixels = h(
            "sg.request.pixels",
            unit="{pixel}",
            description="Pixels of one admitted request after the model's resize (input drift)",
            explicit_bucket_boundaries_advisory=_PIXELS,
        )
        self.batch_size = h(
            "sg.batch.size",
            unit="{request}",
            description="Requests per batch sent to the backend",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.batch_tokens = h(
            "sg.batch.tokens",
            unit="{token}",
            description="Real (unpadded) tokens per batch",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.batch_pixels = h(
            "sg.batch.pixels",
            unit="{pixel}",
            description="Real (unpadded) pixels per batch",
            explicit_bucket_boundaries_advisory=_PIXELS,
        )
        self.padding_ratio = h(
            "sg.batch.padding",
            unit="1",
            description="Share of a batch's padded cost that is padding (0 = none wasted)",
            explicit_bucket_boundaries_advisory=_RATIOS,
        )
        self.batch_fill = h(
            "sg.batch.fill",
            unit="1",
            description="A batch's padded cost over the pool's budget",
            explicit_bucket_boundaries_advisory=_RATIOS,
        )
        self.backend_duration = h(
            "sg.backend.duration",
            unit="s",
            description="One batch at the backend, retries and bisection included",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.results = meter.create_counter(
            "sg.results", unit="{result}", description="Results produced, by status and error"
        )
        g = meter.create_observable_gauge
        g(
            "sg.inflight.cost",
            callbacks=[self._observe_cost],
            unit="1",
            description="Padded cost held by the worker (queued plus at the backend), cost units",
        )
        g(
            "sg.consumer.paused",
            callbacks=[self._observe_paused],
            unit="{partition}",
            description="Partitions paused by backpressure",
        )
        g(
            "sg.consumer.lag",
            callbacks=[self._observe_lag],
            unit="{message}",
            description="Records of an assigned partition not yet answered (high watermark "
            "minus the lowest unanswered offset)",
        )
        g(
            "sg.backend.circuit",
            callbacks=[self._observe_circuit],
            unit="1",
            description="Backend circuit breaker: 0 closed, 1 half-open, 2 open",
        )

    # -- recording ----------------------------------------------------------

    def attrs(self, **extra: str) -> Attributes:
        return {**self._base, **extra}

    def admitted(self, *, tokens: int, pixels: int) -> None:
        if not self.enabled:
            return
        if tokens:
            self.request_tokens.record(tokens, self._base)
        if pixels:
            self.request_pixels.record(pixels, self._base)

    def batch(
        self,
        *,
        size: int,
        tokens: int,
        pixels: int,
        padding: float,
        fill: float,
        backend_s: float,
        error: str | None,
    ) -> None:
        if not self.enabled:
            return
        base = self._base
        self.batch_size.record(size, base)
        if tokens:
            self.batch_tokens.record(tokens, base)
        if pixels:
            self.batch_pixels.record(pixels, base)
        self.padding_ratio.record(padding, base)
        self.batch_fill.record(fill, base)
        outcome = self.attrs(**{ERROR_TYPE: error}) if error else base
        self.backend_duration.record(backend_s, outcome)

    def answered(
        self,
        *,
        status: str,
        error: str | None,
        process_s: float,
        queue_s: float | None,
        latency_s: float | None,
    ) -> None:
        if not self.enabled:
            return
        extra = {STATUS: status, **({ERROR_TYPE: error} if error else {})}
        attrs = self.attrs(**extra)
        self.results.add(1, attrs)
        self.process_duration.record(process_s, attrs)
        if queue_s is not None:
            self.queue_wait.record(queue_s, self._base)
        if latency_s is not None:
            self.request_latency.record(max(0.0, latency_s), attrs)

    def sample(self, *, in_flight_cost: int, paused: int, lag: dict[int, int]) -> None:
        """Refresh the gauges' snapshot (called from the engine's loop)."""
        if not self.enabled:
            return
        self._snap = _Snapshot(in_flight_cost, paused, lag, self._snap.circuit)

    def circuit_state(self, state: str) -> None:
        """For a circuit breaker to report its state (`closed`, `half_open`, `open`)."""
        self._snap.circuit = CIRCUIT_STATES[state]

    # -- gauges -------------------------------------------------------------

    def _observe_cost(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._snap.in_flight_cost, self._base)]

    def _observe_paused(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._snap.paused, self._base)]

    def _observe_lag(self, _: CallbackOptions) -> Sequence[Observation]:
        lag = self._snap.lag
        return [
            Observation(n, self.attrs(**{msg.MESSAGING_DESTINATION_PARTITION_ID: str(p)}))
            for p, n in lag.items()
        ]

    def _observe_circuit(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._snap.circuit, self._base)]
