"""Creating the topics sluicegate needs (idempotent)."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from sluicegate.runtime.kafka import KafkaSettings, admin_client
from sluicegate.schemas.catalog import CATALOG
from sluicegate.schemas.settings import TopicSettings


def default_topics(topics: TopicSettings, pools: Iterable[str] = ("cpu",)) -> list[str]:
    names = [topics.requests, topics.results, topics.telemetry, topics.dlq, topics.attempts]
    names += [topics.work(model, pool) for model in CATALOG for pool in pools]
    return names


def streams_topics(topics: TopicSettings) -> list[str]:
    """Topics of the router and the telemetry rollups; the control topic among them is
    compacted (pass `compacted=compacted_topics(...)` to `ensure_topics`).

    Apart from `default_topics` on purpose: code that makes and deletes its own
    request and work topics (tests, benchmarks) must not delete the shared
    `sg.control` along with them.
    """
    return [topics.control, topics.shadow_results, topics.telemetry_rollup, topics.router_state]


def compacted_topics(topics: TopicSettings) -> list[str]:
    """Topics whose latest record per key is the state: log compaction, never deletion."""
    return [topics.control, topics.attempts, topics.router_state]


async def ensure_topics(
    kafka: KafkaSettings,
    names: Iterable[str],
    *,
    partitions: int = 3,
    replication: int = 1,
    compacted: Iterable[str] = (),
) -> list[str]:
    """Create the missing topics among `names`; returns the ones created.

    Names also in `compacted` get `cleanup.policy=compact`. An existing topic
    is left as it is (its configuration is not checked).
    """
    compact = set(compacted)
    admin = admin_client(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            new = [
                NewTopic(
                    name=n,
                    num_partitions=partitions,
                    replication_factor=replication,
                    topic_configs={
                        "max.message.bytes": str(kafka.max_request_size),
                        **({"cleanup.policy": "compact"} if n in compact else {}),
                    },
                )
                for n in missing
            ]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process won the race; that is fine
        return missing
    finally:
        await admin.close()


async def delete_topics(kafka: KafkaSettings, names: Iterable[str]) -> None:
    admin = admin_client(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
