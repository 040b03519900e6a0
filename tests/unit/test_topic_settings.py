"""Topic names of one test or benchmark run: every default name, under its own prefix."""

from __future__ import annotations

from sluicegate.schemas.settings import TopicSettings


def _names(topics: TopicSettings) -> dict[str, str]:
    return {k: v for k, v in topics.model_dump().items() if isinstance(v, str)}


def test_prefixed_renames_every_topic_and_keeps_the_suffixes() -> None:
    default, mine = TopicSettings(), TopicSettings.prefixed("t123")
    for field, name in _names(default).items():
        assert getattr(mine, field) == "t123" + name.removeprefix("sg")
    assert mine.work("ocr", "cpu") == "t123.work.ocr.cpu"
    assert not set(_names(default).values()) & set(_names(mine).values())
    assert mine.reply_to_prefixes == default.reply_to_prefixes == ()


def test_internal_topics_are_the_namespace_work_topics_and_the_named_ones() -> None:
    mine = TopicSettings.prefixed("t123")
    assert mine.internal()[:2] == ("t123.", "t123.work.")
    assert {mine.requests, mine.control, mine.dlq, mine.attempts} <= set(mine.internal())
