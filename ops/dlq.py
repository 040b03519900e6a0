"""Replaying dead letters into the topic they came from, once their cause is fixed.

A DLQ record keeps the input's bytes and names where it came from in its
`sg-dlq-*` headers (`schemas.dlq.DeadLetter`). `replay()` reads the DLQ from
`since_ms` (or the beginning) up to the end it saw at start, keeps the
letters `ReplayFilter` selects (codes, a time range, request ids), and sends
each back to its source topic with the `sg-dlq-*` headers removed and an
`sg-replayed-from` header added, at most `rate_per_s` records a second
(aiolimiter). Only `sg.requests` and the work topics are destinations: a
letter from anywhere else (a control record, a result) is refused and
counted, never replayed. `dry_run` sends nothing and counts what would go.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiolimiter import AsyncLimiter

from sluicegate.runtime.follow import partitions
from sluicegate.runtime.kafka import KafkaSettings, consumer, idempotent_producer
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.settings import TopicSettings

REPLAYED_HEADER = "sg-replayed-from"


@dataclass(frozen=True, kw_only=True)
class ReplayFilter:
    """Which dead letters to replay; an empty set or None matches everything."""

    codes: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    since_ms: int | None = None  # DLQ record timestamp, Unix epoch ms, inclusive
    until_ms: int | None = None  # exclusive

    def matches(self, letter: DeadLetter, timestamp_ms: int) -> bool:
        return (
            (not self.codes or letter.code in self.codes)
            and (not self.request_ids or letter.request_id in self.request_ids)
            and (self.since_ms is None or timestamp_ms >= self.since_ms)
            and (self.until_ms is None or timestamp_ms < self.until_ms)
        )


def destination(letter: DeadLetter, topics: TopicSettings) -> str | None:
    """The topic to replay `letter` into, or None if its source is not one a replay may write."""
    source = letter.source_topic
    if source == topics.requests:
        return source
    model_pool = source.removeprefix(topics.work_prefix + ".")
    if model_pool != source and model_pool.count(".") == 1 and all(model_pool.split(".")):
        return source
    return None


@dataclass
class ReplaySummary:
    topic: str = ""  # the DLQ topic read
    available: int = 0  # records on it in the range read, when the replay started
    read: int = 0  # DLQ records read
    matched: int = 0  # selected by the filter
    replayed: int = 0  # sent (or, in a dry run, would be sent)
    # Matched but not replayed, by reason: not_a_dead_letter, source <topic>.
    refused: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)


async def replay(
    kafka: KafkaSettings,
    topics: TopicSettings,
    selection: ReplayFilter,
    *,
    dry_run: bool = False,
    rate_per_s: float = 100.0,
    progress: Callable[[ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """Replay the selected dead letters; returns what was read, matched, sent and refused."""
    summary = ReplaySummary(topic=topics.dlq)
    reader = consumer(kafka, enable_auto_commit=False)
    producer = None if dry_run else idempotent_producer(kafka, linger_ms=5)
    limiter = AsyncLimiter(max(rate_per_s, 0.001), time_period=1.0)
    await reader.start()
    try:
        if producer is not None:
            await producer.start()
        ends, summary.available = await _position(reader, kafka, topics.dlq, selection.since_ms)
        if progress is not None:
            progress(summary)
        acks = []
        while ends:
            batches = await reader.getmany(timeout_ms=500, max_records=500)
            for tp, records in batches.items():
                for rec in records:
                    if rec.offset >= ends.get(tp, 0):
                        continue
                    summary.read += 1
                    try:
                        letter = DeadLetter.from_headers(list(rec.headers))
                    except ValueError:
                        summary.refused["not_a_dead_letter"] += 1
                        continue
                    if not selection.matches(letter, rec.timestamp):
                        continue
                    summary.matched += 1
                    target = destination(letter, topics)
                    if target is None:
                        summary.refused[f"source {letter.source_topic}"] += 1
                        continue
                    summary.replayed += 1
                    summary.by_topic[target] += 1
                    if producer is not None:
                        headers = [(k, v) for k, v in rec.headers if not k.startswith("sg-dlq-")]
                        origin = f"{rec.topic}/{rec.partition}/{rec.offset}".encode()
                        async with limiter:
                            acks.append(
                                await producer.send(
                                    target,
                                    rec.value,
                                    key=rec.key,
                                    headers=[*headers, (REPLAYED_HEADER, origin)],
                                )
                            )
                if progress is not None:
                    progress(summary)
            for tp in list(ends):
                if await reader.position(tp) >= ends[tp]:
                    del ends[tp]
        for ack in acks:
            await ack
    finally:
        if producer is not None:
            await producer.stop()
        await reader.stop()
    return summary


async def _position(
    reader: AIOKafkaConsumer, kafka: KafkaSettings, topic: str, since_ms: int | None
) -> tuple[dict[TopicPartition, int], int]:
    """Assign every DLQ partition and seek to `since_ms` (or the beginning).

    Returns the end offset to read up to per partition with something to read,
    and how many records that is.
    """
    parts = await partitions(kafka, topic, timeout=10.0)
    reader.assign(parts)
    starts: dict[TopicPartition, int] = await reader.beginning_offsets(parts)
    ends: dict[TopicPartition, int] = await reader.end_offsets(parts)
    if since_ms is not None:
        found = await reader.offsets_for_times({tp: since_ms for tp in parts})
        for tp in parts:
            hit = found.get(tp)
            starts[tp] = hit.offset if hit is not None else ends[tp]
    for tp in parts:
        reader.seek(tp, starts[tp])
    todo = {tp: ends[tp] for tp in parts if ends[tp] > starts[tp]}
    return todo, sum(end - starts[tp] for tp, end in todo.items())
