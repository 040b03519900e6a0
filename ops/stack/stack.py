"""`sluicegate up / status / down`: the whole local stack in the background.

`up` starts, in order: the Kafka broker, Triton on a freshly built model
repository, the topics, and one worker process per model; it returns once
every part is ready. Everything it starts is recorded in the state dir
(`stack.json`, one pid and log file per part), so `status` and `down` work
from any shell. `down` stops workers first (they drain and commit), then
Triton, then the broker, and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.catalog import CATALOG
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.topology import (
    compacted_topics,
    default_topics,
    ensure_topics,
    streams_topics,
)

from ..models.build import build_repository
from .collector import CollectorConfig, LocalCollector, otel_env, triton_trace_args
from .kafka import KafkaLocalConfig, LocalKafka
from .process import ManagedProcess, StackError, free_port, pid_alive, port_is_open, wait_until
from .services import SERVICES, StreamsServices
from .triton import LocalTriton, TritonLocalConfig

Progress = Callable[[str], None]


class StackSettings(BaseSettings):
    """Where the local stack keeps its files and which loopback ports it binds."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    state_dir: Path = Path(".state")
    cache_dir: Path = Path(".cache")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    # Address Triton binds; 0.0.0.0 inside a container (compose/base.yaml).
    triton_host: str = "127.0.0.1"
    # Prometheus /metrics of the telemetry rollup process (127.0.0.1).
    metrics_port: int = 9464
    models: list[str] = Field(default_factory=lambda: list(CATALOG))
    topics: TopicSettings = TopicSettings()
    # `up --observability`: an OpenTelemetry Collector; Triton and workers trace into it.
    observability: bool = False
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    # OTLP/gRPC endpoint the collector forwards to (e.g. a Jaeger), if any.
    otlp_forward: str | None = None
    # Also serve text-embed v3, a deliberately broken version (fails on ~half
    # of the inputs): the canary the automatic-rollback test routes to.
    rollback_drill: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def triton_url(self) -> str:
        return f"127.0.0.1:{self.triton_grpc_port}"

    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)


@dataclass(frozen=True)
class PartStatus:
    name: str
    pid: int | None
    healthy: bool
    detail: str


class LocalStack:
    def __init__(self, settings: StackSettings, *, progress: Progress | None = None) -> None:
        self.settings = settings
        self._say = progress or (lambda _msg: None)
        state = settings.state_dir.resolve()
        cache = settings.cache_dir.resolve()
        self.kafka = LocalKafka(
            KafkaLocalConfig(
                state_dir=state / "kafka",
                cache_dir=cache,
                port=settings.kafka_port,
                controller_port=settings.kafka_controller_port,
            )
        )
        self.repository = cache / "model-repository"
        self.collector = LocalCollector(
            CollectorConfig(
                state_dir=state / "otelcol",
                cache_dir=cache,
                grpc_port=settings.otlp_grpc_port,
                http_port=settings.otlp_http_port,
                forward_endpoint=settings.otlp_forward,
            )
        )
        traced = triton_trace_args(self.collector.config) if settings.observability else ()
        self.triton = LocalTriton(
            TritonLocalConfig(
                host=settings.triton_host,
                repository=self.repository,
                state_dir=state / "triton",
                cache_dir=cache,
                http_port=settings.triton_http_port,
                grpc_port=settings.triton_grpc_port,
                metrics_port=settings.triton_metrics_port,
                extra_args=traced,
            )
        )
        self.state_dir = state
        self.metrics_ports: dict[str, int] = {}  # worker model -> its Prometheus port
        self.streams = StreamsServices(state_dir=state)

    def worker(self, model: str) -> ManagedProcess:
        return ManagedProcess(name=f"worker-{model}", state_dir=self.state_dir / "workers")

    def ready_file(self, model: str) -> Path:
        return self.state_dir / "workers" / f"worker-{model}.ready"

    # -- up ---------------------------------------------------------------

    def up(self, *, models: Sequence[str] | None = None, timeout: float = 240) -> None:
        """Start every part not yet running; on failure stop what this call started."""
        s = self.settings
        models = list(models or s.models)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started: list[Callable[[], object]] = []
        try:
            if s.observability and not self.collector.is_running():
                self._say(f"starting the OpenTelemetry Collector on :{s.otlp_grpc_port} (OTLP)")
                self.collector.start(progress=self._say)
                started.append(self.collector.stop)
            if not self.kafka.is_running():
                self._say(f"starting Kafka on {s.bootstrap_servers}")
                self.kafka.start(progress=self._say)
                started.append(self.kafka.stop)
            if not self.triton.is_running():
                self._say("building the model repository")
                build_repository(self.repository, drill=s.rollback_drill, progress=self._say)
                self._say(f"starting Triton on {s.triton_url} (gRPC)")
                self.triton.start(timeout=timeout)
                started.append(self.triton.stop)
            self._say("creating topics")
            names = default_topics(s.topics) + streams_topics(s.topics)
            asyncio.run(ensure_topics(s.kafka(), names, compacted=compacted_topics(s.topics)))
            for model in models:
                if self.worker(model).is_running():
                    continue
                self._start_worker(model)
                started.append(self.worker(model).stop)
            for model in models:
                self._say(f"waiting for the {model} worker to join its group")
                proc = self.worker(model)
                wait_until(
                    self.ready_file(model).exists,
                    timeout=120,
                    what=f"worker {model}",
                    alive=proc.is_running,
                    log_path=proc.log_path,
                )
            started += self.streams.start(self._streams_env(), self._say)
            self._write_manifest(models)
        except BaseException:
            for stop in reversed(started):
                stop()
            raise

    def _start_worker(self, model: str) -> None:
        s = self.settings
        self.ready_file(model).unlink(missing_ok=True)
        extra = {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": s.triton_url,
            # Triton runs on this host: inputs go through system shared memory,
            # registered through Triton's admin API, hence the key. In `make bench`
            # images ran 7-17 % faster than inside gRPC messages; text was within
            # run-order noise (docs/batching.md).
            "SLUICEGATE_TRITON__TRANSPORT": "shm",
            "SLUICEGATE_TRITON__ADMIN_KEY": self.triton.admin_key(),
        }
        if s.observability:
            port = free_port()
            extra |= otel_env(
                self.collector.config, service=f"sg-worker-{model}", prometheus_port=port
            )
            self.metrics_ports[model] = port
        env = _child_env(extra)
        self._say(f"starting the {model} worker")
        self.worker(model).start(
            [
                sys.executable,
                "-m",
                "sluicegate",
                "worker",
                "--model",
                model,
                "--pool",
                "cpu",
                "--ready-file",
                str(self.ready_file(model)),
            ],
            env=env,
        )

    def _streams_env(self) -> dict[str, str]:
        s = self.settings
        return _child_env(
            {
                "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
                "SLUICEGATE_METRICS_PORT": str(s.metrics_port),
            }
        )

    def _write_manifest(self, models: Sequence[str]) -> None:
        s = self.settings
        manifest: dict[str, object] = {
            "bootstrap_servers": s.bootstrap_servers,
            "triton_grpc": s.triton_url,
            "triton_http": f"127.0.0.1:{s.triton_http_port}",
            "triton_metrics": f"127.0.0.1:{s.triton_metrics_port}",
            "models": list(models),
        }
        if s.observability:
            manifest["otlp_grpc"] = self.collector.config.otlp_grpc_endpoint
            manifest["traces_file"] = str(self.collector.config.traces_file)
            manifest["worker_metrics"] = {
                m: f"http://127.0.0.1:{p}/metrics" for m, p in self.metrics_ports.items()
            }
        (self.state_dir / "stack.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def manifest_models(self) -> list[str]:
        try:
            data = json.loads((self.state_dir / "stack.json").read_text())
            return [str(m) for m in data.get("models", [])]
        except (OSError, ValueError):
            return list(self.settings.models)

    # -- status / down ----------------------------------------------------

    def status(self) -> list[PartStatus]:
        s = self.settings
        parts = [
            PartStatus(
                "kafka",
                _pid(self.kafka.is_running, "kafka", self.state_dir / "kafka"),
                port_is_open("127.0.0.1", s.kafka_port),
                s.bootstrap_servers,
            ),
            PartStatus(
                "triton",
                _pid(self.triton.is_running, "triton", self.state_dir / "triton"),
                _http_ok(f"http://127.0.0.1:{s.triton_http_port}/v2/health/ready"),
                f"{s.triton_url} (gRPC), :{s.triton_http_port} (HTTP)",
            ),
        ]
        if s.observability or self.collector.is_running():
            parts.append(
                PartStatus(
                    "otel collector",
                    _pid(self.collector.is_running, "otelcol", self.state_dir / "otelcol"),
                    port_is_open("127.0.0.1", s.otlp_grpc_port),
                    f"{self.collector.config.otlp_grpc_endpoint} (OTLP), "
                    f"{self.collector.config.traces_file}",
                )
            )
        for model in self.manifest_models():
            proc = self.worker(model)
            pid = proc.pid()
            ready = pid is not None and self.ready_file(model).exists()
            parts.append(
                PartStatus(
                    f"worker {model}",
                    pid,
                    ready,
                    f"{s.topics.work(model, 'cpu')}, log {proc.log_path}",
                )
            )
        for name in SERVICES:
            pid, ready = self.streams.healthy(name)
            where = f"/metrics on 127.0.0.1:{s.metrics_port}" if name == "telemetry" else ""
            log_path = self.streams.process(name).log_path
            parts.append(PartStatus(name, pid, ready, f"{where} log {log_path}".strip()))
        return parts

    def down(self) -> list[str]:
        """Stop every part; returns the names of those that were running."""
        stopped = self.streams.stop()
        for model in sorted({*self.manifest_models(), *CATALOG}):
            if self.worker(model).stop(grace=45):
                stopped.append(f"worker {model}")
            self.ready_file(model).unlink(missing_ok=True)
        if self.triton.stop():
            stopped.append("triton")
        if self.collector.stop():
            stopped.append("otel collector")
        if self.kafka.stop():
            stopped.append("kafka")
        return stopped


def _pid(running: Callable[[], bool], name: str, state_dir: Path) -> int | None:
    if not running():
        return None
    try:
        pid = int((state_dir / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def require_stack_dir(settings: StackSettings) -> None:
    if not settings.state_dir.exists():
        raise StackError(f"no local stack state in {settings.state_dir}; run `sluicegate up`")
