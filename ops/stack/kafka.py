"""A real Apache Kafka broker (KRaft, one node, loopback) for the local stack.

There is no docker engine on the development machines, so the broker runs
straight from the jars Maven Central publishes: `ensure_installed` fetches
`kafka_2.13` and its runtime dependencies with Maven (`kafka-pom.xml` next to
this file) into a cache dir, and :class:`LocalKafka` runs `kafka.Kafka` on them
as a background process with every file it writes under one state dir:

    <state_dir>/server.properties    rewritten on every start
    <state_dir>/data/                topic data and KRaft metadata (kept across restarts)
    <state_dir>/logs/server.log      the broker's log, INFO, rolled at 20 MB x 3
    <state_dir>/kafka.log            stdout/stderr: JVM errors and log WARN+ only
    <state_dir>/kafka.pid            see :class:`ManagedProcess`
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from sluicegate.ops.stack.process import (
    ManagedProcess,
    StackError,
    port_is_open,
    require_binary,
    wait_until,
)

#: Latest 3.9 patch release; see kafka-pom.xml for why 3.9 and not 4.x.
KAFKA_VERSION = "3.9.2"

_POM = Path(__file__).with_name("kafka-pom.xml")
_LOG4J = Path(__file__).with_name("kafka-log4j.properties")
# ops/stack/kafka.py -> the repository root (resolved: sluicegate/ops is a symlink to ops/).
_REPO_ROOT = Path(__file__).resolve().parents[2]
_NODE_ID = 1
_JAVA_HINT = "Install a Java 17+ runtime (Debian: `apt-get install openjdk-17-jre-headless`)."
_MVN_HINT = "Install Maven 3.8+ (Debian: `apt-get install maven`); it fetches the Kafka jars."

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class KafkaLocalConfig:
    """Where and how the local broker runs. All ports bind to `host` only."""

    state_dir: Path  # config, data, logs and pid file of this broker
    host: str = "127.0.0.1"
    port: int = 9092  # PLAINTEXT listener for clients
    controller_port: int = 9093  # KRaft controller listener
    cache_dir: Path = _REPO_ROOT / ".cache"  # Maven repo and jars, shared by all state dirs
    kafka_version: str = KAFKA_VERSION
    heap: str = "512m"  # JVM -Xmx value
    num_partitions: int = 3  # partitions of auto-created topics

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}" / "libs"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"


def ensure_installed(cfg: KafkaLocalConfig, *, progress: Progress | None = None) -> Path:
    """Return the dir holding the broker's jars, fetching them first if needed.

    Maven runs only when the dir lacks the `kafka_2.13` jar. The jars land in
    a scratch dir that is renamed into place once Maven succeeds, so an
    interrupted fetch never leaves a half-filled libs dir that looks installed.
    Raises :class:`StackError` naming the fix when `java` or `mvn` is missing
    or Maven fails.
    """
    libs = cfg.libs_dir
    if (libs / f"kafka_2.13-{cfg.kafka_version}.jar").is_file():
        return libs
    require_binary("java", hint=_JAVA_HINT)
    mvn = require_binary("mvn", hint=_MVN_HINT)
    scratch = libs.with_name("libs.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    _say(progress, f"Fetching Apache Kafka {cfg.kafka_version} jars with Maven into {libs} ...")
    started = time.monotonic()
    # A repo of our own under the cache: the fetch neither needs nor pollutes ~/.m2.
    repo = f"-Dmaven.repo.local={cfg.cache_dir / 'm2'}"
    version = f"-Dkafka.version={cfg.kafka_version}"
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={scratch}"]
    result = _run([mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(_POM), repo, version, *goal])
    if result.returncode != 0:
        raise StackError(
            f"Maven could not fetch Apache Kafka {cfg.kafka_version} (exit {result.returncode}). "
            "Check that Maven Central is reachable and that this version exists "
            f"(`-Dkafka.version`), then retry.\n{_tail(result)}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    scratch.rename(libs)
    _say(
        progress,
        f"Fetched {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.1f} s.",
    )
    return libs


class LocalKafka:
    """One single-node KRaft broker (combined broker + controller) on loopback.

    `start` returns only once the broker has answered a Kafka Metadata request
    listing itself, i.e. it is registered, unfenced and serving clients; on
    any failure it leaves no process behind. Topic data survives `stop` and
    the next `start`. `stop` is idempotent. Usable as a context manager.
    """

    def __init__(self, cfg: KafkaLocalConfig) -> None:
        self.cfg = cfg
        self._process = ManagedProcess(name="kafka", state_dir=cfg.state_dir)
        self._popen: subprocess.Popen[bytes] | None = None  # set only while we started it

    @property
    def bootstrap_servers(self) -> str:
        return self.cfg.bootstrap_servers

    @property
    def log_path(self) -> Path:
        """The broker's own log (stdout/stderr of the JVM is `<state_dir>/kafka.log`)."""
        return self.cfg.state_dir / "logs" / "server.log"

    def pid(self) -> int | None:
        """The broker's pid if the one this state dir started is alive."""
        return self._process.pid()

    def is_running(self) -> bool:
        return self._process.is_running()

    def start(self, *, timeout: float = 90, progress: Progress | None = None) -> None:
        """Install if needed, format storage on first start, start and wait until ready.

        Raises :class:`StackError` if a broker from this state dir already
        runs, if a port is taken, or if the broker is not ready in `timeout`
        seconds (the broker is then stopped and its log tail quoted).
        """
        cfg = self.cfg
        if (pid := self._process.pid()) is not None:
            raise StackError(
                f"Kafka is already running on {self.bootstrap_servers} (pid {pid}, "
                f"state {cfg.state_dir}); run `sluicegate down` first."
            )
        for port in (cfg.port, cfg.controller_port):
            if port_is_open(cfg.host, port):
                raise StackError(
                    f"{cfg.host}:{port} is already in use by a process sluicegate did not start; "
                    "stop it or choose other Kafka ports."
                )
        java = require_binary("java", hint=_JAVA_HINT)
        classpath = f"{ensure_installed(cfg, progress=progress)}/*"  # java expands the `*`
        server_properties = self._write_config()
        jvm = [java, f"-Dlog4j.configuration={_LOG4J.as_uri()}", "-cp", classpath]
        jvm += [f"-Dkafka.logs.dir={cfg.state_dir / 'logs'}", "-Djava.awt.headless=true"]
        if not (self._data_dir / "meta.properties").exists():
            _say(progress, f"Formatting Kafka storage in {self._data_dir} ...")
            _format_storage(jvm, server_properties)
        _say(progress, f"Starting Kafka {cfg.kafka_version} on {self.bootstrap_servers} ...")
        started = time.monotonic()
        self._popen = self._process.start(
            [*jvm, f"-Xmx{cfg.heap}", *_FAST_START_FLAGS, "kafka.Kafka", str(server_properties)],
            # The JVM drops hs_err_pid*.log into its cwd on a crash: keep it in the state dir.
            cwd=cfg.state_dir,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop(grace=5)
            raise
        _say(
            progress,
            f"Kafka ready on {self.bootstrap_servers} in {time.monotonic() - started:.1f} s.",
        )

    def stop(self, *, grace: float = 30) -> bool:
        """SIGTERM the broker (it shuts down cleanly), SIGKILL after `grace` s.

        Returns True if a broker was running.
        """
        stopped = self._process.stop(grace=grace)
        if self._popen is not None:
            # ManagedProcess counts a zombie leader as gone and leaves it unreaped; a
            # JVM's leader can turn zombie while its other threads still exit, when
            # poll() cannot reap it yet (seen here). wait() reaps for real, so the
            # Popen does not warn "still running" when collected (an error in pytest).
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=5 if stopped else 0)
            if self._popen.returncode is not None:
                self._popen = None
        return stopped

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

    @property
    def _data_dir(self) -> Path:
        return self.cfg.state_dir / "data"

    def _wait_ready(self, timeout: float) -> None:
        cfg = self.cfg
        wait_until(
            # The open-port check first keeps aiokafka from logging refused connections.
            lambda: port_is_open(cfg.host, cfg.port) and _broker_listed(cfg.bootstrap_servers),
            timeout=timeout,
            what=f"Kafka on {cfg.bootstrap_servers}",
            alive=self.is_running,
            log_path=self._process.log_path,
        )

    def _write_config(self) -> Path:
        cfg = self.cfg
        (cfg.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        voter = f"{_NODE_ID}@{cfg.host}:{cfg.controller_port}"
        server = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": voter,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._data_dir),
            # One broker: internal topics cannot have more replicas than brokers.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # Tests join groups constantly; the 3 s default delay only slows them.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "num.partitions": str(cfg.num_partitions),
        }
        server_path = cfg.state_dir / "server.properties"
        server_path.write_text("".join(f"{k}={v}\n" for k, v in server.items()))
        return server_path


# Serial GC: no concurrent G1 threads competing for 2 cores on a 512 MB heap;
# measured ~0.2 s off a ~2 s start and half the stop time. Not
# -XX:TieredStopAtLevel=1: it saved ~0.5 s more but caps the JIT at C1 for the
# broker's whole life, and benchmarks run against this broker.
_FAST_START_FLAGS = ["-XX:+UseSerialGC"]


def _format_storage(jvm: list[str], server_properties: Path) -> None:
    """Write meta.properties with a fresh cluster id (first start only)."""
    cluster_id = _new_cluster_id()
    result = _run(
        [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(server_properties)]
    )
    if result.returncode != 0:
        raise StackError(
            f"Formatting Kafka storage failed (exit {result.returncode}); delete "
            f"{server_properties.parent} to start from scratch.\n{_tail(result)}"
        )


def _new_cluster_id() -> str:
    """A cluster id as `kafka-storage random-uuid` prints one, without a JVM start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka's Uuid.randomUuid rejects these too: a leading '-' reads as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def _broker_listed(bootstrap: str) -> bool:
    """True when a Metadata request to `bootstrap` returns this node as a live broker.

    Runs its own event loop in a worker thread, so it works from sync code and
    from inside a running loop alike.
    """

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await client.bootstrap()
            return client.cluster.broker_metadata(_NODE_ID) is not None
        except KafkaError:
            return False
        finally:
            await client.close()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(asyncio.run, probe()).result()


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )


def _tail(result: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])
