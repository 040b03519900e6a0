"""Pool health and observed capacity, as the router learns them from rollups.

Pure bookkeeping: `observe()` takes a window rollup, `state()` answers for a
model x pool at a given time. A pool nobody has reported on (or whose last
report is older than `ttl_s`) is `unknown`; the routing policy decides what
unknown means. Given a `PoolLiveness`, the state also says whether the
pool's work topic has a live consumer (`consumers`), which the policy
weighs before anything the rollups say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .liveness import Liveness, PoolLiveness
from .records import WindowRollup

Health = Literal["healthy", "unhealthy", "unknown"]


@dataclass(frozen=True, kw_only=True)
class PoolState:
    health: Health
    # Real cost per second the pool got through in its last window (0 if unknown).
    capacity: float = 0.0
    error_rate: float = 0.0
    # Whether the pool's work topic has a consumer (unknown without a pool watch).
    consumers: Liveness = "unknown"


class PoolHealth:
    """The latest window per model x pool (all versions summed). Not thread-safe."""

    def __init__(
        self,
        *,
        max_error_rate: float = 0.2,
        ttl_s: float = 60.0,
        liveness: PoolLiveness | None = None,
        work_topic: Callable[[str, str], str] | None = None,
    ) -> None:
        self._max_error_rate = max_error_rate
        self._liveness = liveness
        self._work_topic = work_topic
        self._ttl_ms = ttl_s * 1000
        # (model, pool) -> window end -> rollups of that window, one per version
        self._latest: dict[tuple[str, str], tuple[int, dict[str, WindowRollup]]] = {}

    def observe(self, rollup: WindowRollup) -> None:
        key = (rollup.model, rollup.pool)
        end, by_version = self._latest.get(key, (-1, {}))
        if rollup.end_ms < end:
            return  # an older window arriving late changes nothing
        if rollup.end_ms > end:
            by_version = {}
        # Shorter windows react faster; a minute window only fills gaps.
        current = by_version.get(rollup.version)
        if current is None or rollup.window_s <= current.window_s:
            by_version[rollup.version] = rollup
        self._latest[key] = (rollup.end_ms, by_version)

    def state(self, model: str, pool: str, *, now_ms: int) -> PoolState:
        consumers: Liveness = "unknown"
        if self._liveness is not None and self._work_topic is not None:
            consumers = self._liveness.state(self._work_topic(model, pool), now_ms=now_ms)
        end, by_version = self._latest.get((model, pool), (-1, {}))
        if not by_version or now_ms - end > self._ttl_ms:
            return PoolState(health="unknown", consumers=consumers)
        requests = sum(r.requests for r in by_version.values())
        failed = sum(r.errors + r.expired for r in by_version.values())
        rate = failed / requests if requests else 0.0
        capacity = sum(r.cost_per_s for r in by_version.values())
        health: Health = "unhealthy" if rate > self._max_error_rate else "healthy"
        return PoolState(health=health, capacity=capacity, error_rate=rate, consumers=consumers)
