"""The stack a chaos run owns: its own Kafka (one node or three), Triton, routers, workers.

Everything binds free loopback ports under one state dir, so a chaos run
never touches `sluicegate up`'s stack. Triton serves only `text-embed` (cheap,
fast to load) and honours the chaos delay knob (``inference/triton/_chaos``).
Workers and routers are `sluicegate worker` / `sluicegate router` processes,
each in its own process group, so `kill9` is a real `kill -9` mid-batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sluicegate.inference.triton._chaos import DELAY_ENV
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.settings import TopicSettings

from ..models.build import MANIFEST_NAME, build_repository
from ..stack.kafka import KafkaLocalConfig, LocalKafka
from ..stack.process import ManagedProcess, StackError, free_port, wait_until
from ..stack.triton import LocalTriton, TritonLocalConfig

MODEL = "text-embed"


class _SlowableTriton(LocalTriton):
    """LocalTriton with the chaos delay knob switched on (only chaos runs start this)."""

    def __init__(self, config: TritonLocalConfig, *, delay_file: Path) -> None:
        super().__init__(config)
        self.delay_file = delay_file

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()
        env[DELAY_ENV] = str(self.delay_file)
        return argv, env


@dataclass(kw_only=True)
class WorkerProc:
    name: str
    process: ManagedProcess
    ready: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_offset: int = 0  # where this run's part of the (appended) log starts


@dataclass(kw_only=True)
class ChaosStack:
    root: Path  # state of this run: broker data, logs, pid files
    cache_dir: Path  # jars, Triton backend copy, model repository (shared)
    brokers: int = 1
    workers: dict[str, WorkerProc] = field(default_factory=dict)
    routers: dict[str, WorkerProc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.delay_file = self.root / "triton-delay-s"
        self.delay_file.write_text("0")
        # One node keeps its files in kafka/, a cluster's nodes in kafka/kafka-<id>/.
        self.kafka = LocalKafka(
            KafkaLocalConfig.cluster(
                state_dir=self.root / "kafka",
                cache_dir=self.cache_dir,
                size=self.brokers,
                heap="512m" if self.brokers == 1 else "384m",
            )
        )
        repo = self.root / "model-repository"
        self.triton = _SlowableTriton(
            TritonLocalConfig(
                repository=repo,
                state_dir=self.root / "triton",
                cache_dir=self.cache_dir,
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
            ),
            delay_file=self.delay_file,
        )
        self.extra_env: dict[str, str] = {}

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    def kafka_settings(self) -> KafkaSettings:
        return self.kafka.settings()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        full = build_repository(self.cache_dir / "model-repository")
        repo = self.triton.config.repository
        repo.mkdir(parents=True, exist_ok=True)
        link = repo / MODEL
        if not link.exists():
            link.symlink_to(full / MODEL, target_is_directory=True)
        # Each model checks its artifacts against the repository's sha256 manifest.
        manifest = repo / MANIFEST_NAME
        if not manifest.exists():
            manifest.symlink_to(full / MANIFEST_NAME)
        self.kafka.start(timeout=120)
        self.triton.start(timeout=240)

    def stop(self) -> None:
        for router in self.routers.values():
            self.stop_worker(router.name, grace=20)
        for worker in self.workers.values():
            self.stop_worker(worker.name, grace=20)
        self.triton.stop(grace=10)
        self.kafka.stop(grace=20)

    # -- workers ---------------------------------------------------------------

    def start_worker(
        self, name: str, *, topics: TopicSettings, group: str, mode: str, wait: bool = True
    ) -> WorkerProc:
        env = {"SLUICEGATE_GROUP_ID": group, **self._env(topics, mode)}
        return self._start(self.workers, name, ["worker", "--model", MODEL], env, wait=wait)

    def start_router(
        self, name: str, *, topics: TopicSettings, group: str, mode: str, wait: bool = True
    ) -> WorkerProc:
        """A `sluicegate router` in group `group`, `mode` delivery, on the run's topics."""
        env = {"SLUICEGATE_ROUTER_GROUP_ID": group, **self._env(topics, mode)}
        return self._start(self.routers, name, ["router"], env, wait=wait)

    def _env(self, topics: TopicSettings, mode: str) -> dict[str, str]:
        names = topics.as_env()
        return {
            "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "SLUICEGATE_TRITON__URL": self.triton.grpc_url,
            # The worker reads which versions and precisions Triton serves (model-config,
            # an admin API on the local Triton).
            "SLUICEGATE_TRITON__ADMIN_KEY": self.triton.admin_key(),
            "SLUICEGATE_TRITON__TIMEOUT_S": "60",
            **names,
            "SLUICEGATE_DELIVERY": mode,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def _start(
        self,
        procs: dict[str, WorkerProc],
        name: str,
        command: list[str],
        extra: dict[str, str],
        *,
        wait: bool,
    ) -> WorkerProc:
        proc = procs.get(name)
        if proc is None:
            process = ManagedProcess(name=name, state_dir=self.root / "workers")
            proc = WorkerProc(
                name=name,
                process=process,
                ready=self.root / "workers" / f"{name}.ready",
                log_offset=process.log_path.stat().st_size if process.log_path.exists() else 0,
            )
            procs[name] = proc
        proc.ready.unlink(missing_ok=True)
        env = {**os.environ, **extra}
        argv = [sys.executable, "-m", "sluicegate", *command]
        proc.popen = proc.process.start([*argv, "--ready-file", str(proc.ready)], env=env)
        proc.starts += 1
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: WorkerProc, timeout: float = 120) -> None:
        popen = proc.popen
        wait_until(
            proc.ready.exists,
            timeout=timeout,
            what=f"chaos process {proc.name}",
            alive=lambda: popen is not None and popen.poll() is None,
            log_path=proc.process.log_path,
        )

    def _proc(self, name: str) -> WorkerProc:
        return self.workers[name] if name in self.workers else self.routers[name]

    def kill9(self, name: str) -> None:
        """`kill -9` a worker's or router's process group and reap it (no drain, no commit)."""
        proc = self._proc(name)
        pid = proc.process.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait(timeout=30)
            proc.popen = None
        proc.process.pid_path.unlink(missing_ok=True)

    def stop_worker(self, name: str, *, grace: float = 45) -> None:
        """SIGTERM: the worker (or router) drains and commits; SIGKILL after `grace` seconds."""
        proc = self._proc(name)
        proc.process.stop(grace=grace)
        if proc.popen is not None:
            proc.popen.wait(timeout=10)
            proc.popen = None

    def running_workers(self) -> list[str]:
        return [n for n, w in self.workers.items() if w.popen is not None]

    def running_routers(self) -> list[str]:
        return [n for n, r in self.routers.items() if r.popen is not None]

    def worker_rss_mb(self) -> float:
        """Largest resident set of a live worker process, MiB."""
        best = 0.0
        for worker in self.workers.values():
            if worker.popen is None:
                continue
            try:
                best = max(best, psutil.Process(worker.popen.pid).memory_info().rss / 2**20)
            except psutil.Error:
                continue
        return best

    def rebalances(self) -> int:
        """Partition assignments logged by all workers so far (each join counts once)."""
        count = 0
        for worker in self.workers.values():
            try:
                with worker.process.log_path.open("rb") as log:
                    log.seek(worker.log_offset)
                    count += log.read().count(b" assigned [")
            except OSError:
                continue
        return count

    # -- faults on the servers ----------------------------------------------------

    def restart_broker(self) -> None:
        self.kafka.stop(grace=30)
        self.kafka.start(timeout=120)

    def kill_triton(self) -> None:
        pid = self.triton.pid()
        if pid is None:
            raise StackError("Triton is not running")
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.triton.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.triton.stop(grace=1)

    def start_triton(self) -> None:
        self.triton.start(timeout=240)

    def slow_triton(self, seconds: float) -> None:
        self.delay_file.write_text(f"{seconds}")
