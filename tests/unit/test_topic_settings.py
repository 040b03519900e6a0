"""Topic names of one test or benchmark run: every default name, under its own prefix."""

from __future__ import annotations

from sluicegate.schemas.settings import TopicSettings


def test_prefixed_renames_every_topic_and_keeps_the_suffixes() -> None:
    default, mine = TopicSettings(), TopicSettings.prefixed("t123")
    for field, name in default.model_dump().items():
        assert getattr(mine, field) == "t123" + name.removeprefix("sg")
    assert mine.work("ocr", "cpu") == "t123.work.ocr.cpu"
    assert not set(default.model_dump().values()) & set(mine.model_dump().values())
