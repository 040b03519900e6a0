"""reply_to checks, produce-failure classification and the metadata cache (no broker)."""

from __future__ import annotations

import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from sluicegate.runtime.destinations import Destinations, check_reply_to, permanent, reply_topic
from sluicegate.schemas.errors import ErrorCode, InvalidReplyToError
from sluicegate.schemas.settings import TopicSettings

TOPICS = TopicSettings()


@pytest.mark.parametrize(
    "reply_to",
    [
        "bad topic/name!",  # the issue's own
        "",
        ".",
        "..",
        "x" * 250,
        "ünïcode",
        "sg.control",
        "sg.requests",
        "sg.dlq",
        "sg.work.ocr.cpu",
        "sg.telemetry",
        "sg.attempts",
        "sg.anything.new",
    ],
)
def test_illegal_or_internal_reply_to_is_refused(reply_to: str) -> None:
    with pytest.raises(InvalidReplyToError) as info:
        check_reply_to(reply_to, TOPICS)
    assert info.value.code == ErrorCode.INVALID_REPLY_TO
    assert reply_topic(reply_to, TOPICS) == TOPICS.results


@pytest.mark.parametrize("reply_to", [None, "sg.results", "sg.shadow.results", "team-a.results"])
def test_results_and_own_topics_are_allowed(reply_to: str | None) -> None:
    check_reply_to(reply_to, TOPICS)
    assert reply_topic(reply_to, TOPICS) == (reply_to or TOPICS.results)


def test_prefixes_limit_tenant_topics() -> None:
    topics = TopicSettings(reply_to_prefixes=("tenant-a.",))
    check_reply_to("tenant-a.out", topics)
    check_reply_to(topics.results, topics)
    with pytest.raises(InvalidReplyToError, match="REPLY_TO_PREFIXES"):
        check_reply_to("tenant-b.out", topics)


def test_a_test_run_s_own_namespace_is_internal_too() -> None:
    mine = TopicSettings.prefixed("t42")
    with pytest.raises(InvalidReplyToError):
        check_reply_to("t42.control", mine)
    check_reply_to("t42.results", mine)


def test_permanent_failures_are_the_record_s_own() -> None:
    assert permanent(UnknownTopicOrPartitionError())
    assert permanent(TopicAuthorizationFailedError())
    assert permanent(MessageSizeTooLargeError())
    assert not permanent(NotLeaderForPartitionError())
    assert not permanent(KafkaTimeoutError())
    assert not permanent(RuntimeError("x"))


async def test_writable_asks_once_per_ttl_and_remembers_refusals() -> None:
    now = [0.0]
    calls = 0
    cluster = ClusterMetadata()
    cluster.unauthorized_topics.add("secret")

    async def fetch() -> ClusterMetadata:
        nonlocal calls
        calls += 1
        return cluster

    known = {"exists"}
    cluster.topics = lambda exclude_internal_topics=True: set(known)  # type: ignore[method-assign]
    dest = Destinations(fetch=fetch, ttl_s=10.0, clock=lambda: now[0])
    assert await dest.writable("exists")
    assert not await dest.writable("secret")
    assert calls == 1  # one answer covered both
    assert not await dest.writable("missing")
    assert calls == 2
    assert not await dest.writable("missing")
    assert calls == 2  # cached
    known.add("missing")
    now[0] = 11.0
    assert await dest.writable("missing")  # created later: used after the TTL
    dest.refused("exists")
    assert not await dest.writable("exists")
