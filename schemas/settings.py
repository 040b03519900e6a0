"""Topic names every process agrees on (part of the producer contract).

Each process has its own small pydantic-settings class (worker, client, CLI)
that nests these; all read `SLUICEGATE_*` variables with `__` between
levels, e.g. `SLUICEGATE_TOPICS__REQUESTS=sg.requests`. How to reach Kafka
(`KafkaSettings`) lives in `sluicegate.runtime.kafka`.
"""

from __future__ import annotations

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
    router_state: str = topics.ROUTER_STATE

    def work(self, model: str, pool: str) -> str:
        return topics.work_topic(model, pool, prefix=self.work_prefix)

    @classmethod
    def prefixed(cls, prefix: str) -> TopicSettings:
        """Every default topic name under `prefix` instead of `sg` (tests, benchmarks)."""
        names = cls().model_dump()
        return cls(**{field: prefix + name.removeprefix("sg") for field, name in names.items()})
