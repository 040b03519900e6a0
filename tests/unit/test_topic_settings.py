"""Topic names of one test or benchmark run: every default name, under its own prefix."""

from __future__ import annotations

import pytest

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


def test_as_env_round_trips_through_a_child_process_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Child(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SLUICEGATE_", env_nested_delimiter="__")
        topics: TopicSettings = TopicSettings()

    sent = TopicSettings.prefixed("t1").model_copy(update={"reply_to_prefixes": ("tenant-a.",)})
    for name, value in sent.as_env().items():
        assert isinstance(value, str)
        monkeypatch.setenv(name, value)
    assert Child().topics == sent
