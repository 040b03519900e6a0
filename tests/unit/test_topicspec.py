"""The topic plan: pure diffing of a topic file against a described cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluicegate.streams.topicspec import (
    ClusterTopic,
    TopicFile,
    TopicSpecError,
    load_topic_file,
    plan,
)

REPO = Path(__file__).resolve().parents[2]


def test_defaults_apply_and_entries_override() -> None:
    spec = TopicFile.model_validate(
        {
            "defaults": {"partitions": 6, "replication_factor": 3, "min_insync_replicas": 2},
            "topics": [{"name": "a"}, {"name": "b", "partitions": 1, "cleanup_policy": "compact"}],
        }
    )
    a, b = spec.resolved()
    assert (a.partitions, a.replication_factor, a.configs) == (6, 3, {"min.insync.replicas": "2"})
    assert b.partitions == 1 and b.configs["cleanup.policy"] == "compact"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"topics": [{"name": "a"}, {"name": "a"}]}, "listed twice: a"),
        ({"topics": [{"name": "a", "min_insync_replicas": 2}]}, "min_insync_replicas 2 >"),
        ({"topics": [{"name": "a b"}]}, "pattern"),
        ({"topics": [{"name": "a", "partitions": 0}]}, "greater than or equal to 1"),
        ({"topics": [{"name": "a", "retention": 5}]}, "Extra inputs"),
    ],
)
def test_bad_files_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopicFile.model_validate(raw)


def test_shipped_files_parse_and_carry_a_compacted_control_topic() -> None:
    for path in (REPO / "topics.yaml", REPO / "ops" / "k8s" / "topics.yaml"):
        by_name = {t.name: t for t in load_topic_file(path).resolved()}
        assert by_name["sg.control"].configs["cleanup.policy"] == "compact"
        assert {"sg.requests", "sg.results", "sg.dlq", "sg.work.ocr.a100"} <= set(by_name)
    cluster = {t.name: t for t in load_topic_file(REPO / "ops/k8s/topics.yaml").resolved()}
    assert cluster["sg.requests"].replication_factor == 3
    assert cluster["sg.requests"].configs["min.insync.replicas"] == "2"


def test_load_reports_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("topics: [")
    with pytest.raises(TopicSpecError, match="not valid YAML"):
        load_topic_file(bad)


def test_plan_only_grows_and_never_touches_replication() -> None:
    spec = TopicFile.model_validate(
        {"topics": [{"name": "t", "partitions": 2, "replication_factor": 3, "retention_ms": 10}]}
    )
    have = ClusterTopic(name="t", partitions=4, replication_factor=1, overrides={"segment.ms": "5"})
    result = plan(spec.resolved(), {"t": have}, brokers=3)
    assert [c.kind for c in result.changes] == ["config"]
    assert result.changes[0].configs == {"retention.ms": "10", "segment.ms": "5"}
    messages = " ".join(b.message for b in result.blockers)
    assert "cannot remove partitions" in messages and "replication factor 1 -> 3" in messages
    assert result.unchanged == ()


def test_plan_is_empty_when_the_cluster_matches() -> None:
    spec = TopicFile.model_validate({"topics": [{"name": "t", "retention_ms": 10}]})
    have = ClusterTopic(
        name="t", partitions=1, replication_factor=1, overrides={"retention.ms": "10"}
    )
    result = plan(spec.resolved(), {"t": have}, brokers=1)
    assert result.empty and result.unchanged == ("t",) and result.diff_lines() == ["= t"]
