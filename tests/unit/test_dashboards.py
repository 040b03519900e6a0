"""The Grafana dashboard and provisioning files load, and query metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from sluicegate.ops.dashboards import OUTPUT, render
from sluicegate.workers.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "compose" / "grafana"
# Triton's own metrics (its :8002 endpoint); tests/integration checks them on a live server.
TRITON_METRICS = {
    "nv_inference_count",
    "nv_inference_request_success",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
}
METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[])")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / OUTPUT).read_text())
    return data


def worker_metric_names() -> tuple[set[str], str]:
    """Series names (and the exposition) a worker serves once it has done some work."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    m = WorkerMetrics(model="ocr", pool="cpu", topic="sg.work.ocr.cpu", meter_provider=provider)
    m.admitted(tokens=5, pixels=1024)
    m.batch(size=2, tokens=5, pixels=1024, padding=0.2, fill=0.5, backend_s=0.1, error=None)
    m.answered(status="error", error="invalid_image", process_s=0.2, queue_s=0.1, latency_s=0.3)
    m.sample(in_flight_cost=10, paused=1, lag={0: 3})
    text = generate_latest(registry).decode()
    provider.shutdown()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    return names - {""}, text


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert (ROOT / OUTPUT).read_text() == render(), (
        "run `sluicegate generate dashboards` and commit"
    )


def test_provisioning_files_follow_grafanas_format() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/sluicegate.yaml").read_text())
    assert ds["apiVersion"] == 1
    for source in ds["datasources"]:
        assert {"name", "type", "uid", "access", "url"} <= source.keys(), source
        assert source["access"] in ("proxy", "direct")
    assert sum(bool(s.get("isDefault")) for s in ds["datasources"]) == 1
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/sluicegate.yaml").read_text())
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert {"name", "orgId", "folder"} <= provider.keys()
    assert sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json")) == ["sluicegate.json"]


def test_dashboard_structure_loads_in_grafana() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    uids = {
        s["uid"]
        for s in yaml.safe_load((GRAFANA / "provisioning/datasources/sluicegate.yaml").read_text())[
            "datasources"
        ]
    }
    ids, cells = set(), set()
    for panel in d["panels"]:
        assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids and target["refId"] and target["expr"]
    for var in d["templating"]["list"]:
        assert var["datasource"]["uid"] in uids
    topics = " ".join(p["title"].lower() for p in d["panels"])
    for subject in ("results per second", "latency", "fill", "padding", "lag", "error", "drift"):
        assert subject in topics or subject in json.dumps(d).lower(), subject


def test_every_queried_metric_is_one_a_worker_or_triton_exports() -> None:
    exported, exposition = worker_metric_names()
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in d["templating"]["list"]]
    queried = {m for e in exprs for m in METRIC.findall(e)} - {"by", "offset"}
    queried |= {re.findall(r"label_values\((\w+)", e)[0] for e in exprs if "label_values" in e}
    assert queried, "no metric names found in the queries"
    unknown = queried - exported - TRITON_METRICS
    assert not unknown, f"queried but never exported: {sorted(unknown)}"
    for label in ("sg_model", "sg_pool", "sg_status", "error_type"):
        assert f'{label}="' in exposition, label
