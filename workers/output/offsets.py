"""Which offset of each partition may be committed.

Batches finish out of order, so a partition's committed offset may only
advance to the lowest offset whose result is not yet acknowledged. Pure
bookkeeping; the engine calls `track` on read and `done` on acknowledgement.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._pending: dict[P, set[int]] = {}
        # Next offset to read after everything seen so far, per partition.
        self._high: dict[P, int] = {}
        self._committed: dict[P, int] = {}

    def track(self, partition: P, offset: int) -> None:
        """Record that `offset` was read and its result is not yet acknowledged."""
        self._pending.setdefault(partition, set()).add(offset)
        self._high[partition] = max(self._high.get(partition, 0), offset + 1)

    def done(self, partition: P, offset: int) -> None:
        """Record that `offset`'s result was acknowledged. Unknown offsets are ignored."""
        pending = self._pending.get(partition)
        if pending is not None:
            pending.discard(offset)

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[P, int]:
        """Offsets (next to read) that may be committed now and were not committed yet."""
        ready: dict[P, int] = {}
        for partition, high in self._high.items():
            pending = self._pending.get(partition)
            upto = min(pending) if pending else high
            if upto > self._committed.get(partition, -1):
                ready[partition] = upto
        return ready

    def mark_committed(self, offsets: dict[P, int]) -> None:
        for partition, offset in offsets.items():
            self._committed[partition] = max(self._committed.get(partition, -1), offset)

    def forget(self, partitions: list[P]) -> None:
        """Drop state of partitions this worker no longer owns (after a rebalance)."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._high.pop(partition, None)
            self._committed.pop(partition, None)

    def lag(self, highwater: dict[P, int | None]) -> dict[P, int]:
        """Records not yet answered per partition: high watermark minus the lowest unanswered.

        Partitions with no known high watermark, or not read yet, are left out.
        """
        out: dict[P, int] = {}
        for partition, high in highwater.items():
            if high is None or partition not in self._high:
                continue
            pending = self._pending.get(partition)
            low = min(pending) if pending else self._high[partition]
            out[partition] = max(0, high - low)
        return out
