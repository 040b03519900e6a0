"""Router state that survives a restart: result-cache entries and drift baselines.

A compacted topic of our own (`sg.router.state`), in the manner of a stream
processor's changelog: keys `cache/<content key>` (value: the cached `ok`
result) and `drift/<model>/<statistic>` (value: the frozen baseline, a
msgpack list of floats). A router writes an entry when its cache takes a
result or a drift baseline fills, and every router follows the topic from
its beginning (caught up before it joins its group), so a restarted router,
and any other router of the group, starts with the same cache and
baselines. Entries past the cache TTL are skipped on restore and
tombstoned, so compaction keeps the topic to the live set.

Chosen over faust-streaming tables with changelog topics (docs/scaling.md):
faust tables are partitioned like the input, so a rebalance moves a table
partition to another router, which must replay it before it can answer
(standby replicas aside), and the router's hot path would become a faust
agent, measured >= 10x slower than this plain loop. Here the state is
read-mostly and small, every router holds all of it, and a rebalance moves
nothing. Pure bookkeeping: the router's loop sends `records()` and its
follower feeds `offer()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgpack

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.records import Record
from sluicegate.schemas.codec import decode_result, encode, headers
from sluicegate.schemas.errors import WireError

from .cache import ResultCache
from .drift import DriftMonitor
from .router_core import Produce

log = logging.getLogger("sluicegate.router.state")

CACHE = "cache/"
DRIFT = "drift/"


class RouterState:
    """Restores the cache and drift baselines from the state topic and says what to write."""

    def __init__(
        self,
        *,
        topic: str,
        cache: ResultCache | None,
        drift: DriftMonitor,
        ttl_s: float,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._topic = topic
        self._cache = cache
        self._drift = drift
        self._ttl_ms = ttl_s * 1000
        self._clock_ms = clock_ms
        self._stale: list[str] = []  # keys to tombstone
        self.restored = 0

    def offer(self, rec: Record) -> None:
        """A record of the state topic (the follower's handler)."""
        if rec.key is None or rec.value is None:
            return  # a tombstone, or not ours
        key = rec.key.decode(errors="replace")
        try:
            if key.startswith(CACHE) and self._cache is not None:
                result = decode_result(rec.value, list(rec.headers))
                age_ms = self._clock_ms() - (result.produced_ms or 0)
                if age_ms > self._ttl_ms:
                    self._stale.append(key)
                elif self._cache.restore(key.removeprefix(CACHE), result, age_s=age_ms / 1000):
                    self.restored += 1
            elif key.startswith(DRIFT):
                model, _, statistic = key.removeprefix(DRIFT).partition("/")
                values = msgpack.unpackb(rec.value)
                if self._drift.restore(model, statistic, [float(v) for v in values]):
                    self.restored += 1
        except (WireError, ValueError, TypeError, msgpack.UnpackException):
            log.warning("skipping a malformed state record (key %r)", key[:80])

    def records(self) -> list[Produce]:
        """New cache entries and baselines to write, and tombstones of stale entries."""
        out = [Produce(topic=self._topic, value=None, key=k.encode()) for k in self._stale]
        self._stale.clear()
        if self._cache is not None:
            for key, result in self._cache.take_new():
                out.append(
                    Produce(
                        topic=self._topic,
                        value=encode(result),
                        key=(CACHE + key).encode(),
                        headers=headers(),
                    )
                )
        for model, statistic, baseline in self._drift.take_completed():
            out.append(
                Produce(
                    topic=self._topic,
                    value=msgpack.packb(baseline),
                    key=f"{DRIFT}{model}/{statistic}".encode(),
                )
            )
        return out
