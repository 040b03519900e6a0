"""The router's state topic: cache entries and drift baselines outlive the router."""

from __future__ import annotations

import random

from sluicegate.schemas.codec import encode
from sluicegate.schemas.models import InferenceRequest, InferenceResult, Status
from sluicegate.streams.cache import ResultCache, content_key
from sluicegate.streams.drift import DriftMonitor, DriftSettings
from sluicegate.streams.router_core import Produce
from sluicegate.streams.state import RouterState
from tests.fakes import FakeRecord

TOPIC = "sg.router.state"
NOW_MS = 1_700_000_000_000
DRIFT = DriftSettings(baseline_size=100, recent_size=50, check_every=10)


def state(cache: ResultCache | None = None, drift: DriftMonitor | None = None) -> RouterState:
    return RouterState(
        topic=TOPIC,
        cache=cache,
        drift=drift or DriftMonitor(settings=DRIFT),
        ttl_s=300,
        clock_ms=lambda: NOW_MS,
    )


def as_record(p: Produce) -> FakeRecord:
    return FakeRecord(
        topic=p.topic,
        partition=0,
        offset=0,
        key=p.key,
        value=p.value,
        headers=list(p.headers or []),
    )


def test_a_cached_result_survives_a_restart_and_stale_ones_are_tombstoned() -> None:
    request = InferenceRequest(request_id="a", model="text-embed", texts=["same words"])
    key = content_key(request)
    first = ResultCache(ttl_s=300)
    before = state(first)
    first.expect("a", key)
    result = InferenceResult(
        request_id="a", status=Status.OK, model="text-embed", outputs={"e": [1.0]},
        produced_ms=NOW_MS - 5_000,
    )  # fmt: skip
    assert first.offer(result)
    [entry] = before.records()
    assert entry.topic == TOPIC and entry.key == f"cache/{key}".encode()
    assert before.records() == [], "each entry is written once"

    # A new router (a restart, or another member of the group) reads the topic back.
    second = ResultCache(ttl_s=300)
    after = state(second)
    after.offer(as_record(entry))
    hit = second.lookup(key)
    assert hit is not None and hit.outputs == {"e": [1.0]} and after.restored == 1

    old = result.model_copy(update={"produced_ms": NOW_MS - 301_000})
    stale = FakeRecord(topic=TOPIC, partition=0, offset=0, key=b"cache/old", value=encode(old))
    after.offer(stale)
    assert second.lookup("old") is None
    [tombstone] = after.records()
    assert tombstone.key == b"cache/old" and tombstone.value is None


def test_a_drift_baseline_survives_a_restart() -> None:
    rng = random.Random(3)
    first = DriftMonitor(settings=DRIFT)
    before = state(drift=first)
    for _ in range(DRIFT.baseline_size):
        assert first.observe("m", "tokens", rng.gauss(20, 2), now_ms=NOW_MS) is None
    [entry] = before.records()
    assert entry.key == b"drift/m/tokens"

    second = DriftMonitor(settings=DRIFT)
    after = state(drift=second)
    after.offer(as_record(entry))
    assert after.restored == 1
    # No new baseline to learn: shifted inputs alarm as soon as the recent window fills.
    events = [second.observe("m", "tokens", rng.gauss(60, 2), now_ms=NOW_MS) for _ in range(50)]
    assert any(e is not None for e in events)
    assert after.records() == [], "a restored baseline is not written again"


def test_a_malformed_state_record_is_skipped() -> None:
    cache = ResultCache(ttl_s=300)
    s = state(cache)
    s.offer(
        FakeRecord(topic=TOPIC, partition=0, offset=0, key=b"cache/x", value=b"\xc1 not msgpack")
    )
    s.offer(
        FakeRecord(topic=TOPIC, partition=0, offset=0, key=b"drift/m/tokens", value=b"\x93\x01")
    )
    s.offer(FakeRecord(topic=TOPIC, partition=0, offset=0, key=None, value=b"x"))
    assert s.restored == 0 and len(cache) == 0
