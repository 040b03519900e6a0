"""What a local Kafka runs as, and the server.properties of each of its nodes.

One :class:`KafkaLocalConfig` describes every broker sluicegate starts: the
local stack's single node, the SASL_SSL node of the security tests
(`sasl_ssl=`) and the chaos runs' N-node cluster (`peers=`, or
:meth:`KafkaLocalConfig.cluster`). Every node is a combined KRaft broker +
controller on loopback; :func:`server_properties` is pure, so what a
configuration writes can be read without starting a JVM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .process import free_port

#: Latest 3.9 patch release; see kafka-pom.xml for why 3.9 and not 4.x.
KAFKA_VERSION = "3.9.2"

# ops/stack/kafka_config.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: The inter-broker SCRAM principal of a SASL_SSL broker (local only).
ADMIN_USER = ("admin", "admin-secret")


@dataclass(frozen=True, kw_only=True)
class Certificates:
    keystore: Path  # PKCS12: the broker's key and self-signed certificate
    truststore: Path  # PKCS12: that certificate, trusted
    ca_pem: Path  # the certificate in PEM, for clients' `ssl_cafile`
    password: str


@dataclass(frozen=True, kw_only=True)
class SaslSsl:
    """The client listener speaks only SASL_SSL with SCRAM-SHA-512.

    The users (and :data:`ADMIN_USER`, which brokers use between themselves)
    are created when the storage is formatted (`kafka-storage format
    --add-scram`, the KRaft way: there is no ZooKeeper to run
    `kafka-configs --alter` against before the first start).
    """

    certificates: Certificates
    users: Mapping[str, str] = field(default_factory=dict)  # username -> password
    # KRaft's StandardAuthorizer with allow.everyone.if.no.acl.found=false: only
    # ACLs (ops/acls.py) let a user do anything; ADMIN_USER is a super user.
    authorizer: bool = False

    def scram_users(self) -> dict[str, str]:
        return {ADMIN_USER[0]: ADMIN_USER[1], **self.users}


@dataclass(frozen=True, kw_only=True)
class KafkaNode:
    """One process of a local Kafka: its KRaft node id, ports and state dir."""

    node_id: int
    port: int  # client listener
    controller_port: int  # KRaft controller listener
    state_dir: Path  # server.properties, data/, logs/, kafka.pid, kafka.log


@dataclass(frozen=True, kw_only=True)
class KafkaLocalConfig:
    """Where and how a local Kafka runs. All ports bind to `host` only.

    Node 1 listens on `port` / `controller_port`; each entry of `peers` adds a
    node (2, 3, ...) with its own (port, controller_port). A single node keeps
    its files straight under `state_dir`; the nodes of a cluster each under
    `state_dir/kafka-<id>`.
    """

    state_dir: Path  # config, data, logs and pid file(s)
    host: str = "127.0.0.1"
    port: int = 9092  # client listener of node 1
    controller_port: int = 9093  # KRaft controller listener of node 1
    peers: tuple[tuple[int, int], ...] = ()  # (port, controller_port) of nodes 2..N
    cache_dir: Path = _REPO_ROOT / ".cache"  # Maven repo and jars, shared by all state dirs
    kafka_version: str = KAFKA_VERSION
    heap: str = "512m"  # JVM -Xmx value, per node
    num_partitions: int = 3  # partitions of topics created without a count
    auto_create_topics: bool = True
    sasl_ssl: SaslSsl | None = None  # None: a PLAINTEXT client listener

    @classmethod
    def cluster(
        cls, *, state_dir: Path, cache_dir: Path, size: int, heap: str = "384m"
    ) -> KafkaLocalConfig:
        """`size` nodes on free loopback ports; topics are created explicitly (no auto-create).

        Internal topics get replication factor min(3, size) and min.insync.replicas
        one less, so a topic created with RF 3 survives one node being killed
        while producers use acks=all.
        """
        ports = [(free_port(), free_port()) for _ in range(size)]
        return cls(
            state_dir=state_dir,
            port=ports[0][0],
            controller_port=ports[0][1],
            peers=tuple(ports[1:]),
            cache_dir=cache_dir,
            heap=heap,
            auto_create_topics=size == 1,
        )

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}" / "libs"

    @property
    def nodes(self) -> list[KafkaNode]:
        ports = [(self.port, self.controller_port), *self.peers]
        return [
            KafkaNode(
                node_id=i,
                port=port,
                controller_port=controller,
                state_dir=self.state_dir if not self.peers else self.state_dir / f"kafka-{i}",
            )
            for i, (port, controller) in enumerate(ports, start=1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{node.port}" for node in self.nodes)

    @property
    def protocol(self) -> str:
        return "PLAINTEXT" if self.sasl_ssl is None else "SASL_SSL"


def server_properties(cfg: KafkaLocalConfig, node: KafkaNode) -> dict[str, str]:
    """The server.properties of `node` (rewritten on every start)."""
    host, protocol = cfg.host, cfg.protocol
    voters = ",".join(f"{n.node_id}@{host}:{n.controller_port}" for n in cfg.nodes)
    replicas = min(3, len(cfg.nodes))
    in_sync = max(1, replicas - 1)
    server = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "listeners": f"{protocol}://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
        "advertised.listeners": f"{protocol}://{host}:{node.port}",
        "inter.broker.listener.name": protocol,
        "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.state_dir / "data"),
        # Internal topics cannot have more replicas than brokers.
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(in_sync),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(in_sync),
        # Tests join groups constantly; the 3 s default delay only slows them.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": str(cfg.auto_create_topics).lower(),
        "num.partitions": str(cfg.num_partitions),
    }
    if cfg.sasl_ssl is not None:
        server |= _sasl_ssl_properties(cfg.sasl_ssl.certificates)
        if cfg.sasl_ssl.authorizer:
            server |= _authorizer_properties()
    return server


def _authorizer_properties() -> dict[str, str]:
    """Deny what no ACL allows; the brokers' own principals are super users.

    `User:admin` is the inter-broker SCRAM principal (and `sluicegate`'s admin);
    `User:ANONYMOUS` is what the PLAINTEXT controller listener (loopback, KRaft
    only: clients cannot use it) authenticates brokers as.
    """
    return {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER[0]};User:ANONYMOUS",
    }


def _sasl_ssl_properties(certs: Certificates) -> dict[str, str]:
    admin, secret = ADMIN_USER
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{secret}";'
    )
    return {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(certs.keystore),
        "ssl.keystore.password": certs.password,
        "ssl.key.password": certs.password,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(certs.truststore),
        "ssl.truststore.password": certs.password,
    }
