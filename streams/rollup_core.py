"""The rollup process's bookkeeping, apart from its Kafka loop: records in, rollups out.

`RollupCore` decodes telemetry and result records into tumbling windows and
shadow pairs and answers which rollups are due; `with_lag()` prices a
window's backlog once the loop has read it from the broker. No I/O: the
caller supplies the records and the wall-clock time (Unix epoch seconds).
Not thread-safe: the loop and its followers call it from one event loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from sluicegate.runtime.records import Record
from sluicegate.schemas.codec import decode_result, decode_telemetry
from sluicegate.schemas.errors import WireError

from .records import RollupRecord, WindowRollup
from .shadow import ShadowDiffer
from .windows import TumblingWindows

__all__ = ["RollupCore", "with_lag"]


class RollupCore:
    def __init__(self, *, window_grace_s: float, shadow_window_s: float) -> None:
        self.windows = TumblingWindows(grace_s=window_grace_s)
        self.shadow = ShadowDiffer(window_s=shadow_window_s)

    def add(self, records: Iterable[Record], *, now_s: float) -> None:
        """Telemetry records into their windows; records that do not decode are skipped.

        A batch event's member arrays count as the request events they stand
        for (`TelemetryEvent.members`), so windows come out as they did when
        every request sent its own event.
        """
        for rec in records:
            try:
                event = decode_telemetry(rec.value, list(rec.headers))
            except WireError:
                continue
            self.windows.add(event, now_s=now_s)
            for member in event.members():
                self.windows.add(member, now_s=now_s)

    def offer(self, rec: Record, *, shadow: bool, now_s: float) -> None:
        """A record of the primary (or, with `shadow`, the shadow) result topic."""
        try:
            result = decode_result(rec.value, list(rec.headers))
        except WireError:
            return
        self.shadow.offer(result, shadow=shadow, now_s=now_s, now_ms=int(now_s * 1000))

    def due(
        self, *, now_s: float, flush: bool = False
    ) -> tuple[list[WindowRollup], list[RollupRecord]]:
        """Windows that closed (the loop adds their lag) and shadow diffs; all with `flush`."""
        closed = self.windows.close_due(now_s=now_s, flush=flush)
        diffs: list[RollupRecord] = list(
            self.shadow.due(now_s=now_s, now_ms=int(now_s * 1000), flush=flush)
        )
        return closed, diffs


def with_lag(rollup: WindowRollup, lag: int) -> WindowRollup:
    """Fill `lag_cost`: `lag` unconsumed records on the pool's work topic x the mean cost."""
    members = max(1.0, rollup.mean_batch_size * rollup.batches)
    mean_cost = rollup.cost_per_s * rollup.window_s / members
    return rollup.model_copy(update={"lag_cost": round(lag * mean_cost, 3)})
