"""Crash-loop quarantine bookkeeping: attempt counts from the attempts topic (no broker)."""

from __future__ import annotations

from sluicegate.runtime.records import RecordData
from sluicegate.workers.quarantine import Attempts, by_crc32


def rec(offset: int, value: bytes = b"v") -> RecordData:
    return RecordData(topic="sg.work.ocr.cpu", partition=1, offset=offset, key=None, value=value)


def test_an_attempt_counts_until_the_record_is_answered() -> None:
    attempts = Attempts(group="g")
    key, value = attempts.begin(rec(5))
    assert key == "g|sg.work.ocr.cpu|1|5" and value.startswith(b"1:")
    assert attempts.count(rec(5)) == 1 and attempts.count(rec(6)) == 0
    assert attempts.end(rec(5)) == key
    assert attempts.count(rec(5)) == 0
    assert attempts.end(rec(5)) is None  # a tombstone at most once


def test_a_new_incarnation_rebuilds_the_counts_from_the_topic() -> None:
    dead = Attempts(group="g")
    log = [dead.begin(rec(7)) for _ in range(3)]  # three incarnations died running it
    fresh = Attempts(group="g")
    for key, value in log:
        fresh.apply(key, value)
    fresh.apply("other-group|sg.work.ocr.cpu|1|7", b"9:0")  # not ours
    assert fresh.count(rec(7)) == 3
    fresh.apply(log[0][0], None)  # tombstone
    assert fresh.count(rec(7)) == 0


def test_a_different_value_at_the_same_offset_is_not_a_suspect() -> None:
    attempts = Attempts(group="g")
    key, value = attempts.begin(rec(3, b"old"))
    fresh = Attempts(group="g")
    fresh.apply(key, value)
    assert fresh.count(rec(3, b"new")) == 0  # topic recreated: offsets repeat
    fresh.apply(key, b"garbage")  # malformed: skipped, not fatal
    assert fresh.count(rec(3, b"old")) == 1


def test_attempt_keys_keep_their_partition() -> None:
    """A begin record and its tombstone share a partition (compaction), spread over all."""
    parts = [0, 1, 2, 3, 4, 5]
    keys = [f"g|sg.work.text-embed.cpu|{p}|{o}".encode() for p in range(3) for o in range(200)]
    placed = [by_crc32(k, parts, parts) for k in keys]
    assert placed == [by_crc32(k, parts, [0]) for k in keys]  # availability does not move a key
    assert set(placed) == set(parts)
