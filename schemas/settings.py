"""Topic names every process agrees on (part of the producer contract).

Each process has its own small pydantic-settings class (worker, client, CLI)
that nests these; all read `SLUICEGATE_*` variables with `__` between
levels, e.g. `SLUICEGATE_TOPICS__REQUESTS=sg.requests`. How to reach Kafka
(`KafkaSettings`) lives in `sluicegate.runtime.kafka`.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

from . import topics


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
    # Compacted: attempt counts of the records a worker was running (crash-loop quarantine).
    attempts: str = topics.ATTEMPTS
    # Topics a request's reply_to may name besides the results topic, by prefix
    # (e.g. ["tenant-a."]); empty: any legal topic outside the internal namespace.
    reply_to_prefixes: tuple[str, ...] = ()
    router_state: str = topics.ROUTER_STATE

    def work(self, model: str, pool: str) -> str:
        return topics.work_topic(model, pool, prefix=self.work_prefix)

    @classmethod
    def prefixed(cls, prefix: str) -> TopicSettings:
        """Every default topic name under `prefix` instead of `sg` (tests, benchmarks)."""
        names = {k: v for k, v in cls().model_dump().items() if isinstance(v, str)}
        return cls(**{field: prefix + name.removeprefix("sg") for field, name in names.items()})

    def as_env(self) -> dict[str, str]:
        """These settings as the `SLUICEGATE_TOPICS__*` variables of a child process."""
        return {
            f"SLUICEGATE_TOPICS__{field.upper()}": v if isinstance(v, str) else json.dumps(v)
            for field, v in self.model_dump(mode="json").items()
        }

    def internal(self) -> tuple[str, ...]:
        """Prefixes (ending in `.`) and names of the topics only sluicegate itself writes."""
        namespace = self.requests.rsplit(".", 1)[0] + "."  # `sg.` (or a test's own prefix)
        names = (self.requests, self.control, self.dlq, self.telemetry, self.attempts)
        return (namespace, self.work_prefix + ".", *names)
