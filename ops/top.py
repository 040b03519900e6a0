"""`sluicegate top`: a live terminal view of the telemetry rollups (rich).

A row whose latest window ended more than `stale_after_s` ago (traffic
stopped, or its rollups did) is shown dimmed with its age in the `age`
column; after `clear_after_s` it is dropped. Shadow diffs and drift alarms
age the same way. Time comes from an injected clock (Unix epoch ms).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rich.console import Group
from rich.live import Live
from rich.table import Table

from sluicegate.runtime.clock import now_ms
from sluicegate.runtime.follow import Follower
from sluicegate.runtime.records import Record
from sluicegate.schemas.errors import WireError
from sluicegate.streams.client import ClientSettings
from sluicegate.streams.records import DriftEvent, ShadowDiff, WindowRollup, decode_rollup


class TopView:
    """The latest rollup per model x pool x version, plus shadow diffs and drift alarms."""

    def __init__(
        self,
        *,
        window_s: int,
        stale_after_s: float | None = None,
        clear_after_s: float | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.window_s = window_s
        # Defaults: stale once three windows passed without a new one; gone after ten.
        self.stale_after_s = 3.0 * window_s if stale_after_s is None else stale_after_s
        self.clear_after_s = 10.0 * window_s if clear_after_s is None else clear_after_s
        self._clock = clock
        self.windows: dict[tuple[str, str, str], WindowRollup] = {}
        self.shadows: dict[tuple[str, str, str], ShadowDiff] = {}
        self.drifts: dict[tuple[str, str], DriftEvent] = {}

    def handle(self, rec: Record) -> None:
        try:
            record = decode_rollup(rec.value, list(rec.headers))
        except (WireError, ValueError):
            return
        if isinstance(record, WindowRollup):
            if record.window_s == self.window_s:
                self.windows[(record.model, record.pool, record.version)] = record
        elif isinstance(record, ShadowDiff):
            key = (record.model, record.primary_version, record.shadow_version)
            self.shadows[key] = record
        elif isinstance(record, DriftEvent):
            self.drifts[(record.model, record.statistic)] = record

    def age_s(self, end_ms: int) -> float:
        return max(0.0, (self._clock() - end_ms) / 1000)

    def prune(self) -> None:
        """Drop what ended more than `clear_after_s` ago."""
        limit = self.clear_after_s
        self.windows = {k: w for k, w in self.windows.items() if self.age_s(w.end_ms) <= limit}
        self.shadows = {k: d for k, d in self.shadows.items() if self.age_s(d.end_ms) <= limit}
        self.drifts = {k: e for k, e in self.drifts.items() if self.age_s(e.ts_ms) <= limit}

    def _style(self, end_ms: int) -> str | None:
        return "dim" if self.age_s(end_ms) > self.stale_after_s else None

    def _age(self, end_ms: int) -> str:
        age = self.age_s(end_ms)
        return f"stale {age:.0f} s" if age > self.stale_after_s else f"{age:.0f} s"

    def render(self) -> Group:
        self.prune()
        table = Table(title=f"sluicegate top: {self.window_s} s windows ({time.strftime('%X')})")
        for col in (
            "model",
            "pool",
            "ver",
            "req/s",
            "cost/s",
            "p50",
            "p95",
            "p99",
            "queue p95",
            "batch",
            "pad",
            "err",
            "exp",
            "rej",
            "lag cost",
            "age",
        ):
            table.add_column(col, justify="right" if col not in ("model", "pool") else "left")
        for (model, pool, version), w in sorted(self.windows.items()):
            table.add_row(
                model,
                pool,
                version,
                f"{w.throughput_rps:.1f}",
                f"{w.cost_per_s:.0f}",
                f"{w.latency_ms.p50:.0f}",
                f"{w.latency_ms.p95:.0f}",
                f"{w.latency_ms.p99:.0f}",
                f"{w.queue_ms.p95:.0f}",
                f"{w.mean_batch_size:.1f}",
                f"{w.padding_waste:.0%}",
                f"{w.error_rate:.1%}",
                f"{w.expired_rate:.1%}",
                f"{w.rejected_rate:.1%}",
                "-" if w.lag_cost < 0 else f"{w.lag_cost:.0f}",
                self._age(w.end_ms),
                style=self._style(w.end_ms),
            )
        parts: list[Table] = [table]
        if self.shadows:
            shadow = Table(title="shadow vs primary")
            for col in (
                "model",
                "primary",
                "shadow",
                "pairs",
                "agree",
                "similarity",
                "Δ ms",
                "age",
            ):
                shadow.add_column(col)
            for (model, pv, sv), d in sorted(self.shadows.items()):
                shadow.add_row(
                    model,
                    pv,
                    sv,
                    str(d.pairs),
                    f"{d.status_agreement:.1%}",
                    f"{d.mean_similarity:.4f}",
                    f"{d.mean_latency_delta_ms:+.1f}",
                    self._age(d.end_ms),
                    style=self._style(d.end_ms),
                )
            parts.append(shadow)
        if self.drifts:
            drift = Table(title="input drift alarms")
            for col in (
                "model",
                "statistic",
                "psi",
                "threshold",
                "baseline median",
                "recent median",
                "age",
            ):
                drift.add_column(col)
            for (model, stat), e in sorted(self.drifts.items()):
                drift.add_row(
                    model,
                    stat,
                    f"{e.psi:.3f}",
                    f"{e.threshold:.2f}",
                    f"{e.baseline_median:.0f}",
                    f"{e.recent_median:.0f}",
                    self._age(e.ts_ms),
                    style=self._style(e.ts_ms),
                )
            parts.append(drift)
        return Group(*parts)


async def run_top(*, window_s: int = 10, lookback_s: int = 120) -> None:
    s = ClientSettings()  # brokers and topics as every client finds them (the local stack)
    view = TopView(window_s=window_s)
    follower = Follower(
        kafka=s.kafka,
        topic=s.topics.telemetry_rollup,
        handle=view.handle,
        start=time.time_ns() // 1_000_000 - lookback_s * 1000,
        name="top",
    )
    await follower.start()
    try:
        with Live(view.render(), refresh_per_second=2) as live:
            while follower.failed is None:
                await asyncio.sleep(0.5)
                live.update(view.render())
            raise follower.failed
    finally:
        await follower.stop()
