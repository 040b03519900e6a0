"""One trace per request, client -> Kafka -> worker -> Triton -> Kafka, via a real collector.

A real OpenTelemetry Collector (built with ocb) receives OTLP from the client
(in-process SDK), from a `sluicegate worker` subprocess configured only by
`OTEL_*` variables, and from a second Triton (text-embed only) in
OpenTelemetry trace mode. The test reads the collector's file output.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from sluicegate.ops.models.build import MANIFEST_NAME
from sluicegate.ops.stack.collector import (
    CollectorConfig,
    LocalCollector,
    collector_binary,
    collector_config,
    otel_env,
    triton_trace_args,
)
from sluicegate.ops.stack.process import ManagedProcess, free_port, wait_until
from sluicegate.ops.stack.stack import LocalStack
from sluicegate.ops.stack.triton import LocalTriton, TritonLocalConfig
from sluicegate.ops.traceview import SpanRecord, load_spans, request_traces
from sluicegate.runtime.kafka import KafkaSettings, wait_for_partitions
from sluicegate.schemas.codec import decode_result, decode_telemetry, header
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client, ClientSettings
from sluicegate.workers.tracing import GRPC_INFER

from ..conftest import CACHE_DIR

pytestmark = pytest.mark.integration

MODEL = "text-embed"
WORKER = f"sg-worker-{MODEL}"
CLIENT = "sg-client"
ROUTER = "sg-router"


def request_spans(topics: TopicSettings) -> list[tuple[str, str, str]]:
    """(service, span name, kind) that every request's own trace must hold, in any order.

    The client produces to the request topic; the ingress router's span is the
    parent of the worker's.
    """
    work = topics.work(MODEL, "cpu")
    return [
        (CLIENT, f"send {topics.requests}", "PRODUCER"),
        (ROUTER, f"process {topics.requests}", "CONSUMER"),
        (WORKER, f"process {work}", "CONSUMER"),
        (WORKER, f"send {topics.results}", "PRODUCER"),
    ]


def batch_spans(topics: TopicSettings) -> list[tuple[str, str, str]]:
    """What the batch trace linked from each request must hold (Triton's own spans too)."""
    return [
        (WORKER, f"process {topics.work(MODEL, 'cpu')}", "CONSUMER"),
        (WORKER, GRPC_INFER, "CLIENT"),
        ("triton", "InferRequest", "SERVER"),
    ]


@dataclass(frozen=True)
class Observed:
    collector: LocalCollector
    triton: LocalTriton

    @property
    def traces_file(self) -> Path:
        return self.collector.config.traces_file


@pytest.fixture(scope="module")
def observed(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A collector and a text-embed-only Triton in OpenTelemetry trace mode."""
    root = tmp_path_factory.mktemp("observed")
    collector = LocalCollector(
        CollectorConfig(
            state_dir=root / "otelcol",
            cache_dir=CACHE_DIR,
            grpc_port=free_port(),
            http_port=free_port(),
        )
    )
    repository = root / "repository"
    repository.mkdir()
    (repository / MODEL).symlink_to(stack.repository / MODEL, target_is_directory=True)
    # The model checks its artifacts against the repository's sha256 manifest when it loads.
    (repository / MANIFEST_NAME).symlink_to(stack.repository / MANIFEST_NAME)
    triton = LocalTriton(
        TritonLocalConfig(
            repository=repository,
            state_dir=root / "triton",
            cache_dir=CACHE_DIR,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            extra_args=triton_trace_args(collector.config),
        )
    )
    collector.start(progress=print)
    try:
        (root / "triton").mkdir()
        triton.start(timeout=180)
        try:
            yield Observed(collector, triton)
        finally:
            triton.stop()
    finally:
        collector.stop()


@dataclass(frozen=True)
class TracedWorker:
    metrics_port: int
    log_path: Path


@pytest.fixture
def worker_process(
    observed: Observed, kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> Iterator[TracedWorker]:
    """`sluicegate worker` configured by OTEL_* only (its Prometheus port and log)."""
    metrics_port = free_port()
    ready = tmp_path / "worker.ready"
    env = dict(os.environ)
    env.update(
        {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": observed.triton.grpc_url,
            "SLUICEGATE_TRITON__ADMIN_KEY": observed.triton.admin_key(),
            "SLUICEGATE_TOPICS__REQUESTS": topics.requests,
            "SLUICEGATE_TOPICS__RESULTS": topics.results,
            "SLUICEGATE_TOPICS__TELEMETRY": topics.telemetry,
            "SLUICEGATE_TOPICS__DLQ": topics.dlq,
            "SLUICEGATE_TOPICS__WORK_PREFIX": topics.work_prefix,
            "SLUICEGATE_GROUP_ID": f"{topics.work_prefix}.traced",
            # Hold the batch open long enough that the requests share it.
            "SLUICEGATE_BATCH__MAX_QUEUE_DELAY_MICROSECONDS": "400000",
            **otel_env(observed.collector.config, service=WORKER, prometheus_port=metrics_port),
        }
    )
    proc = ManagedProcess(name="traced-worker", state_dir=tmp_path)
    argv = [sys.executable, "-m", "sluicegate", "worker", "--model", MODEL, "--ready-file"]
    handle = proc.start([*argv, str(ready)], env=env)
    try:
        wait_until(
            ready.exists, timeout=120, what="traced worker", alive=proc.is_running,
            log_path=proc.log_path,
        )  # fmt: skip
        yield TracedWorker(metrics_port, proc.log_path)
    finally:
        proc.stop(grace=30)
        handle.poll()
    assert not any(
        line.startswith("Traceback") for line in proc.log_path.read_text().splitlines()
    ), proc.log_path.read_text()[-3000:]


def _router(
    observed: Observed, kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, *, traced: bool
) -> Iterator[Path]:
    """`sluicegate router` configured by OTEL_* only (none when not `traced`); yields its log."""
    ready = tmp_path / "router.ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            **topics.as_env(),
            "SLUICEGATE_ROUTER_GROUP_ID": f"{topics.requests}.router",
        }
    )
    if traced:
        env |= otel_env(observed.collector.config, service=ROUTER, prometheus_port=free_port())
    proc = ManagedProcess(name="traced-router", state_dir=tmp_path)
    handle = proc.start(
        [sys.executable, "-m", "sluicegate", "router", "--ready-file", str(ready)], env=env
    )
    try:
        wait_until(
            ready.exists, timeout=120, what="traced router", alive=proc.is_running,
            log_path=proc.log_path,
        )  # fmt: skip
        yield proc.log_path
    finally:
        proc.stop(grace=30)
        handle.poll()
    assert "Traceback" not in proc.log_path.read_text(), proc.log_path.read_text()[-3000:]


@pytest.fixture
def traced_router(
    observed: Observed, kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> Iterator[Path]:
    yield from _router(observed, kafka, topics, tmp_path, traced=True)


@pytest.fixture(params=[True, False], ids=["router-traced", "router-tracing-off"])
def any_router(
    request: pytest.FixtureRequest,
    observed: Observed,
    kafka: KafkaSettings,
    topics: TopicSettings,
    tmp_path: Path,
) -> Iterator[bool]:
    """A router with tracing on, then one with it off; yields whether it traces."""
    traced = bool(request.param)
    for _ in _router(observed, kafka, topics, tmp_path, traced=traced):
        yield traced


@pytest.fixture
async def traced_client(
    observed: Observed, kafka: KafkaSettings, topics: TopicSettings, traced_router: Path
) -> AsyncIterator[tuple[Client, TracerProvider]]:
    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT}))
    exporter = OTLPSpanExporter(
        endpoint=observed.collector.config.otlp_grpc_endpoint, insecure=True
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    settings = ClientSettings(kafka=kafka, topics=topics, timeout_s=120)
    try:
        async with Client(settings=settings, tracer_provider=provider) as client:
            yield client, provider
    finally:
        provider.shutdown()


async def _trace_headers(kafka: KafkaSettings, names: list[str]) -> dict[str, dict[str, list[str]]]:
    """topic -> request id ("" for batch telemetry) -> trace ids in its records' traceparent.

    A batch event's trace id is listed under "" and under each of its members' ids.
    """
    out: dict[str, dict[str, list[str]]] = {name: {} for name in names}
    consumer = AIOKafkaConsumer(*names, auto_offset_reset="earliest", **kafka.client_kwargs())
    await consumer.start()
    try:
        quiet_since = time.monotonic()
        # Read until nothing new arrived for 3 s: every record was produced before this.
        while time.monotonic() - quiet_since < 3:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                quiet_since = time.monotonic()
                for rec in records:
                    parent = header(rec.headers, "traceparent")
                    if parent is None:
                        continue
                    trace_id = parent.decode().split("-")[1]
                    if tp.topic == names[0]:
                        rids = [decode_result(rec.value, rec.headers).request_id]
                    else:  # a batch event ("") carries its members' telemetry too
                        event = decode_telemetry(rec.value, rec.headers)
                        rids = [event.request_id or "", *(event.request_ids or [])]
                    for rid in rids:
                        out[tp.topic].setdefault(rid, []).append(trace_id)
    finally:
        await consumer.stop()
    return out


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _has(spans: list[SpanRecord], want: tuple[str, str, str]) -> bool:
    return any((s.service, s.name, s.kind) == want for s in spans)


def _complete(traces: list[list[SpanRecord]], topics: TopicSettings) -> bool:
    if len(traces) < 2:
        return False
    own, linked = traces[0], [s for t in traces[1:] for s in t]
    return all(_has(own, w) for w in request_spans(topics)) and all(
        _has(linked, w) for w in batch_spans(topics)
    )


async def test_each_request_is_one_trace_with_a_linked_batch_reaching_into_triton(
    observed: Observed,
    worker_process: TracedWorker,
    kafka: KafkaSettings,
    traced_client: tuple[Client, TracerProvider],
    topics: TopicSettings,
) -> None:
    client, provider = traced_client
    secrets = [f"confidential memo {uuid.uuid4().hex[:8]} about the merger" for _ in range(4)]
    requests = [
        InferenceRequest(request_id=uuid.uuid4().hex, model=MODEL, texts=[text]) for text in secrets
    ]
    futures = [client.expect(r.request_id) for r in requests]
    await asyncio.gather(*(client.send(r) for r in requests))
    results = [await client.wait(r.request_id, f) for r, f in zip(requests, futures, strict=True)]
    assert all(r.status is Status.OK for r in results), [r.error for r in results]
    assert max(r.timings.batch_size for r in results) > 1, "the requests were never batched"
    provider.force_flush()

    deadline = time.monotonic() + 60
    while True:
        spans = load_spans(observed.traces_file)
        found = {r.request_id: request_traces(spans, r.request_id) for r in requests}
        if all(_complete(t, topics) for t in found.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)

    for request in requests:
        traces = found[request.request_id]
        assert traces, f"no spans for {request.request_id}"
        own = traces[0]
        assert len({s.trace_id for s in own}) == 1
        names = sorted((s.service, s.name, s.kind) for s in own)
        for want in request_spans(topics):
            assert want in names, (want, names)
        worker_span = next(s for s in own if s.kind == "CONSUMER" and s.service == WORKER)
        attrs = worker_span.attributes
        assert attrs["messaging.system"] == "kafka"
        assert attrs["messaging.operation.type"] == "process"
        assert attrs["messaging.destination.name"] == topics.work(MODEL, "cpu")
        assert attrs["sg.request_id"] == request.request_id
        assert attrs["sg.cost"] > 0 and "sg.queue_wait_ms" in attrs
        send = next(s for s in own if s.service == CLIENT)
        router_span = next(s for s in own if s.service == ROUTER)
        assert router_span.parent_id == send.span_id, "the router span continues the client's"
        assert router_span.attributes["messaging.destination.name"] == topics.requests
        assert router_span.attributes["sg.request_id"] == request.request_id
        assert worker_span.parent_id == router_span.span_id, (
            "the worker span continues the router's"
        )
        result_send = next(s for s in own if s.name == f"send {topics.results}")
        assert result_send.parent_id == worker_span.span_id

        # The batch: its own trace, linking this request, with Triton inside.
        assert len(traces) == 2, [t[0].trace_id for t in traces]
        batch_trace = traces[1]
        batch = next(s for s in batch_trace if "messaging.batch.message_count" in s.attributes)
        assert (own[0].trace_id, worker_span.span_id) in batch.links
        assert batch.attributes["messaging.batch.message_count"] >= 1
        grpc = next(s for s in batch_trace if s.kind == "CLIENT")
        assert grpc.parent_id == batch.span_id
        assert grpc.attributes["rpc.method"] == GRPC_INFER
        triton = [s for s in batch_trace if s.service == "triton"]
        assert triton, "Triton's spans did not join the batch trace"
        for want in batch_spans(topics):
            assert _has(batch_trace, want), (want, sorted({(s.service, s.name) for s in triton}))
        root = next(s for s in triton if s.name == "InferRequest")
        assert root.parent_id == grpc.span_id, "Triton's server span is a child of our client span"

    # Results and telemetry carry the context on: a consumer continues the trace.
    own_trace = {r.request_id: found[r.request_id][0][0].trace_id for r in requests}
    batch_traces = {found[r.request_id][1][0].trace_id for r in requests}
    carried = await _trace_headers(kafka, [topics.results, topics.telemetry])
    # A request's telemetry rides in its batch's event, which carries the batch's trace
    # (the batch span links to every request's context).
    batch_trace_of = {r.request_id: found[r.request_id][1][0].trace_id for r in requests}
    for request in requests:
        rid = request.request_id
        assert own_trace[rid] in carried[topics.results].get(rid, [])
        assert batch_trace_of[rid] in carried[topics.telemetry].get(rid, [])
    assert batch_traces <= set(carried[topics.telemetry].get("", []))

    # No request content anywhere in what the collector received or the worker logged.
    raw = observed.traces_file.read_text() + worker_process.log_path.read_text()
    for text in secrets:
        assert text not in raw and text.split()[2] not in raw

    # The worker's Prometheus endpoint serves its metrics.
    exposition = await asyncio.to_thread(_scrape, worker_process.metrics_port)
    for name in (
        "messaging_process_duration_seconds_bucket",
        "sg_batch_size",
        "sg_queue_wait_seconds_bucket",
        "sg_results_total",
        "sg_batch_padding",
        "sg_inflight_cost",
        "sg_backend_duration_seconds_bucket",
    ):
        assert name in exposition, name
    assert 'sg_status="ok"' in exposition


async def test_a_trace_begun_by_a_plain_kafka_producer_reaches_router_worker_and_triton(
    observed: Observed,
    worker_process: TracedWorker,
    any_router: bool,
    kafka: KafkaSettings,
    topics: TopicSettings,
) -> None:
    """A non-sluicegate producer (plain aiokafka, as kcat or kafkajs would) with a
    hand-made W3C `traceparent`: the router (when it traces), worker and Triton
    spans join its trace; a router whose tracing is off passes the context on."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    rid = uuid.uuid4().hex
    value = msgpack.packb({"request_id": rid, "model": MODEL, "texts": ["from a plain producer"]})
    hdrs = [("sg-schema", b"1"), ("traceparent", f"00-{trace_id}-{span_id}-01".encode())]
    results = AIOKafkaConsumer(**kafka.client_kwargs())
    await results.start()
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        parts = await wait_for_partitions(kafka, topics.results, timeout=30)
        results.assign(parts)
        await results.seek_to_end(*parts)
        for tp in parts:  # fix the start position before the request goes out
            await results.position(tp)
        await producer.send_and_wait(topics.requests, value, key=rid.encode(), headers=hdrs)
        answer = None
        async with asyncio.timeout(120):
            while answer is None:
                batches = await results.getmany(timeout_ms=500)
                for rec in (r for recs in batches.values() for r in recs):
                    if rec.key == rid.encode():
                        answer = decode_result(rec.value, list(rec.headers))
    finally:
        await producer.stop()
        await results.stop()
    assert answer is not None and answer.status is Status.OK, answer

    deadline = time.monotonic() + 60
    while True:
        traces = request_traces(load_spans(observed.traces_file), rid)
        own = traces[0] if traces else []
        linked = [s for t in traces[1:] for s in t]
        if (_has(own, (WORKER, f"process {topics.work(MODEL, 'cpu')}", "CONSUMER"))
                and _has(linked, ("triton", "InferRequest", "SERVER"))) or (
                time.monotonic() > deadline):  # fmt: skip
            break
        await asyncio.sleep(0.5)
    assert own, f"no spans for {rid}"
    assert {s.trace_id for s in own} == {trace_id}, "the producer's trace id was not kept"
    worker_span = next(s for s in own if s.service == WORKER and s.kind == "CONSUMER")
    routers = [s for s in own if s.service == ROUTER]
    if any_router:
        [router_span] = routers
        assert router_span.parent_id == span_id, "the router span continues the producer's span"
        assert worker_span.parent_id == router_span.span_id
    else:
        assert not routers
        assert worker_span.parent_id == span_id, "the router passed the producer's context on"
    for want in batch_spans(topics):
        assert _has(linked, want), (want, sorted({(s.service, s.name) for s in linked}))


def test_trace_command_prints_the_tree(observed: Observed) -> None:
    spans = load_spans(observed.traces_file)
    rid = next(s.attributes["sg.request_id"] for s in spans if "sg.request_id" in s.attributes)
    out = subprocess.run(
        [sys.executable, "-m", "sluicegate", "trace", rid, "--file", str(observed.traces_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for needle in ("send ", "process ", GRPC_INFER, "linked trace (batch)", "triton", rid):
        assert needle in out.stdout, (needle, out.stdout)
    assert json.dumps(rid)[1:-1] in out.stdout


async def test_triton_serves_the_metrics_the_dashboard_queries(stack: LocalStack) -> None:
    from ..unit.test_dashboards import TRITON_METRICS

    exposition = await asyncio.to_thread(_scrape, stack.settings.triton_metrics_port)
    missing = {name for name in TRITON_METRICS if f"\n{name}{{" not in exposition}
    assert not missing, missing


def test_collector_configs_validate(observed: Observed, repo_root: Path) -> None:
    """compose's collector config and the generated local one pass the collector's own check."""
    binary = collector_binary(CACHE_DIR)
    local = observed.collector.config.state_dir / "otelcol.yaml"
    forwarding = observed.collector.config.state_dir / "forwarding.yaml"
    onward = replace(observed.collector.config, forward_endpoint="127.0.0.1:4317")
    forwarding.write_text(yaml.safe_dump(collector_config(onward)))
    assert "otlp_grpc" in forwarding.read_text()
    for config in (repo_root / "compose" / "otel-collector.yaml", local, forwarding):
        out = subprocess.run(
            [str(binary), "validate", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, (config, out.stderr[-2000:])
    broken = observed.collector.config.state_dir / "broken.yaml"
    broken.write_text(local.read_text().replace("file/traces", "flie/traces"))
    out = subprocess.run(
        [str(binary), "validate", "--config", str(broken)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0, "validate accepted an unknown exporter"
