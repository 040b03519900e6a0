"""Prometheus exposition of the latest rollups (`/metrics` of `sluicegate telemetry`).

A custom collector over the latest closed window per model x pool x version
x window size: gauges, since a window is already an aggregate (Prometheus
counters of raw events would double-aggregate). Labels never carry request
data, only model / pool / version / window / quantile / statistic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .records import DriftEvent, RollupRecord, ShadowDiff, WindowRollup

_WINDOW_GAUGES = {
    "throughput_rps": "Requests answered per second over the window",
    "cost_per_s": "Real cost (tokens or pixels) processed per second",
    "mean_batch_size": "Mean requests per batch",
    "padding_waste": "1 - real cost / padded cost of the batches",
    "error_rate": "Share of requests answered error",
    "expired_rate": "Share of requests answered expired",
    "rejected_rate": "Share of requests answered rejected",
    "lag_cost": "Unconsumed requests on the work topic times mean cost (-1: unknown)",
}


class RollupCollector(Collector):
    """Thread-safe: the rollup loop `update()`s, the HTTP thread `collect()`s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str, int], WindowRollup] = {}
        self._shadow: dict[tuple[str, str, str], ShadowDiff] = {}
        self._drift: dict[tuple[str, str], DriftEvent] = {}

    def update(self, record: RollupRecord) -> None:
        with self._lock:
            if isinstance(record, WindowRollup):
                key = (record.model, record.pool, record.version, record.window_s)
                self._windows[key] = record
            elif isinstance(record, ShadowDiff):
                skey = (record.model, record.primary_version, record.shadow_version)
                self._shadow[skey] = record
            elif isinstance(record, DriftEvent):
                self._drift[(record.model, record.statistic)] = record

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            windows = list(self._windows.values())
            shadows = list(self._shadow.values())
            drifts = list(self._drift.values())
        labels = ["model", "pool", "version", "window"]
        for field, doc in _WINDOW_GAUGES.items():
            gauge = GaugeMetricFamily(f"sluicegate_{field}", doc, labels=labels)
            for w in windows:
                gauge.add_metric([w.model, w.pool, w.version, f"{w.window_s}s"], getattr(w, field))
            yield gauge
        for name, doc in (("latency_ms", "Queue + compute"), ("queue_ms", "Queue wait")):
            gauge = GaugeMetricFamily(
                f"sluicegate_{name}",
                f"{doc} per request, milliseconds",
                labels=[*labels, "quantile"],
            )
            for w in windows:
                q = getattr(w, name)
                for quantile, value in (("0.5", q.p50), ("0.95", q.p95), ("0.99", q.p99)):
                    gauge.add_metric(
                        [w.model, w.pool, w.version, f"{w.window_s}s", quantile], value
                    )
            yield gauge
        shadow_labels = ["model", "primary_version", "shadow_version"]
        sim = GaugeMetricFamily(
            "sluicegate_shadow_similarity",
            "Mean primary/shadow output similarity",
            labels=shadow_labels,
        )
        agree = GaugeMetricFamily(
            "sluicegate_shadow_status_agreement",
            "Share of shadow pairs whose statuses agree",
            labels=shadow_labels,
        )
        for d in shadows:
            sim.add_metric([d.model, d.primary_version, d.shadow_version], d.mean_similarity)
            agree.add_metric([d.model, d.primary_version, d.shadow_version], d.status_agreement)
        yield sim
        yield agree
        psi = GaugeMetricFamily(
            "sluicegate_drift_psi",
            "Population stability index of an input statistic vs its baseline (last alarm)",
            labels=["model", "statistic"],
        )
        for e in drifts:
            psi.add_metric([e.model, e.statistic], e.psi)
        yield psi
