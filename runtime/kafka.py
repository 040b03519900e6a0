"""How to reach Kafka, and the aiokafka clients built from it.

`KafkaSettings` is nested by every process's settings class (worker, router,
client, CLI) and read from `SLUICEGATE_KAFKA__*` variables, e.g.
`SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`.
"""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr


class KafkaConnectError(ConnectionError):
    """The brokers could not be reached or refused our credentials; the message names the fix."""

    code = "kafka_unreachable"


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
