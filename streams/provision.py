"""Reading a cluster's topics and carrying out a :class:`~.topicspec.Plan`.

`apply_topics` is idempotent: it plans against what the cluster holds now, so
a second run with the same file finds nothing to do. Blockers (fewer
partitions, another replication factor) are never acted on; the caller
decides whether they fail the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from sluicegate.runtime.kafka import KafkaSettings, admin_client

from .topicspec import ClusterTopic, Desired, Plan, plan

__all__ = ["ProvisionError", "apply_topics", "describe", "plan_topics"]

# DescribeConfigs config_source: 1 = DYNAMIC_TOPIC_CONFIG (a per-topic override).
_TOPIC_OVERRIDE = 1


class ProvisionError(RuntimeError):
    """The broker refused a change; the message carries its error and the topic."""

    code = "topic_provision_failed"


async def describe(
    admin: AIOKafkaAdminClient, names: list[str]
) -> tuple[dict[str, ClusterTopic], int]:
    """The existing topics among `names`, and the number of brokers."""
    cluster = await admin.describe_cluster()
    brokers = len(cluster.get("brokers", ()))
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}, brokers
    meta = {t["topic"]: t for t in await admin.describe_topics(wanted)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted]
    overrides: dict[str, dict[str, str]] = {n: {} for n in wanted}
    effective: dict[str, dict[str, str]] = {n: {} for n in wanted}
    for response in await admin.describe_configs(resources):
        for res in response.to_object()["resources"]:
            _raise_for(res["error_code"], res["resource_name"], res.get("error_message"))
            for entry in res["config_entries"]:
                name, value = entry["config_names"], entry["config_value"]
                if value is None:
                    continue
                effective[res["resource_name"]][name] = value
                if entry.get("config_source") == _TOPIC_OVERRIDE:
                    overrides[res["resource_name"]][name] = value
    topics = {}
    for name in wanted:
        partitions = meta[name]["partitions"]
        topics[name] = ClusterTopic(
            name=name,
            partitions=len(partitions),
            replication_factor=max((len(p["replicas"]) for p in partitions), default=0),
            overrides=overrides[name],
            effective=effective[name],
        )
    return topics, brokers


def _raise_for(code: int, topic: str, message: str | None) -> None:
    if code:
        err = for_code(code)
        raise ProvisionError(f"{topic}: {err.__name__}: {message or err.description}")


async def plan_topics(kafka: KafkaSettings, desired: list[Desired]) -> Plan:
    """What `apply_topics` would do now (the dry run); changes nothing."""
    admin = admin_client(kafka)
    await admin.start()
    try:
        cluster, brokers = await describe(admin, [d.name for d in desired])
        return plan(desired, cluster, brokers=brokers)
    finally:
        await admin.close()


async def apply_topics(kafka: KafkaSettings, desired: list[Desired]) -> Plan:
    """Bring the cluster to `desired`; returns the plan that was carried out.

    Raises :class:`TopicSpecError` for a file the cluster cannot satisfy and
    :class:`ProvisionError` when the broker refuses a change. Changes made
    before a failure stay made; rerunning finishes the rest.
    """
    admin = admin_client(kafka)
    await admin.start()
    try:
        cluster, brokers = await describe(admin, [d.name for d in desired])
        todo = plan(desired, cluster, brokers=brokers)
        creates = [c for c in todo.changes if c.kind == "create"]
        if creates:
            new = [
                NewTopic(
                    name=c.topic,
                    num_partitions=c.partitions,
                    replication_factor=c.replication_factor,
                    topic_configs=dict(c.configs),
                )
                for c in creates
            ]
            response = await admin.create_topics(new)
            for topic, code, *rest in response.topic_errors:
                _raise_for(code, topic, rest[0] if rest else None)
        grow = {
            c.topic: NewPartitions(c.partitions) for c in todo.changes if c.kind == "partitions"
        }
        if grow:
            await admin.create_partitions(grow)  # raises on a topic error itself
        alters = [c for c in todo.changes if c.kind == "config"]
        if alters:
            await _alter(admin, {c.topic: c.configs for c in alters})
        return todo
    finally:
        await admin.close()


async def _alter(admin: AIOKafkaAdminClient, configs: Mapping[str, Mapping[str, str]]) -> None:
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict(values))
        for name, values in configs.items()
    ]
    responses: list[Any] = await admin.alter_configs(resources)
    for response in responses:
        for res in response.to_object()["resources"]:
            _raise_for(res["error_code"], res["resource_name"], res.get("error_message"))
