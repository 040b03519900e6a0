"""Where a result may go: the one check of `reply_to`, shared by router and worker.

A request names the topic its result goes to (`reply_to`). That name is
untrusted input, so three things are checked, in two places:

- `check_reply_to()` (pure, where the record enters: the router's ingress
  and the worker's admission, since producers may write straight to a work
  topic): a legal Kafka topic name (`[a-zA-Z0-9._-]`, 1..249 characters, not
  `.` or `..`), not one of sluicegate's internal topics (the `sg.` namespace,
  work topics, control, DLQ...) other than the results topics, and, when
  `TopicSettings.reply_to_prefixes` is set, under one of those prefixes.
  Refused: `InvalidReplyToError` (`invalid_reply_to`), an error result on the
  results topic and a DLQ record.
- `Destinations.writable()` (before producing a result): the topic exists
  and this principal is not refused it, from a metadata request that never
  auto-creates topics. Answers are cached (`ttl_s`), so the hot path asks
  the broker at most once per topic per TTL.
- `permanent()` (after a produce failed): whether the failure is the record's
  own (unknown topic, record too large, not authorized) and will never
  succeed on retry, or the cluster's (leader moving, timeout) and retriable.
  The at-least-once publishers answer a permanent failure with an error
  result on the results topic (`reply_to_unwritable`) and a DLQ record; the
  exactly-once path can call the same function to stop retrying.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import ErrorCode, InvalidReplyToError
from sluicegate.schemas.models import InferenceResult
from sluicegate.schemas.settings import TopicSettings

from .kafka import KafkaSettings
from .records import Record

log = logging.getLogger("sluicegate.destinations")

_LEGAL = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

# Failures that are the record's own: retrying the same record never helps.
_PERMANENT: tuple[type[BaseException], ...] = (
    UnknownTopicOrPartitionError,  # raised after the metadata wait for a missing topic
    TopicAuthorizationFailedError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)


def check_reply_to(reply_to: str | None, topics: TopicSettings) -> None:
    """Raise `InvalidReplyToError` unless `reply_to` is None or a topic a result may go to."""
    if reply_to is None or reply_to in (topics.results, topics.shadow_results):
        return
    if not _LEGAL.match(reply_to) or reply_to in (".", ".."):
        raise InvalidReplyToError(
            "reply_to is not a legal Kafka topic name ([a-zA-Z0-9._-], 1..249 characters); "
            f"fix it or leave it empty for {topics.results}"
        )
    internal = topics.internal()
    if any(reply_to == name or (name.endswith(".") and reply_to.startswith(name))
           for name in internal):  # fmt: skip
        raise InvalidReplyToError(
            f"reply_to {reply_to!r} is an internal sluicegate topic; results may go to "
            f"{topics.results} or a topic of your own"
        )
    allowed = topics.reply_to_prefixes
    if allowed and not reply_to.startswith(allowed):
        raise InvalidReplyToError(
            f"reply_to {reply_to!r} is outside the allowed prefixes {list(allowed)}; "
            "use one of them or set SLUICEGATE_TOPICS__REPLY_TO_PREFIXES"
        )


def reply_topic(reply_to: str | None, topics: TopicSettings) -> str:
    """Where a result for `reply_to` goes: itself if it passes `check_reply_to`, else results."""
    try:
        check_reply_to(reply_to, topics)
    except InvalidReplyToError:
        return topics.results
    return reply_to or topics.results


def unwritable(rec: Record, result: InferenceResult, topic: str, reason: str) -> DeadLetter:
    """The dead letter for `rec` when `result` cannot go to its reply_to `topic`.

    Its `message` is also the message of the `reply_to_unwritable` result that
    replaces `result` on the results topic; it says what the result was.
    """
    code = ErrorCode.REPLY_TO_UNWRITABLE
    was = result.error.code if result.error else result.status.value
    return DeadLetter(
        code=code,
        message=f"reply_to {topic!r}: {reason} (the result was {was}); {code.message}",
        error_class=reason.split("(", 1)[0],
        stage="deliver",
        source_topic=rec.topic,
        source_partition=rec.partition,
        source_offset=rec.offset,
        request_id=result.request_id,
    )


def permanent(exc: BaseException) -> bool:
    """True if a produce failed because of the record or its topic, never on retry.

    Unknown topic, topic authorization, record too large, invalid topic: the
    record's own fault. Anything else (a `KafkaError` marked retriable, a
    timeout, a broker going away) is the cluster's, and retrying may help.
    """
    return isinstance(exc, _PERMANENT)


Fetch = Callable[[], Awaitable[ClusterMetadata]]


class Destinations:
    """Which topics a result may be produced to, from cached cluster metadata.

    `fetch` returns the cluster's metadata for all topics (an all-topics
    metadata request never auto-creates one); `for_kafka()` asks through a
    client of its own. Answers live `ttl_s`; a topic answered missing is asked
    again after `ttl_s` too, so a topic created later starts being used.
    """

    def __init__(
        self, *, fetch: Fetch, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[bool, float]] = {}  # topic -> (writable, expires)
        self._lock = asyncio.Lock()
        self._close: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def for_kafka(cls, kafka: KafkaSettings, *, ttl_s: float = 30.0) -> Destinations:
        """Asks the cluster through a client of its own, connected on first use; `close()` it."""
        clients: list[AIOKafkaClient] = []  # built inside the event loop, on first use

        async def fetch() -> ClusterMetadata:
            if not clients:
                client = AIOKafkaClient(**kafka.client_kwargs())
                try:
                    await client.bootstrap()
                except BaseException:
                    await client.close()
                    raise
                clients.append(client)
            metadata: ClusterMetadata = await clients[0].fetch_all_metadata()
            return metadata

        async def close() -> None:
            while clients:
                await clients.pop().close()

        destinations = cls(fetch=fetch, ttl_s=ttl_s)
        destinations._close = close
        return destinations

    async def close(self) -> None:
        if self._close is not None:
            await self._close()

    async def writable(self, topic: str) -> bool:
        """True if `topic` exists and is not refused to this principal (cached)."""
        hit = self._known.get(topic)
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        async with self._lock:  # one metadata request answers every waiter
            hit = self._known.get(topic)
            if hit is not None and hit[1] > self._clock():
                return hit[0]
            try:
                metadata = await self._fetch()
            except KafkaError as exc:
                # The cluster is unwell, not the topic: let the produce find out.
                log.info("metadata for %r unavailable (%r); trying the produce", topic, exc)
                return True
            expires = self._clock() + self._ttl_s
            for name in metadata.topics():
                self._known[name] = (True, expires)
            for name in metadata.unauthorized_topics:
                self._known[name] = (False, expires)
            if topic not in self._known or self._known[topic][1] != expires:
                self._known[topic] = (False, expires)
            return self._known[topic][0]

    def refused(self, topic: str) -> None:
        """A produce to `topic` failed permanently: answer False until the TTL runs out."""
        self._known[topic] = (False, self._clock() + self._ttl_s)
