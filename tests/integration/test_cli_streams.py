"""`sluicegate route|cancel|bench router|status` against the stack that `up` started."""

from __future__ import annotations

import json
import urllib.request

import pytest

from sluicegate.ops.bench.router_relay import bench_router_vs_relay
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.runtime.kafka import KafkaSettings

from .test_cli import sluicegate

pytestmark = pytest.mark.integration


def test_up_runs_the_router_and_the_telemetry_rollups(
    stack: LocalStack, stack_env: dict[str, str]
) -> None:
    done = sluicegate("status", env=stack_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "router" in done.stdout and "telemetry" in done.stdout
    url = f"http://127.0.0.1:{stack.settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        assert page.status == 200 and b"sluicegate_throughput_rps" in page.read()


def test_route_set_show_rollback_and_cancel(stack: LocalStack, stack_env: dict[str, str]) -> None:
    first = sluicegate("route", "set", "--model", "ocr", "--version", "1", env=stack_env)
    assert first.returncode == 0, first.stderr
    canary = sluicegate(
        "route", "set", "--model", "ocr", "--version", "1=90", "--version", "2=10",
        "--shadow", "3", "--shadow-fraction", "0.5", env=stack_env,
    )  # fmt: skip
    assert canary.returncode == 0, canary.stderr
    assert json.loads(canary.stdout)["versions"] == {"1": 90.0, "2": 10.0}
    shown = json.loads(sluicegate("route", "show", env=stack_env).stdout)
    assert shown["ocr"]["shadow"] == "3" and shown["ocr"]["shadow_fraction"] == 0.5
    back = sluicegate("route", "rollback", "--model", "ocr", env=stack_env)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["versions"] == {"1": 1.0}
    assert json.loads(sluicegate("route", "show", env=stack_env).stdout)["ocr"]["shadow"] is None
    nothing = sluicegate("route", "rollback", "--model", "doc-match", env=stack_env)
    assert nothing.returncode == 1 and "no earlier route" in nothing.stderr
    bad = sluicegate("route", "set", "--model", "ocr", "--version", "1=x", env=stack_env)
    assert bad.returncode != 0 and "VERSION=WEIGHT" in bad.stderr
    cancelled = sluicegate("cancel", "some-request-id", env=stack_env)
    assert cancelled.returncode == 0 and "some-request-id" in cancelled.stderr


async def test_bench_router_vs_relay_reports_both_rates(kafka: KafkaSettings) -> None:
    figures = await bench_router_vs_relay(kafka, count=400)
    print(f"router vs relay (400 records): {figures}")
    assert figures["count"] == 400
    assert figures["relay_rps"] > 0 and figures["router_rps"] > 0
    assert figures["ratio"] == pytest.approx(figures["router_rps"] / figures["relay_rps"], rel=0.01)
