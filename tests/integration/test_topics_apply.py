"""`sluicegate topics apply` against the real broker: create, reconcile, idempotent, dry run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.streams.provision import apply_topics, describe, plan_topics
from sluicegate.streams.topicspec import TopicFile, TopicSpecError, load_topic_file
from sluicegate.streams.topology import delete_topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _file(prefix: str, *, partitions: int = 2, retention_ms: int = 3_600_000) -> TopicFile:
    return TopicFile.model_validate(
        {
            "defaults": {
                "partitions": partitions,
                "replication_factor": 1,
                "min_insync_replicas": 1,
            },
            "topics": [
                {"name": f"{prefix}.requests", "retention_ms": retention_ms},
                {"name": f"{prefix}.control", "partitions": 1, "cleanup_policy": "compact"},
            ],
        }
    )


async def _state(kafka: KafkaSettings, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        topics, brokers = await describe(admin, names)
        assert brokers == 1
        return {n: (t.partitions, dict(t.overrides)) for n, t in topics.items()}
    finally:
        await admin.close()


async def test_apply_creates_reconciles_and_is_idempotent(kafka: KafkaSettings) -> None:
    prefix = f"prov{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.requests", f"{prefix}.control"]
    first = _file(prefix).resolved()
    try:
        dry = await plan_topics(kafka, first)
        assert [c.kind for c in dry.changes] == ["create", "create"]
        assert await _state(kafka, names) == {}, "a dry run must change nothing"

        done = await apply_topics(kafka, first)
        assert len(done.changes) == 2
        state = await _state(kafka, names)
        assert state[f"{prefix}.requests"][0] == 2
        assert state[f"{prefix}.requests"][1]["retention.ms"] == "3600000"
        assert state[f"{prefix}.requests"][1]["min.insync.replicas"] == "1"
        assert state[f"{prefix}.control"] == (
            1,
            {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        )

        again = await apply_topics(kafka, first)
        assert again.empty and sorted(again.unchanged) == sorted(names)

        # An override set by hand outside the file must survive a config change.
        admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        await admin.start()
        try:
            res = ConfigResource(
                ConfigResourceType.TOPIC,
                f"{prefix}.requests",
                {"retention.ms": "3600000", "min.insync.replicas": "1", "segment.ms": "7200000"},
            )
            await admin.alter_configs([res])
        finally:
            await admin.close()

        second = _file(prefix, partitions=3, retention_ms=7_200_000).resolved()
        dry = await plan_topics(kafka, second)
        lines = dry.diff_lines()
        assert f"~ {prefix}.requests: partitions 2 -> 3" in lines
        assert f"~ {prefix}.requests: retention.ms 3600000 -> 7200000" in lines
        assert f"= {prefix}.control" in lines
        await apply_topics(kafka, second)
        parts, overrides = (await _state(kafka, names))[f"{prefix}.requests"]
        assert parts == 3
        assert overrides["retention.ms"] == "7200000" and overrides["segment.ms"] == "7200000"
        assert (await plan_topics(kafka, second)).empty

        # Kafka cannot shrink a topic: reported, never attempted.
        shrink = await plan_topics(kafka, _file(prefix, partitions=1).resolved())
        assert any("cannot remove partitions" in b.message for b in shrink.blockers)
    finally:
        await delete_topics(kafka, names)


async def test_more_replicas_than_brokers_is_refused_by_name(kafka: KafkaSettings) -> None:
    cluster_file = load_topic_file(REPO / "ops" / "k8s" / "topics.yaml")
    with pytest.raises(TopicSpecError, match=r"replication_factor 3 but the cluster has 1 broker"):
        await plan_topics(kafka, cluster_file.resolved())


def test_cli_dry_run_prints_the_diff_then_apply_converges(
    stack_env: dict[str, str], kafka: KafkaSettings, tmp_path: Path
) -> None:
    import asyncio

    prefix = f"cli{uuid.uuid4().hex[:8]}"
    spec = yaml.safe_load((REPO / "topics.yaml").read_text())
    for topic in spec["topics"]:
        topic["name"] = topic["name"].replace("sg.", f"{prefix}.", 1)
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(spec))
    names = [t["name"] for t in spec["topics"]]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sluicegate", "topics", "apply", str(path), *args],
            env=stack_env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    try:
        dry = run("--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"+ {prefix}.control: partitions=1 rf=1 cleanup.policy=compact" in dry.stdout
        assert dry.stdout.count("\n+ ") + dry.stdout.startswith("+ ") == len(names)
        assert asyncio.run(_state(kafka, names)) == {}
        applied = run()
        assert applied.returncode == 0, applied.stderr
        second = run()
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("= ") == len(names) and "+" not in second.stdout
        # Fewer partitions than the topic has: reported with `!`, exit 3, nothing changed.
        spec["topics"][0]["partitions"] = 1
        path.write_text(yaml.safe_dump(spec))
        blocked = run()
        assert blocked.returncode == 3, blocked.stdout + blocked.stderr
        assert f"! {names[0]}: has 3 partitions, file says 1" in blocked.stdout
        # A file the cluster cannot satisfy names the fix and exits 1.
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "sluicegate",
                "topics",
                "apply",
                "--dry-run",
                str(REPO / "ops" / "k8s" / "topics.yaml"),
            ],
            env=stack_env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode == 1 and "lower it in the topic file" in refused.stderr
    finally:
        asyncio.run(delete_topics(kafka, names))
