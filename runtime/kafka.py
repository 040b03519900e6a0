"""How to reach Kafka, and the aiokafka clients built from it.

`KafkaSettings` is nested by every process's settings class (worker, router,
client, CLI) and read from `SLUICEGATE_KAFKA__*` variables, e.g.
`SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`.

Client factories (none of them starts the client; the caller owns
`start()`/`stop()`):

- `idempotent_producer(kafka, ...)`: `acks="all"`, `enable_idempotence=True`.
  What every producer of requests, work records, results and control
  records uses: a retried send is never written twice.
- `transactional_producer(kafka, transactional_id=..., ...)`: the same, with
  a transactional id (exactly-once delivery).
- `producer(kafka, ...)`: no defaults beyond the connection (telemetry).
- `consumer(kafka, ...)` and `read_committed_consumer(kafka, ...)`: the
  latter skips records of aborted transactions (results of exactly_once
  workers).
- `admin_client(kafka)`.

Every producer may send records up to `max_request_size` and every consumer
fetches that much per partition, unless the caller says otherwise.

Topic metadata through public APIs only: `partitions_of(admin, topic)` looks
once; `wait_for_partitions(kafka, topic, timeout=...)` retries until the
topic exists (bounded by `timeout`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from pydantic import BaseModel, ConfigDict, SecretStr


class KafkaConnectError(ConnectionError):
    """The brokers could not be reached or refused our credentials; the message names the fix."""

    code = "kafka_unreachable"


#: What aiokafka raises when an ACL refuses an operation.
AUTHORIZATION_ERRORS: tuple[type[KafkaError], ...] = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)


class KafkaAuthorizationError(PermissionError):
    """The brokers' ACLs refused an operation; the message names the principal and the fix."""

    code = "not_authorized"


class MissingTopicError(TimeoutError):
    """A topic the process reads did not show up in time; the message names the fix."""

    code = "missing_topic"


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # SSL / SASL_SSL: the CA bundle that signed the brokers' certificates (None:
    # the system's), and a client certificate + key for mutual TLS.
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Largest record a producer may send; the broker's message.max.bytes must allow it.
    max_request_size: int = 10 * 1024 * 1024

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile is not None:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            kwargs["ssl_context"] = context
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs

    def connect_error(self, exc: BaseException) -> KafkaConnectError:
        """The error to raise when connecting failed (`exc` is the client library's)."""
        return KafkaConnectError(self.explain(exc))

    def authorization_error(self, exc: BaseException, *, what: str) -> KafkaAuthorizationError:
        """The error to raise when an ACL refused `what` (e.g. "write to topic 'sg.control'")."""
        who = f"User:{self.sasl_username}" if self.sasl_username else "this client's principal"
        return KafkaAuthorizationError(
            f"not_authorized: Kafka refused {who} to {what} ({type(exc).__name__}); use the "
            "principal whose row in docs/security.md allows it (SLUICEGATE_KAFKA__SASL_USERNAME), "
            "or have an admin add the ACL (`sluicegate topics acls --apply`)"
        )

    def explain(self, exc: BaseException) -> str:
        """A message for a failed connection that names the settings to check."""
        where = f"Kafka at {self.bootstrap_servers} ({self.security_protocol}"
        if self.sasl_mechanism is not None:
            where += f", {self.sasl_mechanism} as user {self.sasl_username!r}"
        fix = "check SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS and that the brokers are up"
        if self.sasl_mechanism is not None:
            fix = (
                "check SLUICEGATE_KAFKA__SASL_USERNAME and SLUICEGATE_KAFKA__SASL_PASSWORD "
                f"(a SCRAM user must exist on the brokers: kafka-configs --alter --add-config "
                f"'{self.sasl_mechanism}=[password=...]' --entity-type users), then "
                "SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS"
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            fix += "; for TLS errors, SLUICEGATE_KAFKA__SSL_CAFILE"
        return f"cannot connect to {where}): {type(exc).__name__}: {exc}; {fix}"


def producer(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """A producer with only the connection settings and `max_request_size` preset."""
    options.setdefault("max_request_size", kafka.max_request_size)
    return AIOKafkaProducer(**options, **kafka.client_kwargs())


def idempotent_producer(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """`acks="all"` and `enable_idempotence=True`; `options` (e.g. `linger_ms`) on top."""
    return producer(kafka, acks="all", enable_idempotence=True, **options)


def transactional_producer(
    kafka: KafkaSettings, *, transactional_id: str, **options: Any
) -> AIOKafkaProducer:
    """An idempotent producer with a transactional id; `start()` fences earlier owners."""
    return idempotent_producer(kafka, transactional_id=transactional_id, **options)


def consumer(kafka: KafkaSettings, **options: Any) -> AIOKafkaConsumer:
    """A consumer with the connection settings and `max_partition_fetch_bytes` preset."""
    options.setdefault("max_partition_fetch_bytes", kafka.max_request_size)
    return AIOKafkaConsumer(**options, **kafka.client_kwargs())


def read_committed_consumer(kafka: KafkaSettings, **options: Any) -> AIOKafkaConsumer:
    """A consumer that never sees records of open or aborted transactions."""
    return consumer(kafka, isolation_level="read_committed", **options)


def admin_client(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_kwargs())


async def partitions_of(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    """The partitions of `topic` as the brokers describe it now (`[]`: no such topic).

    Describes every topic rather than naming `topic`: a metadata request that
    names a topic lets a broker with `auto.create.topics.enable` create it.
    """
    for described in await admin.describe_topics():
        if described["topic"] == topic and described["error_code"] == 0:
            return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])
    return []


async def wait_for_partitions(
    kafka: KafkaSettings, topic: str, *, timeout: float | None = 30.0, interval_s: float = 0.1
) -> list[TopicPartition]:
    """The partitions of `topic`, looking again every `interval_s` until it exists.

    A retriable Kafka error (a broker restarting) counts as "not there yet".
    Raises `TimeoutError` if it does not appear within `timeout` seconds
    (`None`: keep looking until cancelled).
    """
    admin = admin_client(kafka)
    await admin.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if parts := await partitions_of(admin, topic):
                        return parts
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                await asyncio.sleep(interval_s)
    finally:
        await admin.close()


class OnFirstAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls `callback` once, when the group first assigns this consumer partitions."""

    def __init__(self, callback: Callable[[], object] | None) -> None:
        self._callback = callback

    async def on_partitions_revoked(self, revoked: object) -> None:
        return None

    async def on_partitions_assigned(self, assigned: object) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()
