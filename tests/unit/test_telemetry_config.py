"""OTEL_* variables -> what a process installs; the trace file reader; consumer lag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluicegate.ops.telemetry import TelemetryConfigError, plan
from sluicegate.ops.traceview import load_spans, render, request_traces
from sluicegate.workers.output.offsets import OffsetTracker


def test_nothing_configured_means_tracing_and_metrics_off() -> None:
    chosen = plan({})
    assert not chosen.tracing and not chosen.metrics


def test_an_otlp_endpoint_turns_otlp_on_by_default() -> None:
    chosen = plan({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert chosen.traces == {"otlp"} and chosen.metrics == {"otlp"}


def test_explicit_exporters_and_prometheus_port() -> None:
    chosen = plan(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "otlp, prometheus",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "23050",
        }
    )
    assert chosen.traces == {"console"}
    assert chosen.metrics == {"otlp", "prometheus"} and chosen.prometheus_port == 23050


def test_none_and_sdk_disabled_switch_everything_off() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"}
    assert not plan(env).tracing and plan(env).metrics == {"otlp"}
    assert not plan({**env, "OTEL_SDK_DISABLED": "true"}).metrics


def test_unknown_exporter_names_the_choices() -> None:
    with pytest.raises(TelemetryConfigError, match="otlp"):
        plan({"OTEL_TRACES_EXPORTER": "zipkin"})


def _span(tid: str, sid: str, parent: str, name: str, **attrs: str) -> dict[str, object]:
    return {
        "traceId": tid,
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": 5,
        "startTimeUnixNano": "1000",
        "endTimeUnixNano": "3000000",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }


def test_trace_reader_follows_links_to_the_batch(tmp_path: Path) -> None:
    request = _span("a" * 32, "1" * 16, "", "process sg.work.x.cpu", **{"sg.request_id": "r1"})
    batch = _span("b" * 32, "2" * 16, "", "process sg.work.x.cpu")
    request["links"] = [{"traceId": "b" * 32, "spanId": "2" * 16}]
    child = _span("b" * 32, "3" * 16, "2" * 16, "inference.GRPCInferenceService/ModelInfer")
    line = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "w"}}]
                },
                "scopeSpans": [{"spans": [request, batch, child]}],
            }
        ]
    }
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(line) + '\n{"resourceSpans": [trunc')  # a line mid-write
    traces = request_traces(load_spans(path), "r1")
    assert [t[0].trace_id for t in traces] == ["a" * 32, "b" * 32]
    assert traces[0][0].kind == "CONSUMER" and traces[0][0].service == "w"
    tree = render(traces, "r1")
    assert len(tree.children) == 2 and len(tree.children[1].children[0].children) == 1
    assert request_traces(load_spans(path), "nope") == []


def test_consumer_lag_counts_unanswered_records() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for off in range(5):
        tracker.track("p0", off)
    tracker.done("p0", 0)
    tracker.done("p0", 1)
    assert tracker.lag({"p0": 10, "p1": 4, "p2": None}) == {"p0": 8}
    for off in range(2, 5):
        tracker.done("p0", off)
    assert tracker.lag({"p0": 5}) == {"p0": 0}


def test_observability_wires_triton_trace_mode_and_a_collector(tmp_path: Path) -> None:
    from sluicegate.ops.stack.stack import LocalStack, StackSettings

    settings = StackSettings(
        state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", otlp_http_port=23099
    )
    plain = LocalStack(settings)
    assert "--trace-config" not in plain.triton.config.extra_args
    assert "otel collector" not in [p.name for p in plain.status()]
    traced = LocalStack(settings.model_copy(update={"observability": True}))
    args = traced.triton.config.extra_args
    assert "mode=opentelemetry" in args
    assert "opentelemetry,url=http://127.0.0.1:23099/v1/traces" in args
    row = next(p for p in traced.status() if p.name == "otel collector")
    assert not row.healthy and "traces.jsonl" in row.detail
