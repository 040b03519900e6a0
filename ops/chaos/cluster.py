"""A local 3-node Kafka cluster (KRaft, combined broker + controller nodes) for chaos runs.

Three processes from the same jars as :class:`~sluicegate.ops.stack.kafka.LocalKafka`,
each its own state dir and ports on loopback, all three in the controller
quorum. Internal topics get replication factor 3 and min.insync.replicas 2,
so a topic created with RF 3 survives one node being killed while producers
use acks=all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from sluicegate.ops.stack.kafka import (
    _FAST_START_FLAGS,
    _LOG4J,
    KafkaLocalConfig,
    _new_cluster_id,
    ensure_installed,
)
from sluicegate.ops.stack.process import (
    ManagedProcess,
    StackError,
    free_port,
    require_binary,
    wait_until,
)


@dataclass(frozen=True, kw_only=True)
class _Node:
    node_id: int
    port: int
    controller_port: int
    state_dir: Path

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(name="kafka", state_dir=self.state_dir)


class LocalCluster:
    """`size` Kafka nodes on free loopback ports; `kill`/`start_node` for fault injection."""

    def __init__(self, *, state_dir: Path, cache_dir: Path, size: int = 3) -> None:
        self._cache_dir = cache_dir
        self.nodes = [
            _Node(
                node_id=i + 1,
                port=free_port(),
                controller_port=free_port(),
                state_dir=state_dir / f"kafka-{i + 1}",
            )
            for i in range(size)
        ]
        self._popen: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, *, timeout: float = 120) -> None:
        cfg = KafkaLocalConfig(state_dir=self.nodes[0].state_dir, cache_dir=self._cache_dir)
        libs = ensure_installed(cfg)
        cluster_id = _new_cluster_id()
        for node in self.nodes:
            props = self._write_config(node)
            result = subprocess.run(
                [
                    *self._jvm(node, libs),
                    *("kafka.tools.StorageTool", "format", "-t", cluster_id),
                    *("-c", str(props), "--ignore-formatted"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(f"formatting node {node.node_id} failed: {result.stderr[-2000:]}")
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        wait_until(self._all_listed, timeout=timeout, what="3-node Kafka cluster")

    def start_node(self, node_id: int, *, wait: bool = True) -> None:
        node = self.nodes[node_id - 1]
        cfg = KafkaLocalConfig(state_dir=node.state_dir, cache_dir=self._cache_dir)
        jvm = self._jvm(node, ensure_installed(cfg))
        argv = [*jvm, "-Xmx384m", *_FAST_START_FLAGS, "kafka.Kafka", str(self._props(node))]
        self._popen[node_id] = node.process.start(argv, cwd=node.state_dir)
        if wait:
            wait_until(self._all_listed, timeout=120, what=f"Kafka node {node_id} rejoining")

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no clean shutdown), and reap it."""
        pid = self.nodes[node_id - 1].process.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        popen = self._popen.pop(node_id, None)
        if popen is not None:
            popen.wait(timeout=30)
        self.nodes[node_id - 1].process.pid_path.unlink(missing_ok=True)

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop(grace=20)
            popen = self._popen.pop(node.node_id, None)
            if popen is not None:
                popen.wait(timeout=10)

    def _jvm(self, node: _Node, libs: Path) -> list[str]:
        java = require_binary("java", hint="Install a Java 17+ runtime.")
        return [
            java,
            f"-Dlog4j.configuration={_LOG4J.as_uri()}",
            f"-Dkafka.logs.dir={node.state_dir / 'logs'}",
            "-cp",
            f"{libs}/*",
        ]

    def _props(self, node: _Node) -> Path:
        return node.state_dir / "server.properties"

    def _write_config(self, node: _Node) -> Path:
        (node.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        server = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.state_dir / "data"),
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "num.partitions": "3",
        }
        path = self._props(node)
        path.write_text("".join(f"{k}={v}\n" for k, v in server.items()))
        return path

    def _all_listed(self) -> bool:
        async def probe() -> bool:
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
            )
            try:
                await client.bootstrap()
                return len(client.cluster.brokers()) == len(self.nodes)
            except KafkaError:
                return False
            finally:
                await client.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, probe()).result()


async def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The node id leading `topic`[`partition`] now."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    try:
        await client.bootstrap()
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(_tp(topic, partition))
    finally:
        await client.close()
    if leader is None or leader < 0:
        raise StackError(f"{topic}[{partition}] has no leader")
    return int(leader)


def _tp(topic: str, partition: int) -> object:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)
