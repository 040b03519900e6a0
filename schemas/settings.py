"""Settings shared by every process: how to reach Kafka, which topics.

Each process has its own small pydantic-settings class (worker, client, CLI)
that nests these; all read `SLUICEGATE_*` variables with `__` between
levels, e.g. `SLUICEGATE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from . import topics


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # Largest record a producer may send; the broker's message.max.bytes must allow it.
    max_request_size: int = 10 * 1024 * 1024

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments common to aiokafka producers, consumers and admin clients."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs


class TopicSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    requests: str = topics.REQUESTS
    results: str = topics.RESULTS
    telemetry: str = topics.TELEMETRY
    dlq: str = topics.DLQ
    work_prefix: str = topics.WORK_PREFIX
    control: str = topics.CONTROL
    shadow_results: str = topics.SHADOW_RESULTS
    telemetry_rollup: str = topics.TELEMETRY_ROLLUP

    def work(self, model: str, pool: str) -> str:
        return topics.work_topic(model, pool, prefix=self.work_prefix)
