"""Coalescing: identical requests in flight at once are computed once.

When a request's content key (`cache.content_key`) matches one this router
routed and has no result for yet, the new request is parked behind that
leader instead of routed. When the leader's result arrives on the result
topic, every parked request is answered with a copy of it under its own
request id (marked `cached`); if the leader's result is not `ok` (expired,
rejected, failed), the parked requests are routed after all, each on its
own merits; so are requests parked longer than `max_wait_ms` (a leader whose
result never shows on the result topic). Only requests answered on the
result topic lead (no `reply_to` elsewhere). A parked request's input
offset is not committed until it is answered (at-least-once: the loop
commits below it; exactly-once: its offset stays open in its partition's
transaction), so a router that dies with requests parked re-reads them.
Coalescing is per router: a leader routed by another router is not seen. Pure bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sluicegate.runtime.records import Record
from sluicegate.schemas.models import InferenceRequest

from .ingress import Prepared


@dataclass(frozen=True, kw_only=True)
class Waiter:
    """A parked request: its record, what `decode_all` made of it, and the drift
    alarms its arrival raised (sent when it is answered)."""

    rec: Record
    outcome: Prepared
    alarms: list[Any]  # the core's `Produce` records
    parked_ms: int

    @property
    def request(self) -> InferenceRequest:
        return self.outcome.request


class Coalescer:
    def __init__(self, *, max_waiters: int = 10_000, max_wait_ms: int = 120_000) -> None:
        self._max = max_waiters
        self._max_wait_ms = max_wait_ms
        self._leader_by_key: dict[str, str] = {}
        self._key_by_leader: dict[str, str] = {}
        self._waiters: dict[str, list[Waiter]] = {}  # leader request id -> parked
        self._parked: dict[tuple[str, int], set[int]] = {}  # (topic, partition) -> offsets
        self.size = 0

    def leader(self, key: str) -> str | None:
        """The request id in flight with content `key`, if any and if there is room."""
        return self._leader_by_key.get(key) if self.size < self._max else None

    def lead(self, key: str, request_id: str) -> None:
        """`request_id` was routed with content `key`."""
        self._leader_by_key[key] = request_id
        self._key_by_leader[request_id] = key

    def park(self, leader: str, waiter: Waiter) -> None:
        self._waiters.setdefault(leader, []).append(waiter)
        self._parked.setdefault((waiter.rec.topic, waiter.rec.partition), set()).add(
            waiter.rec.offset
        )
        self.size += 1

    def settle(self, request_id: str) -> list[Waiter]:
        """The leader `request_id` has its result: its parked requests, now to answer."""
        key = self._key_by_leader.pop(request_id, None)
        if key is not None and self._leader_by_key.get(key) == request_id:
            del self._leader_by_key[key]
        waiters = self._waiters.pop(request_id, [])
        for w in waiters:
            self._unpark(w.rec)
        return waiters

    def overdue(self, now_ms: int) -> list[Waiter]:
        """Requests parked longer than `max_wait_ms`, unparked (their leader forgotten)."""
        late = [
            leader
            for leader, ws in self._waiters.items()
            if now_ms - ws[0].parked_ms > self._max_wait_ms
        ]
        return [w for leader in late for w in self.settle(leader)]

    def is_parked(self, rec: Record) -> bool:
        return rec.offset in self._parked.get((rec.topic, rec.partition), ())

    def lowest(self, topic: str, partition: int) -> int | None:
        """The lowest parked offset of a partition: commit no further."""
        offsets = self._parked.get((topic, partition))
        return min(offsets) if offsets else None

    def drop(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget the requests parked from `partitions` (revoked: their new owner re-reads them)."""
        gone = set(partitions)
        for leader in list(self._waiters):
            kept = [w for w in self._waiters[leader] if (w.rec.topic, w.rec.partition) not in gone]
            self.size -= len(self._waiters[leader]) - len(kept)
            if kept:
                self._waiters[leader] = kept
            else:
                del self._waiters[leader]
        for tp in gone:
            self._parked.pop(tp, None)

    def _unpark(self, rec: Record) -> None:
        offsets = self._parked.get((rec.topic, rec.partition))
        if offsets is not None:
            offsets.discard(rec.offset)
            if not offsets:
                del self._parked[(rec.topic, rec.partition)]
        self.size -= 1
