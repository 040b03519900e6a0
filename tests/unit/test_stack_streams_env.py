"""`up --observability` gives the router and the rollups the workers' OTel settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluicegate.ops.stack.collector import otel_env
from sluicegate.ops.stack.stack import LocalStack, StackSettings


def _stack(tmp_path: Path, *, observability: bool) -> LocalStack:
    return LocalStack(
        StackSettings(
            state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", observability=observability,
            kafka_port=19092, otlp_grpc_port=14317,
        )
    )  # fmt: skip


def test_under_observability_the_streams_trace_where_the_workers_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    stack = _stack(tmp_path, observability=True)
    env = stack._streams_env(["cpu"])
    worker = otel_env(stack.collector.config, service="sg-worker-ocr", prometheus_port=None)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_BSP_SCHEDULE_DELAY"):
        assert env[name] == worker[name], name
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":14317")
    assert "OTEL_SERVICE_NAME" not in env, "each process names itself (sg-router, ...)"
    assert env["SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"


def test_without_observability_nothing_is_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    env = _stack(tmp_path, observability=False)._streams_env(["cpu"])
    assert "OTEL_TRACES_EXPORTER" not in env and "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
