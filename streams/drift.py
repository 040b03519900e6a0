"""Input drift: is what tenants send now distributed like what they sent at first?

Per model and statistic (text tokens, text characters, image pixels, image
aspect ratio), the first `baseline_size` observations are the baseline;
they fix ten bins at their deciles. Every `check_every` observations the
last `recent_size` are binned the same way and compared by the population
stability index, PSI = sum((r - b) * ln(r / b)); crossing `threshold` (0.25
is the usual "significant shift") raises a `DriftEvent`, and no other until
the index has come back under the threshold, so one shift is one alarm.
PSI alone over-reacts to low-cardinality statistics (a text length moving
from 81 to 82 characters fills a new bin and scores high), so the median or
the 90th percentile must also have moved by `min_relative_shift`. Pure bookkeeping; the
router feeds it and publishes the events. Pixel statistics (brightness,
contrast) would need a full decode on the router's hot path and are not
computed. Baselines survive a restart through the router's state topic
(`state.py`).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from .records import DriftEvent

_EPS = 1e-4  # keeps an empty bin from making the index infinite


class DriftSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    baseline_size: int = Field(default=1000, ge=20)
    recent_size: int = Field(default=300, ge=20)
    check_every: int = Field(default=50, ge=1)
    threshold: float = Field(default=0.25, gt=0)
    # Relative move of the median or p90 that must come with the PSI crossing.
    min_relative_shift: float = Field(default=0.1, ge=0)


def psi(baseline: list[float], recent: list[float], edges: list[float]) -> float:
    return _psi(_shares(baseline, edges), _shares(recent, edges))


def _shares(values: list[float], edges: list[float]) -> list[float]:
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    return [max(c / len(values), _EPS) for c in counts]


def _psi(b: list[float], r: list[float]) -> float:
    return sum((ri - bi) * math.log(ri / bi) for bi, ri in zip(b, r, strict=True))


_QUANTILES = (0.5, 0.9)


def _quantiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[int(q * (len(ordered) - 1))] for q in _QUANTILES]


def _shifted(before: list[float], after: list[float], shift: float) -> bool:
    return any(abs(a - b) > shift * max(abs(b), 1e-9) for b, a in zip(before, after, strict=True))


def _edges(baseline: list[float]) -> list[float]:
    """The baseline's deciles: the bin edges."""
    ordered = sorted(baseline)
    return sorted({ordered[int(len(ordered) * k / 10)] for k in range(1, 10)})


@dataclass
class _Series:
    baseline: list[float] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)
    # Of the full baseline, computed once when it fills (it never changes after):
    # its share of each bin, and its median and p90.
    shares: list[float] = field(default_factory=list)
    quantiles: list[float] = field(default_factory=list)
    recent: deque[float] = field(default_factory=deque)
    since_check: int = 0
    alarmed: bool = False

    def fix(self) -> None:
        """The baseline is set: its bins, shares and quantiles."""
        self.edges = _edges(self.baseline)
        self.shares = _shares(self.baseline, self.edges)
        self.quantiles = _quantiles(self.baseline)


class DriftMonitor:
    def __init__(self, *, settings: DriftSettings | None = None) -> None:
        self._s = settings or DriftSettings()
        self._series: dict[tuple[str, str], _Series] = {}
        # Baselines filled since the last `take_completed()` (for the state topic).
        self._completed: list[tuple[str, str, list[float]]] = []

    def take_completed(self) -> list[tuple[str, str, list[float]]]:
        """(model, statistic, baseline) of the baselines that filled since the last call."""
        done, self._completed = self._completed, []
        return done

    def restore(self, model: str, statistic: str, baseline: list[float]) -> bool:
        """A baseline from the state topic; kept unless this series already has its own."""
        series = self._series.setdefault((model, statistic), _Series())
        if len(series.baseline) >= self._s.baseline_size or len(baseline) < 10:
            return False
        series.baseline = list(baseline)
        series.fix()
        return True

    def observe(
        self, model: str, statistic: str, value: float, *, now_ms: int
    ) -> DriftEvent | None:
        s = self._s
        series = self._series.get((model, statistic))
        if series is None:  # (not setdefault: that builds a _Series on every call)
            series = self._series[model, statistic] = _Series()
        if len(series.baseline) < s.baseline_size:
            series.baseline.append(value)
            if len(series.baseline) == s.baseline_size:
                series.fix()
                self._completed.append((model, statistic, list(series.baseline)))
            return None
        series.recent.append(value)
        if len(series.recent) > s.recent_size:
            series.recent.popleft()
        series.since_check += 1
        if len(series.recent) < s.recent_size or series.since_check < s.check_every:
            return None
        series.since_check = 0
        recent = list(series.recent)
        index = _psi(series.shares, _shares(recent, series.edges))
        moved = _shifted(series.quantiles, _quantiles(recent), s.min_relative_shift)
        was, series.alarmed = series.alarmed, index > s.threshold and moved
        if was or not series.alarmed:
            return None
        return DriftEvent(
            model=model,
            statistic=statistic,
            psi=round(index, 4),
            threshold=s.threshold,
            baseline_median=float(statistics.median(series.baseline)),
            recent_median=float(statistics.median(recent)),
            baseline_count=len(series.baseline),
            recent_count=len(recent),
            ts_ms=now_ms,
        )
