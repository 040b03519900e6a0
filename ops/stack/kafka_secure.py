"""A local Kafka broker that only speaks SASL_SSL with SCRAM-SHA-512 (for the security tests).

Same jars and process handling as :class:`~sluicegate.ops.stack.kafka.LocalKafka`;
the differences: the client listener is SASL_SSL (PKCS12 keystore from
:func:`make_certificates`, made with the JDK's `keytool`), the SCRAM users
are created when the storage is formatted (`kafka-storage format
--add-scram`, the KRaft way: there is no ZooKeeper to run
`kafka-configs --alter` against before the first start), and brokers talk
to each other over the same listener as the `admin` user.
"""

from __future__ import annotations

import asyncio
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from sluicegate.runtime.kafka import KafkaSettings

from .kafka import _FAST_START_FLAGS, _LOG4J, KafkaLocalConfig, _new_cluster_id, ensure_installed
from .process import ManagedProcess, StackError, port_is_open, require_binary, wait_until

_ADMIN = ("admin", "admin-secret")  # the inter-broker principal, local only


@dataclass(frozen=True, kw_only=True)
class Certificates:
    keystore: Path  # PKCS12: the broker's key and self-signed certificate
    truststore: Path  # PKCS12: that certificate, trusted
    ca_pem: Path  # the certificate in PEM, for clients' `ssl_cafile`
    password: str


def make_certificates(directory: Path, *, password: str = "changeit") -> Certificates:
    """A self-signed certificate for 127.0.0.1 / localhost, valid 2 days, via `keytool`."""
    keytool = require_binary("keytool", hint="Install a Java 17+ JDK/JRE (it ships keytool).")
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        keystore=directory / "broker.p12",
        truststore=directory / "trust.p12",
        ca_pem=directory / "ca.pem",
        password=password,
    )
    for path in (certs.keystore, certs.truststore, certs.ca_pem):
        path.unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", password]
    san = "SAN=ip:127.0.0.1,dns:localhost"
    steps = [
        [
            *("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048"),
            *("-validity", "2", "-dname", "CN=localhost", "-ext", san),
            *("-keystore", str(certs.keystore), "-keypass", password, *store),
        ],
        [
            *("-exportcert", "-rfc", "-alias", "broker", "-keystore", str(certs.keystore)),
            *("-file", str(certs.ca_pem), *store),
        ],
        [
            *("-importcert", "-noprompt", "-alias", "ca", "-file", str(certs.ca_pem)),
            *("-keystore", str(certs.truststore), *store),
        ],
    ]
    for step in steps:
        done = subprocess.run([keytool, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"keytool {step[0]} failed: {done.stdout}{done.stderr}")
    return certs


class SecureKafka:
    """One KRaft node whose only client listener is SASL_SSL + SCRAM-SHA-512."""

    def __init__(
        self,
        *,
        state_dir: Path,
        cache_dir: Path,
        port: int,
        controller_port: int,
        certificates: Certificates,
        users: dict[str, str],
    ) -> None:
        self._cfg = KafkaLocalConfig(
            state_dir=state_dir, cache_dir=cache_dir, port=port, controller_port=controller_port
        )
        self._certs = certificates
        self._users = {_ADMIN[0]: _ADMIN[1], **users}
        self._process = ManagedProcess(name="kafka", state_dir=state_dir)
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return self._cfg.bootstrap_servers

    def settings(self, username: str, password: str) -> KafkaSettings:
        """Client settings for `username` (the password becomes a SecretStr)."""
        return KafkaSettings.model_validate(
            {
                "bootstrap_servers": self.bootstrap_servers,
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": username,
                "sasl_password": password,
                "ssl_cafile": str(self._certs.ca_pem),
            }
        )

    def start(self, *, timeout: float = 120) -> None:
        cfg = self._cfg
        for port in (cfg.port, cfg.controller_port):
            if port_is_open(cfg.host, port):
                raise StackError(f"{cfg.host}:{port} is already in use; choose other ports")
        java = require_binary("java", hint="Install a Java 17+ runtime.")
        libs = ensure_installed(cfg)
        jvm = [java, f"-Dlog4j.configuration={_LOG4J.as_uri()}", "-cp", f"{libs}/*"]
        jvm += [f"-Dkafka.logs.dir={cfg.state_dir / 'logs'}"]
        props = self._write_config()
        if not (cfg.state_dir / "data" / "meta.properties").exists():
            scram = []
            for name, password in self._users.items():
                scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
            fmt = [*jvm, "kafka.tools.StorageTool", "format", "-t", _new_cluster_id()]
            done = subprocess.run(
                [*fmt, "-c", str(props), *scram], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise StackError(f"formatting the SASL_SSL broker failed: {done.stderr[-2000:]}")
        argv = [*jvm, "-Xmx384m", *_FAST_START_FLAGS, "kafka.Kafka", str(props)]
        self._popen = self._process.start(argv, cwd=cfg.state_dir)
        try:
            wait_until(
                self._ready,
                timeout=timeout,
                what=f"SASL_SSL Kafka on {self.bootstrap_servers}",
                alive=self._process.is_running,
                log_path=self._process.log_path,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._process.stop(grace=20)
        if self._popen is not None:
            self._popen.wait(timeout=10)
            self._popen = None

    def _ready(self) -> bool:
        if not port_is_open(self._cfg.host, self._cfg.port):
            return False
        kwargs = self.settings(*_ADMIN).client_kwargs()

        async def probe() -> bool:
            client = AIOKafkaClient(request_timeout_ms=5000, **kwargs)
            try:
                await client.bootstrap()
                return bool(client.cluster.brokers())
            except KafkaError:
                return False
            finally:
                await client.close()
                # TLS transports finish closing on a later loop turn; asyncio.run
                # would otherwise close the loop under them (ResourceWarning).
                await asyncio.sleep(0.2)

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, probe()).result()

    def _write_config(self) -> Path:
        cfg, certs = self._cfg, self._certs
        (cfg.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        admin, secret = _ADMIN
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{admin}" password="{secret}";'
        )
        server = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"SASL_SSL://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
            "advertised.listeners": f"SASL_SSL://{cfg.host}:{cfg.port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
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
            "log.dirs": str(cfg.state_dir / "data"),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "3",
        }
        path = cfg.state_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in server.items()))
        return path
