"""Shadow diffing: pair each shadow result with its primary and compare them.

The router sends a shadow copy under the same request id with
`reply_to = sg.shadow.results`, so a primary result (on `sg.results`) and a
shadow result (on `sg.shadow.results`) with the same id are one pair. Either
may come first; unpaired halves are forgotten after `ttl_s`. Pairs are
summed per model x primary version x shadow version (the versions the
workers report) and emitted as `ShadowDiff` records every `window_s`.
Pure: the caller supplies the clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz

from sluicegate.schemas.models import InferenceResult

from .records import ShadowDiff


def similarity(a: Any, b: Any) -> float | None:
    """How alike two outputs are, in [0, 1] (cosine for vectors); None if incomparable."""
    if isinstance(a, list) and isinstance(b, list) and a and len(a) == len(b):
        if all(isinstance(x, int | float) for x in (*a, *b)):
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
            return max(0.0, dot / norm) if norm else float(a == b)
    if isinstance(a, str) and isinstance(b, str):
        return fuzz.ratio(a, b) / 100.0
    if isinstance(a, int | float) and isinstance(b, int | float):
        scale = max(abs(a), abs(b))
        return 1.0 if scale == 0 else max(0.0, 1.0 - abs(a - b) / scale)
    return None


def compare(primary: InferenceResult, shadow: InferenceResult) -> float:
    """Mean similarity over the outputs both results have (1.0 if neither has any)."""
    scores = [
        s
        for name in primary.outputs.keys() & shadow.outputs.keys()
        if (s := similarity(primary.outputs[name], shadow.outputs[name])) is not None
    ]
    if not scores:
        return 1.0 if not primary.outputs and not shadow.outputs else 0.0
    return sum(scores) / len(scores)


def _latency(result: InferenceResult) -> float:
    return result.timings.queue_ms + result.timings.compute_ms


@dataclass
class _Totals:
    pairs: int = 0
    agree: int = 0
    similarity: float = 0.0
    min_similarity: float = 1.0
    latency_delta: float = 0.0
    start_ms: int = 0


@dataclass
class ShadowDiffer:
    ttl_s: float = 120.0
    max_pending: int = 50_000
    window_s: float = 10.0
    _primary: OrderedDict[str, tuple[float, InferenceResult]] = field(default_factory=OrderedDict)
    _shadow: OrderedDict[str, tuple[float, InferenceResult]] = field(default_factory=OrderedDict)
    _totals: dict[tuple[str, str, str], _Totals] = field(default_factory=dict)
    _window_started: float | None = None

    def offer(self, result: InferenceResult, *, shadow: bool, now_s: float, now_ms: int) -> None:
        mine, theirs = (self._shadow, self._primary) if shadow else (self._primary, self._shadow)
        other = theirs.pop(result.request_id, None)
        if other is None:
            mine[result.request_id] = (now_s, result)
            while len(mine) > self.max_pending:
                mine.popitem(last=False)
            return
        primary, copy = (other[1], result) if shadow else (result, other[1])
        key = (primary.model, primary.model_version, copy.model_version)
        if self._window_started is None:
            self._window_started = now_s
        totals = self._totals.setdefault(key, _Totals(start_ms=now_ms))
        score = compare(primary, copy)
        totals.pairs += 1
        totals.agree += primary.status == copy.status
        totals.similarity += score
        totals.min_similarity = min(totals.min_similarity, score)
        totals.latency_delta += _latency(copy) - _latency(primary)

    def due(self, *, now_s: float, now_ms: int, flush: bool = False) -> list[ShadowDiff]:
        """The diffs of the window, once `window_s` has passed since its first pair."""
        for side in (self._primary, self._shadow):
            while side and now_s - next(iter(side.values()))[0] > self.ttl_s:
                side.popitem(last=False)
        started = self._window_started
        if started is None or (not flush and now_s - started < self.window_s):
            return []
        out = [
            ShadowDiff(
                model=model,
                primary_version=pv,
                shadow_version=sv,
                start_ms=t.start_ms,
                end_ms=now_ms,
                pairs=t.pairs,
                status_agreement=round(t.agree / t.pairs, 6),
                mean_similarity=round(t.similarity / t.pairs, 6),
                min_similarity=round(t.min_similarity, 6),
                mean_latency_delta_ms=round(t.latency_delta / t.pairs, 3),
            )
            for (model, pv, sv), t in self._totals.items()
        ]
        self._totals, self._window_started = {}, None
        return out
