"""The Grafana dashboard, generated with Grafana's own typed builders (grafana-foundation-sdk).

`sluicegate generate dashboards` writes `compose/grafana/dashboards/sluicegate.json`,
which Grafana loads through `compose/grafana/provisioning/`. The JSON is
committed; a test regenerates it and fails on drift, and checks every metric
a query names against what a worker actually exports. Metric names and units:
docs/observability.md.

Rows: throughput and errors, latency percentiles, batching (size, fill,
padding waste), backpressure and lag, input drift, Triton. Every panel is
split by model and pool (`$model` / `$pool` variables).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

UID = "sluicegate-overview"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
SEL = 'sg_model=~"$model", sg_pool=~"$pool"'
BY = "sg_model, sg_pool"
RATE = "[$__rate_interval]"
OUTPUT = Path("compose/grafana/dashboards/sluicegate.json")


def _q(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS)
    )


def _quantiles(metric: str, by: str = BY) -> list[prometheus.Dataquery]:
    return [
        _q(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}{RATE})))",
            f"p{int(q * 100)} {{{{sg_model}}}}/{{{{sg_pool}}}}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def _series(
    pid: int, title: str, unit: str, targets: list[prometheus.Dataquery], *, width: int = 8
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(pid)
        .title(title)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(width)
        .height(8)
        .min(0)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def _avg(metric: str) -> str:
    return (
        f"sum by ({BY}) (rate({metric}_sum{{{SEL}}}{RATE})) / "
        f"sum by ({BY}) (rate({metric}_count{{{SEL}}}{RATE}))"
    )


def _variable(name: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(name)
        .datasource(PROMETHEUS)
        .query(f"label_values(sg_results_total, sg_{name})")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def build() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana's file provisioning reads."""
    legend = "{{sg_model}}/{{sg_pool}}"
    q = {
        "latency": _quantiles("sg_request_latency_seconds"),
        "process": _quantiles("messaging_process_duration_seconds"),
        "queue": _quantiles("sg_queue_wait_seconds"),
        "backend": _quantiles("sg_backend_duration_seconds"),
    }.__getitem__

    def avg(metric: str) -> list[prometheus.Dataquery]:
        return [_q(_avg(metric), legend)]

    def rate(metric: str) -> str:
        return f"sum by ({BY}) (rate({metric}{{{SEL}}}{RATE}))"

    def gauge(metric: str) -> str:
        return f"sum by ({BY}) ({metric}{{{SEL}}})"

    drift = _drift
    # One builder chain reads like the dashboard, top to bottom.
    d = (
        db.Dashboard("sluicegate")
        .uid(UID)
        .description("Streaming inference over Kafka: throughput, latency, batching, lag, drift")
        .tags(["sluicegate"])
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(_variable("model"))
        .with_variable(_variable("pool"))
        .with_row(db.Row("Throughput and errors").id(101))
        .with_panel(
            _series(
                1,
                "Results per second by status",
                "reqps",
                [
                    _q(
                        f"sum by ({BY}, sg_status) (rate(sg_results_total{{{SEL}}}{RATE}))",
                        "{{sg_status}} {{sg_model}}/{{sg_pool}}",
                    )
                ],
            )
        )
        .with_panel(
            _series(
                2,
                "Error ratio (not ok / all)",
                "percentunit",
                [
                    _q(
                        f'sum by ({BY}) (rate(sg_results_total{{{SEL}, sg_status!="ok"}}{RATE})) / '
                        f"sum by ({BY}) (rate(sg_results_total{{{SEL}}}{RATE}))",
                        legend,
                    )
                ],
            )
        )
        .with_panel(
            _series(
                3,
                "Errors by code",
                "reqps",
                [
                    _q(
                        f'sum by ({BY}, error_type) (rate(sg_results_total{{{SEL}, error_type!=""}}'
                        f"{RATE}))",
                        "{{error_type}} {{sg_model}}/{{sg_pool}}",
                    )
                ],
            )
        )
        .with_row(db.Row("Latency").id(102))
        .with_panel(
            _series(4, "End-to-end latency (client to result)", "s", q("latency"), width=12)
        )
        .with_panel(
            _series(
                5, "Time in the worker (messaging.process.duration)", "s", q("process"), width=12
            )
        )
        .with_panel(_series(6, "Queue wait in the batcher", "s", q("queue"), width=12))
        .with_panel(_series(7, "Backend (Triton) time per batch", "s", q("backend"), width=12))
        .with_row(db.Row("Batching").id(103))
        .with_panel(_series(8, "Requests per batch (mean)", "short", avg("sg_batch_size"), width=6))
        .with_panel(
            _series(
                9, "Batch fill (padded cost / budget)", "percentunit", avg("sg_batch_fill"), width=6
            )
        )
        .with_panel(
            _series(
                10,
                "Padding waste (share of padded cost)",
                "percentunit",
                avg("sg_batch_padding"),
                width=6,
            )
        )
        .with_panel(
            _series(
                11,
                "Real cost per second",
                "short",
                [
                    _q(rate("sg_batch_tokens_sum"), f"tokens {legend}", "A"),
                    _q(rate("sg_batch_pixels_sum"), f"pixels {legend}", "B"),
                ],
                width=6,
            )
        )
        .with_row(db.Row("Backpressure and lag").id(104))
        .with_panel(
            _series(
                12,
                "Consumer lag (unanswered records)",
                "short",
                [_q(gauge("sg_consumer_lag"), legend)],
            )
        )
        .with_panel(
            _series(
                13,
                "In-flight cost and paused partitions",
                "short",
                [
                    _q(gauge("sg_inflight_cost"), f"cost {legend}", "A"),
                    _q(gauge("sg_consumer_paused"), f"paused {legend}", "B"),
                ],
            )
        )
        .with_panel(
            stat.Panel()
            .id(14)
            .title("Circuit breaker (0 closed, 1 half-open, 2 open)")
            .datasource(PROMETHEUS)
            .span(8)
            .height(8)
            .with_target(_q(f"max by ({BY}) (sg_backend_circuit{{{SEL}}})", legend))
        )
        .with_row(db.Row("Input drift (now vs one day earlier)").id(105))
        .with_panel(
            _series(15, "Median tokens per request", "short", drift("sg_request_tokens"), width=12)
        )
        .with_panel(
            _series(16, "Median pixels per request", "short", drift("sg_request_pixels"), width=12)
        )
        .with_row(db.Row("Triton").id(106))
        .with_panel(
            _series(
                17,
                "Triton inferences per second by model",
                "reqps",
                [_q("sum by (model) (rate(nv_inference_count[$__rate_interval]))", "{{model}}")],
                width=12,
            )
        )
        .with_panel(
            _series(
                18,
                "Triton queue and compute time per request",
                "µs",
                [
                    _q(
                        "sum by (model) (rate(nv_inference_queue_duration_us[$__rate_interval])) / "
                        "sum by (model) (rate(nv_inference_request_success[$__rate_interval]))",
                        "queue {{model}}",
                        "A",
                    ),
                    _q(
                        "sum by (model) (rate(nv_inference_compute_infer_duration_us"
                        "[$__rate_interval])) / "
                        "sum by (model) (rate(nv_inference_request_success[$__rate_interval]))",
                        "compute {{model}}",
                        "B",
                    ),
                ],
                width=12,
            )
        )
    )
    data: dict[str, Any] = _drop_nulls(json.loads(json.dumps(d.build(), cls=JSONEncoder)))
    return data


def _drop_nulls(value: Any) -> Any:
    """Leave unset options out (Grafana fills its defaults) instead of writing null."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _drift(metric: str) -> list[prometheus.Dataquery]:
    now = f"histogram_quantile(0.5, sum by (le, {BY}) (rate({metric}_bucket{{{SEL}}}[1h])))"
    then = (
        f"histogram_quantile(0.5, sum by (le, {BY}) (rate({metric}_bucket{{{SEL}}}[1h] offset 1d)))"
    )
    return [
        _q(now, "now {{sg_model}}/{{sg_pool}}", "A"),
        _q(then, "1 day ago {{sg_model}}/{{sg_pool}}", "B"),
    ]


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def write(path: Path = OUTPUT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
