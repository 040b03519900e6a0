"""OpenTelemetry SDK wiring for one sluicegate process, from the standard `OTEL_*` variables.

- `OTEL_SDK_DISABLED=true`: nothing is installed.
- `OTEL_TRACES_EXPORTER`: `otlp`, `console` or `none` (comma-separated list
  allowed). Unset, it is `otlp` when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
  traces-specific endpoint) is set and `none` otherwise: a process that was
  told nowhere to send spans installs no SDK at all, so tracing off costs a
  no-op API call per hook (`ops/bench/tracing_overhead.py` measures it).
- `OTEL_METRICS_EXPORTER`: any of `otlp`, `prometheus`, `console`, `none`,
  with the same default. `prometheus` serves `/metrics` on
  `OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT` (default
  127.0.0.1:9464), one endpoint per process.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
  `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*` are read by the SDK itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_KNOWN_TRACES = {"otlp", "console", "none"}
_KNOWN_METRICS = {"otlp", "prometheus", "console", "none"}


class TelemetryConfigError(ValueError):
    """An `OTEL_*` variable names an exporter this process does not have."""


@dataclass(frozen=True, kw_only=True)
class TelemetryPlan:
    """What `setup` installs, decided from the environment alone (pure, testable)."""

    traces: frozenset[str] = frozenset()
    metrics: frozenset[str] = frozenset()
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9464

    @property
    def tracing(self) -> bool:
        return bool(self.traces)


def plan(env: Mapping[str, str]) -> TelemetryPlan:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TelemetryPlan()
    endpoint = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))

    def choose(var: str, specific: str, known: set[str]) -> frozenset[str]:
        default = "otlp" if endpoint or env.get(specific) else "none"
        names = {n.strip().lower() for n in env.get(var, default).split(",") if n.strip()}
        unknown = names - known
        if unknown:
            raise TelemetryConfigError(
                f"{var}={env[var]!r} names {sorted(unknown)}; use any of {sorted(known)}"
            )
        return frozenset(names - {"none"})

    return TelemetryPlan(
        traces=choose("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _KNOWN_TRACES),
        metrics=choose(
            "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", _KNOWN_METRICS
        ),
        prometheus_host=env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1"),
        prometheus_port=int(env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")),
    )


@dataclass
class Telemetry:
    """The SDK providers one process installed; `shutdown` flushes them (call it at exit)."""

    plan: TelemetryPlan
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    _closed: list[bool] = field(default_factory=list)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed.append(True)
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def setup(service_name: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """Install global tracer and meter providers as the `OTEL_*` variables ask.

    Call once per process, before the first span. `service_name` applies
    unless `OTEL_SERVICE_NAME` says otherwise. Exporter packages are imported
    only when asked for.
    """
    env = os.environ if env is None else env
    chosen = plan(env)
    out = Telemetry(plan=chosen)
    if not chosen.traces and not chosen.metrics:
        return out
    attrs = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    resource = Resource.create(attrs)
    if chosen.traces:
        tracer_provider = TracerProvider(resource=resource)
        if "otlp" in chosen.traces:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if "console" in chosen.traces:
            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        out.tracer_provider = tracer_provider
    if chosen.metrics:
        readers: list[MetricReader] = []
        if "otlp" in chosen.metrics:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if "console" in chosen.metrics:
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        if "prometheus" in chosen.metrics:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server

            readers.append(PrometheusMetricReader())
            start_http_server(chosen.prometheus_port, addr=chosen.prometheus_host)
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        out.meter_provider = meter_provider
    return out
