"""`sluicegate up / status / down`: the whole local stack in the background.

`up` starts, in order: the Kafka broker, Triton on a freshly built model
repository, the topics, and one worker process per model; with `pools`
naming a100 too, a second Triton and worker set stand in for the A100 pool
(ops/stack/pools.py); then the router (told which pools run) and the
rollups. It returns once every part is ready. Everything it starts is
recorded in the state dir (`stack.json`, one pid and log file per part), so
`status` and `down` work from any shell. `down` stops workers first (they drain and commit), then
Triton, then the broker, and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import json
import sys
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
from .pools import StandinPool, StandinPorts, http_ok, parse_pools
from .process import ManagedProcess, StackError, free_port, pid_alive, port_is_open, wait_until
from .services import SERVICES, StreamsServices
from .supervisor import (
    PARTS_FILE,
    Part,
    describe,
    keeps_trying,
    read_parts,
    start_supervisor,
    supervisor_process,
)
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
    # Pools `up` runs: cpu, plus a100 as a stand-in on this machine's CPU.
    pools: list[str] = Field(default_factory=lambda: ["cpu"])
    # Loopback ports of the a100 stand-in's Triton.
    standin_http_port: int = 8100
    standin_grpc_port: int = 8101
    standin_metrics_port: int = 8102
    topics: TopicSettings = TopicSettings()
    # `up --observability`: an OpenTelemetry Collector; Triton and workers trace into it.
    observability: bool = False
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    # OTLP/gRPC endpoint the collector forwards to (e.g. a Jaeger), if any.
    otlp_forward: str | None = None
    # Worker processes per model on the one device (`up --workers-per-device`), in
    # one consumer group. With SLUICEGATE_BACKEND=simulated they share one simulated
    # GPU (<state>/simulated/gpu0.dev); docs/scaling.md says how many a card needs.
    workers_per_device: int = Field(default=1, ge=1)
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
        self.standin = StandinPool(
            state_dir=state,
            cache_dir=cache,
            host=settings.triton_host,
            ports=StandinPorts(
                http=settings.standin_http_port,
                grpc=settings.standin_grpc_port,
                metrics=settings.standin_metrics_port,
            ),
        )
        self.state_dir = state
        self.metrics_ports: dict[str, int] = {}  # worker model -> its Prometheus port
        self.streams = StreamsServices(state_dir=state)
        self.supervisor_dir = state / "supervisor"
        self.supervisor = supervisor_process(self.supervisor_dir)

    def worker(self, model: str, replica: int = 0) -> ManagedProcess:
        """Replica 0 is `worker-<model>`; the others `worker-<model>-r<N>`."""
        name = f"worker-{model}" + (f"-r{replica}" if replica else "")
        return ManagedProcess(name=name, state_dir=self.state_dir / "workers")

    def ready_file(self, model: str, replica: int = 0) -> Path:
        return self.state_dir / "workers" / f"{self.worker(model, replica).name}.ready"

    def replicas(self) -> range:
        """Worker replicas per model of the running stack (its manifest), else the settings'."""
        try:
            data = json.loads((self.state_dir / "stack.json").read_text())
            return range(int(data.get("workers_per_device", 1)))
        except (OSError, ValueError):
            return range(self.settings.workers_per_device)

    # -- up ---------------------------------------------------------------

    def up(
        self,
        *,
        models: Sequence[str] | None = None,
        pools: Sequence[str] | None = None,
        timeout: float = 240,
    ) -> None:
        """Start every part not yet running; on failure stop what this call started."""
        s = self.settings
        replicas = range(s.workers_per_device)
        models = list(models or s.models)
        pools = parse_pools(pools or s.pools)
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
            if not self.supervisor.is_running():
                parts = [self._worker_part(m, r) for m in models for r in replicas]
                parts += self.streams.parts(self._streams_env(pools))
                self._say(f"starting the supervisor of {', '.join(p.name for p in parts)}")
                start_supervisor(self.supervisor_dir, parts, _child_env({}))
                started.append(self.supervisor.stop)
            # A part that dies is restarted meanwhile; one that keeps dying fails `up`.
            for model, r in ((m, r) for m in models for r in replicas):
                self._say(f"waiting for the {model} worker {r + 1}/{len(replicas)} to join")
                wait_until(
                    self.ready_file(model, r).exists,
                    timeout=120,
                    what=f"worker {model} ({r + 1}/{len(replicas)})",
                    alive=keeps_trying(self.supervisor_dir, self.worker(model, r).name),
                    log_path=self.worker(model, r).log_path,
                )
            if "a100" in pools:
                env = _child_env(
                    {
                        "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
                        "SLUICEGATE_STATE_DIR": str(self.state_dir),  # the tuned-budget file's
                    }
                )
                started += self.standin.up(models, env=env, say=self._say, timeout=timeout)
            self.streams.wait_ready(lambda name: keeps_trying(self.supervisor_dir, name))
            self._write_manifest(models, pools)
        except BaseException:
            for stop in reversed(started):
                stop()
            raise

    def _worker_part(self, model: str, replica: int = 0) -> Part:
        s = self.settings
        proc = self.worker(model, replica)
        extra = {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": s.triton_url,
            # Triton runs on this host: inputs go through system shared memory,
            # registered through Triton's admin API, hence the key. In `make bench`
            # images ran 7-17 % faster than inside gRPC messages; text was within
            # run-order noise (docs/batching.md).
            "SLUICEGATE_TRITON__TRANSPORT": "shm",
            "SLUICEGATE_TRITON__ADMIN_KEY": self.triton.admin_key(),
            # Read only with SLUICEGATE_BACKEND=simulated: every worker on the one card.
            "SLUICEGATE_SIMULATED__DEVICE_FILE": str(self.state_dir / "simulated" / "gpu0.dev"),
            # Workers read `sluicegate tune`'s file under this stack's state dir.
            "SLUICEGATE_STATE_DIR": str(self.state_dir),
        }
        if s.observability:
            port = free_port()
            extra |= otel_env(
                self.collector.config, service=f"sg-worker-{model}", prometheus_port=port
            )
            self.metrics_ports[proc.name.removeprefix("worker-")] = port
        return Part(
            name=proc.name,
            state_dir=self.state_dir / "workers",
            argv=[
                sys.executable,
                "-m",
                "sluicegate",
                "worker",
                "--model",
                model,
                "--pool",
                "cpu",
                "--ready-file",
                str(self.ready_file(model, replica)),
            ],
            env=extra | {"PYTHONUNBUFFERED": "1"},
            ready_file=self.ready_file(model, replica),
        )

    def _streams_env(self, pools: Sequence[str]) -> dict[str, str]:
        """The router's and the rollups' variables: the pools that run, and under
        `--observability` the same `OTEL_*` settings as the workers, so the router's
        `process sg.requests` span joins the client's trace (each names itself)."""
        s = self.settings
        # The router routes only to the pools that run (GPU pools first: small
        # requests still go to CPU by the routing policy).
        order = [p for p in pools if p != "cpu"] + ["cpu"]
        extra = {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "SLUICEGATE_METRICS_PORT": str(s.metrics_port),
            "SLUICEGATE_ROUTING__POOLS": json.dumps(order),
        }
        if s.observability:
            # Metrics stay on the rollups' own Prometheus port (SLUICEGATE_METRICS_PORT).
            otel = otel_env(self.collector.config, service="", prometheus_port=None)
            extra |= {k: v for k, v in otel.items() if k != "OTEL_SERVICE_NAME"}
        return _child_env(extra)

    def _write_manifest(self, models: Sequence[str], pools: Sequence[str]) -> None:
        s = self.settings
        manifest: dict[str, object] = {
            "bootstrap_servers": s.bootstrap_servers,
            "triton_grpc": s.triton_url,
            "triton_http": f"127.0.0.1:{s.triton_http_port}",
            "triton_metrics": f"127.0.0.1:{s.triton_metrics_port}",
            "models": list(models),
            "pools": list(pools),
            "workers_per_device": s.workers_per_device,
            # pid, restarts and last exit of each supervised part (supervisor.py)
            "supervised": str(self.supervisor_dir / PARTS_FILE),
        }
        if "a100" in pools:
            manifest["a100_standin"] = {
                "triton_grpc": self.standin.triton_url,
                "serves": self.standin.weights_note(),
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

    def manifest_pools(self) -> list[str]:
        try:
            data = json.loads((self.state_dir / "stack.json").read_text())
            return [str(p) for p in data.get("pools", ["cpu"])]
        except (OSError, ValueError):
            return ["cpu"]

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
                http_ok(f"http://127.0.0.1:{s.triton_http_port}/v2/health/ready"),
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
        supervised = read_parts(self.supervisor_dir)
        if supervised:
            sup = self.supervisor
            where = f"log {sup.log_path}"
            parts.append(PartStatus("supervisor", sup.pid(), sup.is_running(), where))
        replicas = self.replicas()
        for model, r in ((m, r) for m in self.manifest_models() for r in replicas):
            proc = self.worker(model, r)
            pid = proc.pid()
            ready = pid is not None and self.ready_file(model, r).exists()
            waiting = self.ready_file(model, r).with_suffix(".waiting")
            note = describe(supervised.get(proc.name), waiting if pid is not None else None)
            where = f"{s.topics.work(model, 'cpu')}, log {proc.log_path}"
            detail = f"{note}; {where}" if note else where
            name = f"worker {model}" + (f" {r + 1}/{len(replicas)}" if len(replicas) > 1 else "")
            parts.append(PartStatus(name, pid, ready, detail))
        if "a100" in self.manifest_pools():
            parts += [PartStatus(*row) for row in self.standin.status(self.manifest_models())]
        for name in SERVICES:
            pid, ready = self.streams.healthy(name)
            where = f"/metrics on 127.0.0.1:{s.metrics_port}" if name == "telemetry" else ""
            log_path = self.streams.process(name).log_path
            note = describe(supervised.get(name))
            detail = f"{note}; {where} log {log_path}" if note else f"{where} log {log_path}"
            parts.append(PartStatus(name, pid, ready, detail.strip()))
        return parts

    def down(self) -> list[str]:
        """Stop every part; returns the names of those that were running."""
        # The supervisor first (it stops its parts, router before workers): nothing restarts.
        stopped = ["supervisor"] if self.supervisor.stop(grace=120) else []
        stopped += self.streams.stop()
        stopped += self.standin.stop(sorted({*self.manifest_models(), *CATALOG}))
        replicas = range(max(len(self.replicas()), self.settings.workers_per_device))
        for model in sorted({*self.manifest_models(), *CATALOG}):
            for r in replicas:
                if self.worker(model, r).stop(grace=45):
                    stopped.append(f"worker {model}" + (f" r{r}" if r else ""))
                self.ready_file(model, r).unlink(missing_ok=True)
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


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def require_stack_dir(settings: StackSettings) -> None:
    if not settings.state_dir.exists():
        raise StackError(f"no local stack state in {settings.state_dir}; run `sluicegate up`")
