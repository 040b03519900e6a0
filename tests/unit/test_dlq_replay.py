"""Which dead letters `sluicegate dlq replay` selects, and where each may go back to."""

from __future__ import annotations

import pytest
import typer

from sluicegate.ops.cli_dlq import parse_time
from sluicegate.ops.dlq import ReplayFilter, destination
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.settings import TopicSettings

TOPICS = TopicSettings()


def letter(
    source: str = TOPICS.requests, code: str = "poison", rid: str | None = "a"
) -> DeadLetter:
    return DeadLetter(
        code=code,
        message="m",
        error_class="E",
        stage="admit",
        source_topic=source,
        source_partition=0,
        source_offset=1,
        request_id=rid,
    )


def test_the_filter_selects_by_code_request_id_and_time() -> None:
    everything = ReplayFilter()
    assert everything.matches(letter(), 5)
    by_code = ReplayFilter(codes=frozenset({"poison"}))
    assert by_code.matches(letter(), 5) and not by_code.matches(letter(code="schema"), 5)
    by_id = ReplayFilter(request_ids=frozenset({"b"}))
    assert not by_id.matches(letter(), 5) and by_id.matches(letter(rid="b"), 5)
    window = ReplayFilter(since_ms=10, until_ms=20)
    assert [window.matches(letter(), t) for t in (9, 10, 19, 20)] == [False, True, True, False]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (TOPICS.requests, TOPICS.requests),
        ("sg.work.ocr.cpu", "sg.work.ocr.cpu"),
        (TOPICS.control, None),
        (TOPICS.results, None),
        ("sg.work.", None),
        ("sg.work.a.b.c", None),
        ("elsewhere", None),
    ],
)
def test_only_requests_and_work_topics_are_replayed_into(source: str, target: str | None) -> None:
    assert destination(letter(source), TOPICS) == target


def test_times_are_iso_utc_or_epoch_ms() -> None:
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert parse_time(None) is None
    with pytest.raises(typer.BadParameter, match="ISO-8601"):
        parse_time("yesterday")
