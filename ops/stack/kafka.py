"""The one launcher of real Apache Kafka brokers (KRaft, loopback) sluicegate starts.

The local stack's broker, the bench's, the SASL_SSL broker of the security
tests and the chaos runs' N-node cluster are all :class:`LocalKafka` with a
different :class:`KafkaLocalConfig` (see `kafka_config.py`). The broker runs
straight from the jars Maven Central publishes (`kafka_install.py`) as
background processes, with every file a node writes under its state dir:

    <state_dir>/server.properties    rewritten on every start
    <state_dir>/data/                topic data and KRaft metadata (kept across restarts)
    <state_dir>/logs/server.log      the broker's log, INFO, rolled at 20 MB x 3
    <state_dir>/kafka.log            stdout/stderr: JVM errors and log WARN+ only
    <state_dir>/kafka.pid            see :class:`ManagedProcess`

(a single node's state dir is the config's; a cluster's nodes each have
`<state_dir>/kafka-<id>`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from sluicegate.runtime.kafka import KafkaSettings

from .kafka_config import (
    ADMIN_USER,
    KAFKA_VERSION,
    Certificates,
    KafkaLocalConfig,
    KafkaNode,
    SaslSsl,
    server_properties,
)
from .kafka_install import JAVA_HINT, Progress, ensure_installed, run, say, tail
from .kafka_tls import make_certificates
from .process import ManagedProcess, StackError, port_is_open, require_binary, wait_until

__all__ = [
    "KAFKA_VERSION",
    "Certificates",
    "KafkaLocalConfig",
    "LocalKafka",
    "SaslSsl",
    "ensure_installed",
    "make_certificates",
]

_LOG4J = Path(__file__).with_name("kafka-log4j.properties")
# Serial GC: no concurrent G1 threads competing for 2 cores on a 512 MB heap;
# measured ~0.2 s off a ~2 s start and half the stop time. Not
# -XX:TieredStopAtLevel=1: it saved ~0.5 s more but caps the JIT at C1 for the
# broker's whole life, and benchmarks run against this broker.
_FAST_START_FLAGS = ["-XX:+UseSerialGC"]


class LocalKafka:
    """A local Kafka of one or more combined broker + controller KRaft nodes.

    `start` returns only once a Metadata request lists every node, i.e. all
    are registered, unfenced and serving clients; on any failure it leaves
    no process behind. Topic data survives `stop` and the next `start`.
    `stop` is idempotent. `kill` / `start_node` take one node down hard and
    bring it back (fault injection). Usable as a context manager.
    """

    def __init__(self, cfg: KafkaLocalConfig) -> None:
        self.cfg = cfg
        self.nodes = cfg.nodes
        self._process = {
            n.node_id: ManagedProcess(name="kafka", state_dir=n.state_dir) for n in self.nodes
        }
        self._popen: dict[int, subprocess.Popen[bytes]] = {}  # only nodes we started

    @property
    def bootstrap_servers(self) -> str:
        return self.cfg.bootstrap_servers

    @property
    def log_path(self) -> Path:
        """Node 1's own log (stdout/stderr of the JVM is `<state_dir>/kafka.log`)."""
        return self.nodes[0].state_dir / "logs" / "server.log"

    def settings(self, username: str | None = None, password: str | None = None) -> KafkaSettings:
        """Client settings for this broker; with SASL_SSL, for `username` (a SecretStr password)."""
        if self.cfg.sasl_ssl is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        return KafkaSettings.model_validate(
            {
                "bootstrap_servers": self.bootstrap_servers,
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": username,
                "sasl_password": password,
                "ssl_cafile": str(self.cfg.sasl_ssl.certificates.ca_pem),
            }
        )

    def pid(self) -> int | None:
        """Node 1's pid if the one this state dir started is alive."""
        return self._process[1].pid()

    def is_running(self) -> bool:
        """True while every node runs."""
        return all(process.is_running() for process in self._process.values())

    def start(self, *, timeout: float = 90, progress: Progress | None = None) -> None:
        """Install if needed, format storage on first start, start every node, wait until ready.

        Raises :class:`StackError` if a node from this state dir already runs,
        if a port is taken, or if the nodes are not ready in `timeout` seconds
        (they are then stopped and a log tail quoted).
        """
        cfg = self.cfg
        if (pid := self.pid()) is not None:
            raise StackError(
                f"Kafka is already running on {self.bootstrap_servers} (pid {pid}, "
                f"state {cfg.state_dir}); run `sluicegate down` first."
            )
        for node in self.nodes:
            for port in (node.port, node.controller_port):
                if port_is_open(cfg.host, port):
                    raise StackError(
                        f"{cfg.host}:{port} is already in use by a process sluicegate did not "
                        "start; stop it or choose other Kafka ports."
                    )
        cluster_id = _new_cluster_id()
        for node in self.nodes:
            properties = self._write_config(node)
            if not (node.state_dir / "data" / "meta.properties").exists():
                say(progress, f"Formatting Kafka storage in {node.state_dir / 'data'} ...")
                self._format_storage(node, properties, cluster_id, progress)
        say(progress, f"Starting Kafka {cfg.kafka_version} on {self.bootstrap_servers} ...")
        started = time.monotonic()
        try:
            for node in self.nodes:
                self._start_process(node, progress)
            self._wait_ready(timeout)
        except BaseException:
            self.stop(grace=5)
            raise
        say(
            progress,
            f"Kafka ready on {self.bootstrap_servers} in {time.monotonic() - started:.1f} s.",
        )

    def start_node(self, node_id: int, *, timeout: float = 120) -> None:
        """Start one node again (after `kill`) and wait until every node is listed."""
        self._start_process(self.nodes[node_id - 1], None)
        self._wait_ready(timeout, what=f"Kafka node {node_id} rejoining")

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no clean shutdown), and reap it."""
        process = self._process[node_id]
        if (pid := process.pid()) is not None:
            os.killpg(pid, signal.SIGKILL)
        popen = self._popen.pop(node_id, None)
        if popen is not None:
            popen.wait(timeout=30)
        process.pid_path.unlink(missing_ok=True)

    def stop(self, *, grace: float = 30) -> bool:
        """SIGTERM every node (they shut down cleanly), SIGKILL after `grace` s.

        Returns True if a node was running.
        """
        any_stopped = False
        for node_id, process in self._process.items():
            stopped = process.stop(grace=grace)
            any_stopped = any_stopped or stopped
            popen = self._popen.get(node_id)
            if popen is None:
                continue
            # ManagedProcess counts a zombie leader as gone and leaves it unreaped; a
            # JVM's leader can turn zombie while its other threads still exit, when
            # poll() cannot reap it yet (seen here). wait() reaps for real, so the
            # Popen does not warn "still running" when collected (an error in pytest).
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5 if stopped else 0)
            if popen.returncode is not None:
                del self._popen[node_id]
        return any_stopped

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- one node ---------------------------------------------------------------

    def _jvm(self, node: KafkaNode, progress: Progress | None) -> list[str]:
        java = require_binary("java", hint=JAVA_HINT)
        classpath = f"{ensure_installed(self.cfg, progress=progress)}/*"  # java expands the `*`
        jvm = [java, f"-Dlog4j.configuration={_LOG4J.as_uri()}", "-cp", classpath]
        return [*jvm, f"-Dkafka.logs.dir={node.state_dir / 'logs'}", "-Djava.awt.headless=true"]

    def _write_config(self, node: KafkaNode) -> Path:
        (node.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        path = node.state_dir / "server.properties"
        server = server_properties(self.cfg, node)
        path.write_text("".join(f"{k}={v}\n" for k, v in server.items()))
        return path

    def _format_storage(
        self, node: KafkaNode, properties: Path, cluster_id: str, progress: Progress | None
    ) -> None:
        """Write meta.properties (first start only), with the SCRAM users of a SASL_SSL broker."""
        scram: list[str] = []
        if self.cfg.sasl_ssl is not None:
            for name, password in self.cfg.sasl_ssl.scram_users().items():
                scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        tool = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)]
        result = run([*self._jvm(node, progress), *tool, *scram])
        if result.returncode != 0:
            raise StackError(
                f"Formatting Kafka storage failed (exit {result.returncode}); delete "
                f"{node.state_dir} to start from scratch.\n{tail(result)}"
            )

    def _start_process(self, node: KafkaNode, progress: Progress | None) -> None:
        argv = [*self._jvm(node, progress), f"-Xmx{self.cfg.heap}", *_FAST_START_FLAGS]
        argv += ["kafka.Kafka", str(node.state_dir / "server.properties")]
        # The JVM drops hs_err_pid*.log into its cwd on a crash: keep it in the state dir.
        self._popen[node.node_id] = self._process[node.node_id].start(argv, cwd=node.state_dir)

    def _wait_ready(self, timeout: float, *, what: str | None = None) -> None:
        cfg = self.cfg
        wait_until(
            # The open-port check first keeps aiokafka from logging refused connections.
            lambda: all(port_is_open(cfg.host, n.port) for n in self.nodes) and self._all_listed(),
            timeout=timeout,
            what=what or f"Kafka on {self.bootstrap_servers}",
            alive=self.is_running,
            log_path=self._process[1].log_path,
        )

    def _all_listed(self) -> bool:
        """True when a Metadata request returns every node as a live broker.

        Runs its own event loop in a worker thread, so it works from sync code
        and from inside a running loop alike.
        """
        tls = self.cfg.sasl_ssl is not None
        kwargs = (
            self.settings(*ADMIN_USER).client_kwargs()
            if tls
            else {"bootstrap_servers": self.bootstrap_servers}
        )

        async def probe() -> bool:
            client = AIOKafkaClient(request_timeout_ms=5000, **kwargs)
            try:
                await client.bootstrap()
                listed = client.cluster.broker_metadata
                return all(listed(node.node_id) is not None for node in self.nodes)
            except KafkaError:
                return False
            finally:
                await client.close()
                if tls:
                    # TLS transports finish closing on a later loop turn; asyncio.run
                    # would otherwise close the loop under them (ResourceWarning).
                    await asyncio.sleep(0.2)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-probe") as pool:
            return pool.submit(asyncio.run, probe()).result()


def _new_cluster_id() -> str:
    """A cluster id as `kafka-storage random-uuid` prints one, without a JVM start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka's Uuid.randomUuid rejects these too: a leading '-' reads as an option.
        if not cluster_id.startswith("-"):
            return cluster_id
