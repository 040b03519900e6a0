"""A real OpenTelemetry Collector on loopback, built with the official builder (ocb).

`build_collector` installs the collector builder (`go install
go.opentelemetry.io/collector/cmd/builder@OCB_VERSION`) and builds the pinned
manifest `otelcol-builder.yaml` (OTLP receiver; batch processor; file, OTLP
and debug exporters) into `<cache_dir>/otelcol/<version>-<manifest hash>/`.
It needs Go on PATH and the Go module proxy; a later call finds the binary
and returns at once, and Go's own caches (`go env GOMODCACHE GOCACHE`) make a
rebuild in a fresh clone quick.

`LocalCollector` runs it (`ManagedProcess` "otelcol") with a generated
config: OTLP over gRPC and HTTP on the given ports, traces and metrics
written as OTLP JSON lines to `<state_dir>/traces.jsonl` and
`metrics.jsonl` (what `sluicegate trace` and the tests read), and, when
`forward_endpoint` is set, sent onward over OTLP/gRPC (to Jaeger, say).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .process import ManagedProcess, StackError, port_is_open, wait_until

__all__ = [
    "OCB_VERSION",
    "CollectorConfig",
    "LocalCollector",
    "build_collector",
    "triton_trace_args",
]

OCB_VERSION = "v0.161.0"  # the builder; the manifest pins its components to the same release
BINARY = "sg-otelcol"
# A cold build (module downloads + compile) took 5-8 min on 2 busy cores; bound it.
BUILD_TIMEOUT_S = 15 * 60
_GO_HINT = (
    "install Go 1.23+ (Debian: apt-get install golang-go, or the official tarball) "
    "and make sure the Go module proxy is reachable"
)


def _manifest() -> str:
    return resources.files(__package__).joinpath("otelcol-builder.yaml").read_text()


def collector_binary(cache_dir: Path) -> Path:
    """Where the binary for the current manifest lives (built or not)."""
    digest = hashlib.sha256(f"{OCB_VERSION}\n{_manifest()}".encode()).hexdigest()[:12]
    return cache_dir.absolute() / "otelcol" / f"{OCB_VERSION}-{digest}" / BINARY


def build_collector(cache_dir: Path, *, progress: Any = None) -> Path:
    """The collector binary, built first if this manifest was never built here.

    Safe to call from several processes at once (a file lock serialises the
    build). Raises `StackError` naming the fix when Go is missing or the
    build fails (quoting the build log).
    """
    binary = collector_binary(cache_dir)
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise StackError(
            f"`go` was not found on PATH; the collector is built from source: {_GO_HINT}"
        )
    root = binary.parent
    root.mkdir(parents=True, exist_ok=True)
    with (root.parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():  # another process built it while we waited
            return binary
        say = progress or (lambda _msg: None)
        say(f"building the OpenTelemetry Collector with ocb {OCB_VERSION} (first time: minutes)")
        log_path = root / "build.log"
        manifest = yaml.safe_load(_manifest())
        manifest["dist"]["output_path"] = str(root / "src")
        (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        env = dict(os.environ, GOBIN=str(root / "bin"), GOFLAGS="-mod=mod")
        started = time.monotonic()
        with log_path.open("w") as log:
            for argv in (
                [go, "install", f"go.opentelemetry.io/collector/cmd/builder@{OCB_VERSION}"],
                [str(root / "bin" / "builder"), "--config", str(root / "manifest.yaml")],
            ):
                try:
                    subprocess.run(
                        argv, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                        check=True, timeout=BUILD_TIMEOUT_S,
                    )  # fmt: skip
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                    raise StackError(
                        f"building the collector failed ({exc}); {_GO_HINT}. "
                        f"Log {log_path}:\n{tail}"
                    ) from None
        built = root / "src" / BINARY
        os.replace(built, binary)
        say(f"collector built in {time.monotonic() - started:.0f} s: {binary}")
        return binary


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    host: str = "127.0.0.1"
    grpc_port: int = 4317
    http_port: int = 4318
    state_dir: Path  # otelcol.pid, otelcol.log, the config and the JSON-lines output
    cache_dir: Path  # the built binary lives under it
    # OTLP/gRPC endpoint to forward everything to (e.g. Jaeger), or None.
    forward_endpoint: str | None = None

    @property
    def traces_file(self) -> Path:
        return self.state_dir.absolute() / "traces.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.state_dir.absolute() / "metrics.jsonl"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """For `OTEL_EXPORTER_OTLP_ENDPOINT` (the OTLP/gRPC exporter)."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def otlp_http_traces_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/v1/traces"


def collector_config(cfg: CollectorConfig) -> dict[str, Any]:
    """The collector's YAML config as a dict (see also compose/otel-collector.yaml)."""
    files = {
        "file/traces": {"path": str(cfg.traces_file), "flush_interval": "200ms"},
        "file/metrics": {"path": str(cfg.metrics_file), "flush_interval": "1s"},
    }
    exporters: dict[str, Any] = {**files, "debug": {"verbosity": "basic"}}
    onward: list[str] = []
    if cfg.forward_endpoint:
        exporters["otlp_grpc"] = {"endpoint": cfg.forward_endpoint, "tls": {"insecure": True}}
        onward = ["otlp_grpc"]
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{cfg.host}:{cfg.grpc_port}"},
                    "http": {"endpoint": f"{cfg.host}:{cfg.http_port}"},
                }
            }
        },
        # Short batches: `sluicegate trace` and the tests read the file seconds later.
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": exporters,
        "service": {
            # No self-metrics server: its default :8888 would clash between stacks.
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["file/traces", *onward],
                },
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["file/metrics", *onward],
                },
            },
        },
    }


def triton_trace_args(cfg: CollectorConfig) -> tuple[str, ...]:
    """Triton command-line flags: OpenTelemetry trace mode exporting to this collector.

    Every request is traced (rate 1); a request carrying W3C context in its
    gRPC metadata joins the caller's trace.
    """
    settings = (
        "mode=opentelemetry",
        "rate=1",
        "level=TIMESTAMPS",
        "count=-1",
        f"opentelemetry,url={cfg.otlp_http_traces_url}",
        "opentelemetry,resource=service.name=triton",
        "opentelemetry,bsp_schedule_delay=200",
    )
    return tuple(arg for setting in settings for arg in ("--trace-config", setting))


class LocalCollector:
    """Starts, watches and stops one collector process; `start` returns once OTLP listens."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self._process = ManagedProcess(name="otelcol", state_dir=config.state_dir)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def is_running(self) -> bool:
        return self._process.is_running()

    def start(self, *, timeout: float = 60, progress: Any = None) -> None:
        cfg = self.config
        binary = build_collector(cfg.cache_dir, progress=progress)
        for port in (cfg.grpc_port, cfg.http_port):
            if port_is_open(cfg.host, port):
                raise StackError(
                    f"port {cfg.host}:{port} is already in use; stop what holds it "
                    "(`sluicegate down`) or set SLUICEGATE_OTLP_GRPC_PORT / _HTTP_PORT"
                )
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        config_path = cfg.state_dir.absolute() / "otelcol.yaml"
        config_path.write_text(yaml.safe_dump(collector_config(cfg), sort_keys=False))
        self._proc = proc = self._process.start(
            [str(binary), "--config", str(config_path)], env=dict(os.environ), cwd=cfg.state_dir
        )
        try:
            wait_until(
                lambda: (
                    port_is_open(cfg.host, cfg.grpc_port) and port_is_open(cfg.host, cfg.http_port)
                ),
                timeout=timeout,
                what="otel collector",
                alive=lambda: proc.poll() is None,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop(grace=5)
            raise

    def stop(self, grace: float = 10) -> bool:
        """SIGTERM (the collector flushes its exporters), then SIGKILL. True if it ran."""
        stopped = self._process.stop(grace=grace)
        if self._proc is not None:
            self._proc.poll()
            self._proc = None
        return stopped


def otel_env(cfg: CollectorConfig, *, service: str, prometheus_port: int | None) -> dict[str, str]:
    """`OTEL_*` variables pointing a sluicegate process at this collector."""
    env = {
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": cfg.otlp_grpc_endpoint,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms; spans reach the file within a second
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    }
    if prometheus_port is not None:
        env["OTEL_METRICS_EXPORTER"] = "otlp,prometheus"
        env["OTEL_EXPORTER_PROMETHEUS_HOST"] = cfg.host
        env["OTEL_EXPORTER_PROMETHEUS_PORT"] = str(prometheus_port)
    return env
