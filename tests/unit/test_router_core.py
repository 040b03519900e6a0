"""The router's decisions without a broker: fake records in, records to produce out.

Real policy objects (PiiMasker, TenantQuotas on a fake clock, ResultCache,
PoolHealth, ControlState); only the records are fakes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from sluicegate.schemas.codec import decode_request, decode_result, encode, headers
from sluicegate.schemas.control import (
    POOL_HEADER,
    PRECISION_HEADER,
    SHADOW_OF_HEADER,
    VERSION_HEADER,
    Cancel,
    RouteSpec,
)
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import WireError
from sluicegate.schemas.models import ErrorInfo, InferenceRequest, InferenceResult, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.cache import ResultCache, content_key
from sluicegate.streams.control import ControlState
from sluicegate.streams.drift import DriftMonitor
from sluicegate.streams.health import PoolHealth
from sluicegate.streams.ingress import Prepared, Refused, prepare
from sluicegate.streams.pii import PiiMasker
from sluicegate.streams.quota import QuotaSettings, TenantQuota, TenantQuotas
from sluicegate.streams.records import WindowRollup
from sluicegate.streams.router_core import Produce, RouterCore, decode_all
from sluicegate.streams.routing import RoutingSettings

NOW_MS = 1_700_000_000_000
TOPICS = TopicSettings()
COUNTER = TokenCounter()
MASKER = PiiMasker()
# Every request is "large" (small_cost 0), so it never goes to cpu by size alone.
ROUTING = RoutingSettings(pools=("a100", "mi200"), small_cost={"text-embed": 0})


@dataclass
class FakeRecord:
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=headers)
    topic: str = TOPICS.requests
    partition: int = 0
    offset: int = 0


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Rig:
    core: RouterCore
    control: ControlState
    cache: ResultCache
    health: PoolHealth
    quota_clock: Clock

    def run(self, *records: FakeRecord) -> list[list[Produce]]:
        outcomes = decode_all(records, masker=MASKER, counter=COUNTER)
        return [self.core.handle(rec, o) for rec, o in zip(records, outcomes, strict=True)]


def rig(*, quota: TenantQuota | None = None, routing: RoutingSettings = ROUTING) -> Rig:
    control = ControlState()
    cache = ResultCache(ttl_s=60, clock=Clock())
    health = PoolHealth(max_error_rate=0.2, ttl_s=60)
    quota_clock = Clock()
    quotas = TenantQuotas(settings=QuotaSettings(default=quota or TenantQuota()), clock=quota_clock)
    core = RouterCore(
        topics=TOPICS,
        routing=routing,
        control=control,
        quotas=quotas,
        health=health,
        drift=DriftMonitor(),
        cache=cache,
        clock=lambda: NOW_MS,
    )
    return Rig(core=core, control=control, cache=cache, health=health, quota_clock=quota_clock)


def req(rid: str = "r1", text: str = "hello there", **kw: object) -> FakeRecord:
    request = InferenceRequest(request_id=rid, model="text-embed", texts=[text], **kw)  # type: ignore[arg-type]
    return FakeRecord(value=encode(request), key=rid.encode())


def result_of(p: Produce) -> InferenceResult:
    assert p.topic == TOPICS.results
    return decode_result(p.value, p.headers)


def hdr(p: Produce) -> dict[str, bytes]:
    return dict(p.headers or [])


def window(pool: str, *, requests: int, errors: int) -> WindowRollup:
    return WindowRollup(
        model="text-embed", pool=pool, version="1", window_s=10, start_ms=NOW_MS - 10_000,
        end_ms=NOW_MS, requests=requests, errors=errors, cost_per_s=1000.0,
    )  # fmt: skip


def test_a_valid_request_is_routed_to_its_work_topic_with_the_routing_headers() -> None:
    r = rig()
    trace = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    rec = req()
    rec.headers = [*headers(), ("x-client", b"kept"), trace, (POOL_HEADER, b"forged")]
    [out] = r.run(rec)
    [work] = out
    assert work.topic in {TOPICS.work("text-embed", p) for p in ("a100", "mi200")}
    assert work.key == b"r1"
    h = hdr(work)
    assert h[VERSION_HEADER] == b"1"
    assert work.topic == TOPICS.work("text-embed", h[POOL_HEADER].decode())
    assert h[PRECISION_HEADER] in {b"fp16", b"bf16"}
    assert h["x-client"] == b"kept"
    assert [k for k, _ in work.headers or []].count(POOL_HEADER) == 1, "client's header dropped"
    assert decode_request(work.value, work.headers).request_id == "r1"
    assert r.core.stats["routed"] == 1
    assert r.core.stats[f"pool:{h[POOL_HEADER].decode()}"] == 1


def test_an_undecodable_record_gets_an_error_result_and_a_dlq_record() -> None:
    r = rig()
    [out] = r.run(FakeRecord(value=b"\xc1 not msgpack", key=b"broken-1", offset=7))
    dlq, answer = out
    assert dlq.topic == TOPICS.dlq and dlq.value == b"\xc1 not msgpack"
    letter = DeadLetter.from_headers(dlq.headers or [])
    assert letter.stage == "ingress" and letter.source_offset == 7
    assert letter.request_id == "broken-1"
    result = result_of(answer)
    assert result.request_id == "broken-1" and result.status is Status.ERROR
    assert result.error is not None and result.error.code == letter.code
    assert r.core.stats[f"refused:{letter.code}"] == 1


def test_a_request_the_model_refuses_is_dead_lettered_masked() -> None:
    r = rig()
    bad = InferenceRequest(request_id="r2", model="ocr", texts=["mail me at a@b.example"])
    [out] = r.run(FakeRecord(value=encode(bad), key=b"r2"))
    dlq, answer = out
    assert b"a@b.example" not in (dlq.value or b"")
    assert result_of(answer).status is Status.ERROR


def test_pii_is_masked_in_what_is_forwarded() -> None:
    r = rig()
    [[work]] = r.run(req(text="write to maria.keller@firma-beispiel.de or call (415) 555-0132"))
    forwarded = decode_request(work.value, work.headers).texts[0]
    assert "maria.keller@firma-beispiel.de" not in forwarded
    assert "555-0132" not in forwarded
    assert forwarded.startswith("write to ")


def test_a_tenant_over_quota_is_rejected_with_retry_after() -> None:
    r = rig(quota=TenantQuota(rate=1, burst=10))  # 7 tokens a request: one fits the burst
    # Different texts of the same length (identical ones would be coalesced).
    first, second = r.run(req("q1", "one two three four five"), req("q2", "one two three four six"))
    assert first[0].topic == TOPICS.work("text-embed", hdr(first[0])[POOL_HEADER].decode())
    result = result_of(second[0])
    assert result.request_id == "q2" and result.status is Status.REJECTED
    assert result.error is not None and result.error.code == "over_quota"
    assert result.error.retry_after_s == pytest.approx(4.0)  # 7 units needed, 3 left, 1/s
    r.quota_clock.t += 60  # the bucket refills
    [[again]] = r.run(req("q3", "one two three four seven"))
    assert hdr(again)[POOL_HEADER]
    assert r.core.stats["over_quota"] == 1


def test_a_request_larger_than_the_burst_is_told_to_split() -> None:
    r = rig(quota=TenantQuota(rate=10, burst=2))
    [[answer]] = r.run(req("big", "many words in this one request"))
    result = result_of(answer)
    assert result.error is not None and result.error.retry_after_s is None
    assert "split it" in result.error.message


def test_an_identical_request_is_answered_from_the_cache() -> None:
    r = rig()
    [[work]] = r.run(req("c1"))
    assert hdr(work)[POOL_HEADER] and r.core.stats["routed"] == 1
    computed = InferenceResult(
        request_id="c1", status=Status.OK, model="text-embed", outputs={"embedding": [1.0]}
    )
    r.core.offer_result(FakeRecord(value=encode(computed), topic=TOPICS.results))
    [[answer]] = r.run(req("c2"))
    result = result_of(answer)
    assert result.request_id == "c2" and result.cached
    assert result.outputs == {"embedding": [1.0]}
    assert r.core.stats["cached"] == 1


def test_a_cancelled_request_is_rejected() -> None:
    r = rig()
    r.control.apply("cancel/x1", Cancel(request_id="x1", ts_ms=NOW_MS), now=NOW_MS)
    [[answer]] = r.run(req("x1"))
    result = result_of(answer)
    assert result.status is Status.REJECTED
    assert result.error is not None and result.error.code == "cancelled"
    assert r.core.stats["cancelled"] == 1 and r.core.stats["routed"] == 0


def test_expired_cancels_are_tombstoned_once() -> None:
    r = rig()
    r.control.apply("cancel/old", Cancel(request_id="old", ts_ms=NOW_MS - 700_000), now=NOW_MS)
    [tomb] = r.core.tombstones()
    assert tomb == Produce(topic=TOPICS.control, value=None, key=b"cancel/old")
    assert r.core.tombstones() == []


def test_canary_weights_split_traffic_by_the_route_spec() -> None:
    r = rig()
    spec = RouteSpec(model="text-embed", versions={"1": 3, "2": 1}, shadow="3", shadow_fraction=1)
    r.control.apply("route/text-embed", spec, now=NOW_MS)
    outs = r.run(*(req(f"k{i}", f"hello there number {i}") for i in range(800)))
    versions = Counter(hdr(out[0])[VERSION_HEADER].decode() for out in outs)
    assert set(versions) == {"1", "2"}
    assert versions["2"] / 800 == pytest.approx(0.25, abs=0.06)
    # Every request also went to the shadow version, replying to the shadow topic.
    for out in outs[:20]:
        work, shadow = out
        assert hdr(shadow)[VERSION_HEADER] == b"3"
        assert hdr(shadow)[SHADOW_OF_HEADER] == hdr(work)[VERSION_HEADER]
        assert decode_request(shadow.value, shadow.headers).reply_to == TOPICS.shadow_results
    assert r.core.stats["shadowed"] == 800


def test_an_unhealthy_pool_is_avoided() -> None:
    r = rig()
    r.core.offer_rollup(FakeRecord(value=encode(window("a100", requests=100, errors=90))))
    r.core.offer_rollup(FakeRecord(value=encode(window("mi200", requests=100, errors=0))))
    outs = r.run(*(req(f"h{i}", f"hello there number {i}") for i in range(50)))
    assert {hdr(out[0])[POOL_HEADER] for out in outs} == {b"mi200"}
    assert {out[0].topic for out in outs} == {TOPICS.work("text-embed", "mi200")}


def test_with_tracing_off_the_clients_trace_context_passes_on_unchanged() -> None:
    # The rig's RouterCore has no tracer provider: its spans are no-ops.
    r = rig()
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    state = b"vendor=opaque"
    rec = req()
    rec.headers = [*headers(), ("traceparent", parent), ("tracestate", state)]
    [[work]] = r.run(rec)
    kept = [(k, v) for k, v in work.headers or [] if k in {"traceparent", "tracestate"}]
    assert kept == [("traceparent", parent), ("tracestate", state)]


# -- trust boundaries (issue 14) ---------------------------------------------------


@pytest.mark.parametrize("reply_to", ["bad topic/name!", TOPICS.control, "sg.work.ocr.cpu"])
def test_an_illegal_or_internal_reply_to_is_refused_on_the_results_topic(reply_to: str) -> None:
    request = InferenceRequest(request_id="r1", model="text-embed", texts=["hi"], reply_to=reply_to)
    (out,) = rig().run(FakeRecord(encode(request), key=b"r1"))
    assert {p.topic for p in out} == {TOPICS.dlq, TOPICS.results}  # never the reply_to
    result = decode_result(next(p.value for p in out if p.topic == TOPICS.results) or b"")
    assert result.error is not None and result.error.code == "invalid_reply_to"
    letter = DeadLetter.from_headers(next(p.headers for p in out if p.topic == TOPICS.dlq) or [])
    assert letter.code == "invalid_reply_to"


def test_a_result_bound_for_an_unwritable_reply_to_falls_back_to_the_results_topic() -> None:
    r = rig()
    request = InferenceRequest(request_id="r2", model="nope", texts=["hi"], reply_to="mine.out")
    rec = FakeRecord(encode(request), key=b"r2")
    (out,) = r.run(rec)
    (reply,) = [p for p in out if p.topic == "mine.out"]
    assert reply.reply is not None  # marked: the loop may fall back
    fallback = r.core.unwritable(rec, request, reply, "UnknownTopicOrPartitionError()")
    assert [p.topic for p in fallback] == [TOPICS.dlq, TOPICS.results]
    result = decode_result(fallback[1].value or b"")
    assert result.error is not None and result.error.code == "reply_to_unwritable"
    assert "unknown_model" in result.error.message  # what the result would have said


def test_a_malformed_control_record_is_dead_lettered_with_the_next_tombstones() -> None:
    r = rig()
    bad = FakeRecord(b"\xc1", key=b"route/x", topic=TOPICS.control, offset=9)
    r.core.malformed_control(bad, ValueError("not msgpack"))
    (letter,) = r.core.tombstones()
    assert letter.topic == TOPICS.dlq and letter.value == b"\xc1"
    assert DeadLetter.from_headers(letter.headers or []).code == "control_malformed"
    assert r.core.tombstones() == []  # once


def test_identical_requests_in_flight_are_computed_once_and_answered_each() -> None:
    r = rig()
    [work], parked, other = r.run(req("lead"), req("same1"), req("same2"))
    assert hdr(work)[POOL_HEADER] and parked == [] and other == []
    assert r.core.stats["routed"] == 1 and r.core.stats["coalesced"] == 2
    assert r.core.take_released() == [], "nothing to answer before the leader's result"
    computed = InferenceResult(
        request_id="lead", status=Status.OK, model="text-embed", outputs={"embedding": [2.0]}
    )
    r.core.offer_result(FakeRecord(value=encode(computed), topic=TOPICS.results))
    released = r.core.take_released()
    answers = {result_of(p).request_id: result_of(p) for _, [p] in released}
    assert set(answers) == {"same1", "same2"}
    assert all(a.cached and a.outputs == {"embedding": [2.0]} for a in answers.values())
    assert not any(r.core.coalescer.is_parked(rec) for rec, _ in released)


def test_requests_parked_behind_a_failed_leader_are_routed_after_all() -> None:
    r = rig()
    r.run(req("lead2", "fails"), req("behind", "fails"))
    failed = InferenceResult(
        request_id="lead2",
        status=Status.EXPIRED,
        model="text-embed",
        error=ErrorInfo(code="deadline_expired", message="too late"),
    )
    r.core.offer_result(FakeRecord(value=encode(failed), topic=TOPICS.results))
    [(rec, [work])] = r.core.take_released()
    assert rec.key == b"behind" and hdr(work)[POOL_HEADER]
    assert r.core.stats["routed"] == 2


def test_parked_requests_hold_back_their_partition_until_answered_or_overdue() -> None:
    r = rig()
    lead, a, b = req("L", "same text"), req("A", "same text"), req("B", "same text")
    a.offset, b.offset, b.partition = 5, 9, 1
    r.run(lead, a, b)
    c = r.core.coalescer
    assert c.lowest(TOPICS.requests, 0) == 5 and c.lowest(TOPICS.requests, 1) == 9
    c.drop([(TOPICS.requests, 1)])  # partition 1 revoked: its next owner re-reads B
    assert c.lowest(TOPICS.requests, 1) is None and c.size == 1
    assert c.overdue(NOW_MS + 60_000) == []
    [late] = c.overdue(NOW_MS + 121_000)  # the leader's result never came
    assert late.request.request_id == "A" and c.lowest(TOPICS.requests, 0) is None
    assert c.leader(content_key(late.request)) is None, "a silent leader is forgotten"


def test_one_tokenizer_batch_per_poll_prices_each_request_as_prepare_does() -> None:
    """decode_all tokenizes a poll's texts in one call; every outcome is still what
    `prepare()` gives that record alone, and bad records keep their own error."""
    three = InferenceRequest(request_id="three", model="text-embed", texts=["a", "b", "c"])
    records = [
        req("short", "short"),
        FakeRecord(value=encode(three), offset=1),  # refused: text-embed takes one text
        FakeRecord(value=b"\x93not a map", offset=2),
        req("long", "a longer text about printer paper and staplers " * 8),
        req("mail", "mail me at a@b.example"),
    ]
    outcomes = decode_all(records, masker=MASKER, counter=COUNTER)
    assert len(outcomes) == len(records)
    prepared = 0
    for rec, outcome in zip(records, outcomes, strict=True):
        try:
            alone = prepare(decode_request(rec.value, rec.headers), masker=MASKER, counter=COUNTER)
        except (WireError, Refused) as exc:
            assert type(outcome) is type(exc) and str(outcome) == str(exc)
            continue
        assert isinstance(outcome, Prepared)
        assert outcome.request == alone.request
        assert (outcome.cost, outcome.features, outcome.pii) == (
            alone.cost,
            alone.features,
            alone.pii,
        )
        assert outcome.cost.tokens == COUNTER.count(outcome.request.texts)[0]
        prepared += 1
    assert prepared == 3
    costs = [o.cost.tokens for o in outcomes if isinstance(o, Prepared)]
    assert len(set(costs)) == 3  # three different lengths, each priced on its own text


def test_a_record_masking_leaves_alone_is_forwarded_as_its_own_bytes() -> None:
    """Nothing masked: the work record is the request's bytes as they came (no re-encode);
    something masked: the masked request, re-encoded. Either decodes to what was routed."""
    clean = req("clean", "two boxes of printer paper")
    dirty = req("dirty", "write to maria.keller@firma-beispiel.de")
    out = rig().run(clean, dirty)
    work_clean, work_dirty = out[0][-1], out[1][-1]
    assert work_clean.value == clean.value
    assert work_dirty.value != dirty.value
    assert work_dirty.value is not None and b"maria.keller" not in work_dirty.value
    routed = decode_request(work_dirty.value, work_dirty.headers)
    assert routed.request_id == "dirty" and "[pii.email." in routed.texts[0]
