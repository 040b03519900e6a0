"""Tumbling windows over telemetry events, per model x pool x version.

Pure: events in, `WindowRollup`s out; the caller supplies wall-clock time.
Events fall into windows by their own timestamp (`ts_ms`, event time).
Latency and queue wait go into DDSketches (1 % relative accuracy), which
merge exactly: each minute window is the merge of its six 10 s windows
rather than a second pass over the events, and rollups from several
processes could be merged the same way.

A window closes when the clock is `grace_s` past its end and no event for it
arrived in the last `grace_s`; an event for a window already closed is late,
counted in `late` and dropped (its window was published without it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ddsketch import DDSketch

from sluicegate.schemas.catalog import CATALOG
from sluicegate.schemas.models import Status, TelemetryEvent

from .records import Quantiles, WindowRollup

Key = tuple[str, str, str]  # model, pool, version
RELATIVE_ACCURACY = 0.01


def _sketch() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def quantiles(sketch: DDSketch) -> Quantiles:
    if sketch.count == 0:
        return Quantiles()
    q = [float(sketch.get_quantile_value(p) or 0.0) for p in (0.50, 0.95, 0.99)]
    return Quantiles(p50=round(q[0], 3), p95=round(q[1], 3), p99=round(q[2], 3))


@dataclass
class WindowState:
    """The running totals of one window of one key."""

    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batch_members: int = 0
    real_cost: float = 0.0
    padded_cost: float = 0.0
    latency: DDSketch = field(default_factory=_sketch)
    queue: DDSketch = field(default_factory=_sketch)
    last_arrival: float = 0.0  # wall clock, seconds

    def add(self, event: TelemetryEvent) -> None:
        if event.kind == "batch":
            self.batches += 1
            self.batch_members += event.batch_size
            spec = CATALOG.get(event.model)
            real = (
                spec.cost(tokens=event.tokens, pixels=event.pixels)
                if spec
                else event.tokens + event.pixels
            )
            self.real_cost += real
            self.padded_cost += event.padded_cost
            return
        self.requests += 1
        status = (event.status or Status.OK).value
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if event.batch_size > 0:  # it ran: expired / rejected requests never reached a batch
            self.latency.add(max(event.queue_ms + event.compute_ms, 0.0))
            self.queue.add(max(event.queue_ms, 0.0))

    def merge(self, other: WindowState) -> None:
        self.requests += other.requests
        for status, n in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n
        self.batches += other.batches
        self.batch_members += other.batch_members
        self.real_cost += other.real_cost
        self.padded_cost += other.padded_cost
        self.latency.merge(other.latency)
        self.queue.merge(other.queue)
        self.last_arrival = max(self.last_arrival, other.last_arrival)

    def rollup(self, key: Key, *, window_s: int, start_ms: int) -> WindowRollup:
        model, pool, version = key
        n = self.requests
        s = self.by_status

        def rate(status: Status) -> float:
            return round(s.get(status.value, 0) / n, 6) if n else 0.0

        return WindowRollup(
            model=model,
            pool=pool,
            version=version,
            window_s=window_s,
            start_ms=start_ms,
            end_ms=start_ms + window_s * 1000,
            requests=n,
            ok=s.get("ok", 0),
            errors=s.get("error", 0),
            expired=s.get("expired", 0),
            rejected=s.get("rejected", 0),
            batches=self.batches,
            throughput_rps=round(n / window_s, 3),
            cost_per_s=round(self.real_cost / window_s, 3),
            mean_batch_size=round(self.batch_members / self.batches, 3) if self.batches else 0.0,
            padding_waste=(
                round(1 - self.real_cost / self.padded_cost, 6) if self.padded_cost else 0.0
            ),
            latency_ms=quantiles(self.latency),
            queue_ms=quantiles(self.queue),
            error_rate=rate(Status.ERROR),
            expired_rate=rate(Status.EXPIRED),
            rejected_rate=rate(Status.REJECTED),
        )


class TumblingWindows:
    """10 s windows fed by events; longer windows built by merging them."""

    def __init__(
        self, *, base_s: int = 10, longer_s: Iterable[int] = (60,), grace_s: float = 2.0
    ) -> None:
        self.base_s = base_s
        self.longer_s = tuple(longer_s)
        for size in self.longer_s:
            if size % base_s:
                raise ValueError(f"window of {size} s is not a multiple of the {base_s} s base")
        self._grace = grace_s
        # (size, start_ms, key) -> state
        self._open: dict[tuple[int, int, Key], WindowState] = {}
        self._closed_until: dict[Key, int] = {}  # base windows ending at or before are closed
        self.late = 0

    def add(self, event: TelemetryEvent, *, now_s: float) -> None:
        key: Key = (event.model, event.pool, event.model_version)
        size_ms = self.base_s * 1000
        start = event.ts_ms - event.ts_ms % size_ms
        wkey = (self.base_s, start, key)
        if wkey not in self._open and start + size_ms <= self._closed_until.get(key, -1):
            self.late += 1
            return
        state = self._open.setdefault(wkey, WindowState())
        state.add(event)
        state.last_arrival = now_s

    def close_due(self, *, now_s: float, flush: bool = False) -> list[WindowRollup]:
        """Close the windows that are due (all of them with `flush`); base windows first,
        each merged into its longer windows before those are considered."""
        out: list[WindowRollup] = []
        for size in (self.base_s, *self.longer_s):
            for wkey in sorted(k for k in self._open if k[0] == size):
                _, start, key = wkey
                state = self._open[wkey]
                end_s = (start + size * 1000) / 1000
                quiet = now_s - state.last_arrival >= self._grace
                if not flush and (now_s < end_s + self._grace or not quiet):
                    continue
                if size != self.base_s and self._base_open_within(key, start, size):
                    continue  # a base window inside it is still taking events
                del self._open[wkey]
                out.append(state.rollup(key, window_s=size, start_ms=start))
                if size == self.base_s:
                    end_ms = start + size * 1000
                    self._closed_until[key] = max(self._closed_until.get(key, -1), end_ms)
                    for longer in self.longer_s:
                        lstart = start - start % (longer * 1000)
                        self._open.setdefault((longer, lstart, key), WindowState()).merge(state)
        return out

    def _base_open_within(self, key: Key, start: int, size: int) -> bool:
        end = start + size * 1000
        return any(k[0] == self.base_s and k[2] == key and start <= k[1] < end for k in self._open)
