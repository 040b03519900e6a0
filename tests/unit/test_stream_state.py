"""Pure state of the streams processes: cache, control table, windows, drift, shadow."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sluicegate.schemas.codec import encode
from sluicegate.schemas.control import Cancel, RouteSpec, decode_control
from sluicegate.schemas.models import (
    ErrorInfo,
    InferenceRequest,
    InferenceResult,
    Status,
    TelemetryEvent,
)
from sluicegate.streams.cache import ResultCache, answer_from, content_key
from sluicegate.streams.control import ControlState
from sluicegate.streams.drift import DriftMonitor, DriftSettings
from sluicegate.streams.shadow import ShadowDiffer, similarity
from sluicegate.streams.windows import TumblingWindows


def request(rid: str, text: str = "hello", **kw: object) -> InferenceRequest:
    return InferenceRequest(request_id=rid, model="text-embed", texts=[text], **kw)  # type: ignore[arg-type]


def ok(rid: str, vec: list[float] | None = None, version: str = "1") -> InferenceResult:
    return InferenceResult(
        request_id=rid, status=Status.OK, model="text-embed",
        outputs={"embedding": vec or [1.0, 0.0]}, model_version=version,
    )  # fmt: skip


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_content_key_ignores_identity_fields_but_not_inputs() -> None:
    a = request("a", tenant="x", priority=3)
    assert content_key(a) == content_key(request("b"))
    assert content_key(a) != content_key(request("c", "hello!"))
    assert content_key(a) != content_key(request("d", parameters={"normalize": False}))


def test_cache_keeps_ok_results_of_expected_requests_for_ttl() -> None:
    clock = Clock()
    cache = ResultCache(ttl_s=10, clock=clock)
    key = content_key(request("a"))
    assert not cache.offer(ok("a")), "not expected: not cached"
    cache.expect("a", key)
    cache.expect("e", "other")
    failed = InferenceResult(
        request_id="e", status=Status.ERROR, error=ErrorInfo(code="x", message="y")
    )
    assert not cache.offer(failed)
    assert cache.offer(ok("a"))
    hit = cache.lookup(key)
    assert hit is not None
    answer = answer_from(hit, request("b", created_ms=1000), now_ms=1500)
    assert answer.request_id == "b" and answer.cached and answer.timings.total_ms == 500
    clock.t = 10.5
    assert cache.lookup(key) is None and cache.hits == 1


def test_control_state_applies_routes_cancels_and_tombstones() -> None:
    state = ControlState(cancel_ttl_s=60)
    spec = RouteSpec(model="ocr", versions={"1": 1})
    key, record = decode_control(spec.key(), encode(spec))
    state.apply(key, record, now=0)
    assert state.route("ocr") == spec
    cancel = Cancel(request_id="r1", ts_ms=1000)
    state.apply(*decode_control(cancel.key(), encode(cancel)), now=1000)
    assert state.cancelled("r1")
    old = Cancel(request_id="r0", ts_ms=0)
    state.apply(*decode_control(old.key(), encode(old)), now=61_000)
    assert not state.cancelled("r0"), "older than the TTL when read"
    state.expire(now=62_000)
    assert not state.cancelled("r1")
    assert state.take_stale() == ["r0", "r1"] and state.take_stale() == []
    state.expire(now=63_000)
    state.apply(*decode_control(cancel.key(), None), now=63_000)  # the tombstone comes back
    assert state.take_stale() == []
    state.apply(*decode_control(spec.key(), None), now=0)
    assert state.route("ocr") is None
    with pytest.raises(ValueError, match="neither"):
        decode_control(b"other/x", b"")


def event(ts: int, latency: float, **kw: object) -> TelemetryEvent:
    return TelemetryEvent(
        kind="request", model="text-embed", pool="cpu", worker="w", model_version="1",
        ts_ms=ts, status=Status.OK, batch_size=1, queue_ms=0.0, compute_ms=latency, **kw,
    )  # type: ignore[arg-type]  # fmt: skip


def test_windows_close_after_grace_merge_into_minutes_and_drop_late_events() -> None:
    rng = random.Random(1)
    windows = TumblingWindows(grace_s=2)
    values = [rng.lognormvariate(3, 0.5) for _ in range(600)]
    for i, v in enumerate(values):
        windows.add(event(60_000 + (i % 6) * 10_000 + 5, v), now_s=100.0)
    assert windows.close_due(now_s=101.0) == [], "still within grace"
    closed = windows.close_due(now_s=125.0)
    tens = [r for r in closed if r.window_s == 10]
    [minute] = [r for r in closed if r.window_s == 60]
    assert len(tens) == 6 and all(r.requests == 100 for r in tens)
    exact = np.percentile(values, 99, method="lower")
    assert minute.requests == 600 and abs(minute.latency_ms.p99 - exact) / exact < 0.02
    windows.add(event(60_005, 1.0), now_s=126.0)
    assert windows.late == 1 and windows.close_due(now_s=200.0) == []


def test_drift_alarms_once_on_a_shift_and_never_on_a_stable_stream() -> None:
    rng = random.Random(2)
    monitor = DriftMonitor(
        settings=DriftSettings(baseline_size=300, recent_size=100, check_every=10)
    )
    stable = [monitor.observe("m", "tokens", rng.gauss(20, 4), now_ms=0) for _ in range(1000)]
    assert not any(stable)
    shifted = [monitor.observe("m", "tokens", rng.gauss(35, 4), now_ms=1) for _ in range(150)]
    alarms = [e for e in shifted if e is not None]
    assert len(alarms) == 1, alarms
    # A one-character move of a low-cardinality length fills a new bin, but is no drift.
    texts = DriftMonitor(settings=DriftSettings(baseline_size=100, recent_size=50, check_every=5))
    lengths = [81.0, 82.0] * 50 + [83.0] * 200
    assert not any(texts.observe("m", "chars", v, now_ms=0) for v in lengths)
    assert alarms[0].psi > 0.25 and alarms[0].recent_median > alarms[0].baseline_median


def test_shadow_pairs_either_order_and_scores_similarity() -> None:
    assert similarity([1.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    assert similarity([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert similarity("invoice 2041", "invoice 2047") == pytest.approx(11 / 12, abs=0.01)
    assert similarity(0.5, 0.4) == pytest.approx(0.8)
    differ = ShadowDiffer(window_s=5)
    differ.offer(ok("a", [1.0, 0.0]), shadow=False, now_s=0, now_ms=0)
    differ.offer(ok("a", [1.0, 0.0], "2"), shadow=True, now_s=1, now_ms=1000)
    differ.offer(ok("b", [0.6, 0.8], "2"), shadow=True, now_s=1, now_ms=1000)
    differ.offer(ok("b", [1.0, 0.0]), shadow=False, now_s=2, now_ms=2000)
    assert differ.due(now_s=3, now_ms=3000) == []
    [diff] = differ.due(now_s=7, now_ms=7000)
    assert (diff.pairs, diff.primary_version, diff.shadow_version) == (2, "1", "2")
    assert diff.mean_similarity == pytest.approx(0.8) and diff.min_similarity == pytest.approx(0.6)
