"""The ingress router against the real broker: masking, routing, quota, DLQ, cancel."""

from __future__ import annotations

import io
import random
import struct
import time
import uuid
import zlib

import msgpack
import pytest
from PIL import Image

from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_request, decode_result, encode
from sluicegate.schemas.control import POOL_HEADER, PRECISION_HEADER, Cancel
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.control import publish_cancel
from sluicegate.streams.drift import DriftSettings
from sluicegate.streams.quota import QuotaSettings, TenantQuota
from sluicegate.streams.records import DriftEvent, WindowRollup, decode_rollup
from sluicegate.streams.routing import RoutingSettings

from .streams_helpers import TopicReader, header_of, produce_requests, running_router
from .test_end_to_end import produce_raw

pytestmark = pytest.mark.integration

GPU_POOLS = RoutingSettings(pools=("a100", "mi200", "cpu"), small_cost={"text-embed": 30})
LONG = (
    "The quarterly report covers revenue, operating costs, hiring plans, supplier risks and "
    "the migration of the billing platform to the new region, with milestones for each team. "
)


def rid() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rollup(pool: str, *, requests: int, errors: int, cost_per_s: float) -> WindowRollup:
    end = now_ms()
    return WindowRollup(
        model="text-embed",
        pool=pool,
        version="1",
        window_s=10,
        start_ms=end - 10_000,
        end_ms=end,
        requests=requests,
        ok=requests - errors,
        errors=errors,
        cost_per_s=cost_per_s,
    )


def png_header(width: int, height: int) -> bytes:
    """A small real PNG whose header claims `width` x `height` (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


async def publish_rollups(kafka: KafkaSettings, topic: str, *rollups: WindowRollup) -> None:
    for r in rollups:
        await produce_raw(kafka, topic, encode(r))


async def test_masks_pii_and_routes_by_size_health_and_capacity(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    # Telemetry says: a100 is healthy, mi200 fails half its requests.
    await publish_rollups(
        kafka,
        topics.telemetry_rollup,
        rollup("a100", requests=500, errors=0, cost_per_s=40_000),
        rollup("mi200", requests=500, errors=250, cost_per_s=30_000),
    )
    pii_text = (
        "Hi, this is Dana Reyes (customer id: C-99812). Call me on +44 20 7946 0958 or write "
        "to dana.reyes@example.org; my SSN is 123-45-6789 and NI number AB 12 34 56 C."
    )
    small = InferenceRequest(request_id=rid(), model="text-embed", texts=["A short note."])
    pii = InferenceRequest(request_id=rid(), model="text-embed", texts=[pii_text])
    medium = InferenceRequest(request_id=rid(), model="text-embed", texts=[LONG])
    long = InferenceRequest(request_id=rid(), model="text-embed", texts=[LONG * 6])
    work = {p: topics.work("text-embed", p) for p in ("a100", "mi200", "cpu")}
    async with (
        TopicReader(kafka, *work.values()) as reader,
        running_router(kafka, topics, routing=GPU_POOLS) as router,
    ):
        await produce_requests(kafka, topics.requests, [small, pii, medium, long])
        recs = list(await reader.wait_count(4))
        by_id = {decode_request(r.value, r.headers).request_id: r for r in recs}

        # a100 turns unhealthy, mi200 recovers: big requests move to mi200.
        await publish_rollups(
            kafka,
            topics.telemetry_rollup,
            rollup("a100", requests=500, errors=400, cost_per_s=40_000),
            rollup("mi200", requests=500, errors=0, cost_per_s=30_000),
        )
        moved = None
        deadline = time.monotonic() + 30
        while moved is None and time.monotonic() < deadline:
            # Not identical to `medium`, still in flight: it would be coalesced with it.
            probe = InferenceRequest(request_id=rid(), model="text-embed", texts=[LONG + rid()[:2]])
            await produce_requests(kafka, topics.requests, [probe])
            await reader.wait_for(
                lambda rs, p=probe: any(p.request_id.encode() == r.key for r in rs)
            )
            landed = next(r for r in reader.records if r.key == probe.request_id.encode())
            moved = landed if landed.topic == work["mi200"] else None
        stats = dict(router.stats)

    masked = decode_request(by_id[pii.request_id].value).texts[0]
    for secret in ("C-99812", "7946 0958", "dana.reyes@example.org", "123-45-6789", "AB 12 34"):
        assert secret not in masked, f"{secret!r} leaked into the work topic"
    assert "Dana Reyes" in masked and "[pii.email." in masked and "[pii.phone." in masked
    assert "[pii.national_id." in masked and "[pii.user_id." in masked

    # Small requests run on CPU; larger ones on the healthy GPU pool.
    assert by_id[small.request_id].topic == work["cpu"]
    assert header_of(by_id[small.request_id], PRECISION_HEADER) == "fp32"
    assert by_id[medium.request_id].topic == work["a100"]
    assert header_of(by_id[medium.request_id], POOL_HEADER) == "a100"
    assert header_of(by_id[medium.request_id], PRECISION_HEADER) == "fp16"
    # Long inputs switch the A100 to bf16 (precision policy).
    assert by_id[long.request_id].topic == work["a100"]
    assert header_of(by_id[long.request_id], PRECISION_HEADER) == "bf16"
    assert not any(r.topic == work["mi200"] for r in recs), "mi200 was unhealthy"
    assert moved is not None, "traffic never moved to mi200 after a100 turned unhealthy"
    assert header_of(moved, PRECISION_HEADER) == "bf16"
    assert stats["routed"] >= 5 and stats.get("pool:cpu") == 1


async def test_quota_rejects_with_retry_after(kafka: KafkaSettings, topics: TopicSettings) -> None:
    quota = QuotaSettings(tenants={"tiny": TenantQuota(rate=1, burst=40)})

    # Texts alike in length, not identical (identical ones in flight are coalesced).
    def text(i: int) -> str:
        return f"twelve words of text for the quota test {i}, give or take."

    requests = [
        InferenceRequest(request_id=rid(), model="text-embed", texts=[text(i)], tenant="tiny")
        for i in range(6)
    ]
    other = InferenceRequest(request_id=rid(), model="text-embed", texts=[text(7)], tenant="big")
    async with (
        TopicReader(kafka, topics.results) as results,
        TopicReader(kafka, topics.work("text-embed", "cpu")) as work,
        running_router(kafka, topics, quota=quota),
    ):
        await produce_requests(kafka, topics.requests, [*requests, other])
        await work.wait_count(3)
        answered = await results.wait_count(4)
    forwarded = {decode_request(r.value).request_id for r in work.records}
    rejected = [decode_result(r.value) for r in answered]
    # ~14 tokens each against a burst of 40: two pass, the rest are rejected.
    assert other.request_id in forwarded
    assert len(forwarded & {r.request_id for r in requests}) == 2
    assert {r.request_id for r in rejected} == {r.request_id for r in requests} - forwarded
    for result in rejected:
        assert result.status is Status.REJECTED and result.error is not None
        assert result.error.code == "over_quota"
        assert result.error.retry_after_s is not None and 0 < result.error.retry_after_s < 10
        assert "retry after" in result.error.message


async def test_bad_records_get_error_results_and_dlq_context_headers_without_pii(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    email = "jo.bloggs@example.com"
    cases = {
        "msgpack_format": (b"\xc1 garbage " + email.encode(), b"bad-garbage"),
        "schema": (msgpack.packb({"request_id": "bad-schema", "model": 7, "texts": [email]}), None),
        "unknown_model": (
            msgpack.packb({"request_id": "bad-model", "model": "gpt-17", "texts": [email]}),
            None,
        ),
        "invalid_input": (
            msgpack.packb({"request_id": "bad-inputs", "model": "ocr", "texts": [email]}),
            None,
        ),
        "over_limit": (
            msgpack.packb(
                {"request_id": "bad-size", "model": "text-embed", "texts": [email * 1000]}
            ),
            None,
        ),
        "image_bomb": (
            msgpack.packb(
                {
                    "request_id": "bad-bomb",
                    "model": "ocr",
                    "images": [{"data": png_header(8_000, 8_000), "mime_type": "image/png"}],
                }
            ),
            None,
        ),
    }
    async with (
        TopicReader(kafka, topics.dlq) as dlq,
        TopicReader(kafka, topics.results) as results,
        running_router(kafka, topics),
    ):
        for value, key in cases.values():
            await produce_raw(kafka, topics.requests, value, key)
        letters = await dlq.wait_count(len(cases))
        answers = await results.wait_count(len(cases))
    by_code = {DeadLetter.from_headers(r.headers).code: r for r in letters}
    assert set(by_code) == set(cases)
    for code, rec in by_code.items():
        letter = DeadLetter.from_headers(rec.headers)
        assert letter.stage == "ingress" and letter.source_topic == topics.requests
        assert letter.source_offset >= 0 and letter.error_class and letter.message
        assert all(email.encode() not in value for _, value in rec.headers), code
    assert by_code["msgpack_format"].value == cases["msgpack_format"][0], "original bytes kept"
    # A request that decoded is dead-lettered masked: no unmasked text leaves the router.
    assert email.encode() not in by_code["invalid_input"].value
    assert b"[pii.email." in by_code["invalid_input"].value
    codes = {decode_result(r.value).request_id: decode_result(r.value).error.code for r in answers}
    assert codes == {
        "bad-garbage": "msgpack_format",
        "bad-schema": "schema",
        "bad-model": "unknown_model",
        "bad-inputs": "invalid_input",
        "bad-size": "over_limit",
        "bad-bomb": "image_bomb",
    }


async def test_cancelled_request_is_rejected_by_the_router(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    doomed = InferenceRequest(request_id=rid(), model="text-embed", texts=["cancel me"])
    kept = InferenceRequest(request_id=rid(), model="text-embed", texts=["keep me"])
    await publish_cancel(kafka, topics.control, doomed.request_id)
    async with (
        TopicReader(kafka, topics.results) as results,
        TopicReader(kafka, topics.work("text-embed", "cpu")) as work,
        running_router(kafka, topics),
    ):
        await produce_requests(kafka, topics.requests, [doomed, kept])
        await work.wait_count(1)
        answers = await results.wait_count(1)
    result = decode_result(answers[0].value)
    assert result.request_id == doomed.request_id and result.status is Status.REJECTED
    assert result.error is not None and result.error.code == "cancelled"
    assert [decode_request(r.value).request_id for r in work.records] == [kept.request_id]


async def test_a_shifted_input_stream_raises_a_drift_event(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()

    def text(n: int) -> InferenceRequest:
        return InferenceRequest(
            request_id=rid(), model="text-embed", texts=[" ".join(rng.choices(words, k=n))]
        )

    baseline = [text(rng.randint(3, 12)) for _ in range(200)]
    same = [text(rng.randint(3, 12)) for _ in range(120)]
    shifted = [text(rng.randint(40, 80)) for _ in range(120)]
    drift = DriftSettings(baseline_size=200, recent_size=100, check_every=20, threshold=0.25)
    async with (
        TopicReader(kafka, topics.telemetry_rollup) as rollups,
        TopicReader(kafka, topics.work("text-embed", "cpu")) as work,
        # No cache: random short texts repeat, and repeats would be coalesced.
        running_router(kafka, topics, drift=drift, cache_ttl_s=0) as router,
    ):
        await produce_requests(kafka, topics.requests, baseline, keys=[b"k"] * 200)
        await produce_requests(kafka, topics.requests, same, keys=[b"k"] * 120)
        await work.wait_count(320)
        quiet = len(rollups.records)
        await produce_requests(kafka, topics.requests, shifted, keys=[b"k"] * 120)
        await rollups.wait_for(
            lambda recs: any(
                isinstance(e := decode_rollup(r.value), DriftEvent) and e.statistic == "text_tokens"
                for r in recs
            )
        )
    events = [decode_rollup(r.value) for r in rollups.records]
    assert quiet == 0, f"drift raised on an unshifted stream: {events[:quiet]}"
    tokens = [e for e in events if isinstance(e, DriftEvent) and e.statistic == "text_tokens"]
    assert tokens, events
    event = tokens[0]
    assert event.model == "text-embed" and event.psi > event.threshold == 0.25
    assert event.recent_median > event.baseline_median
    assert event.baseline_count == 200 and event.recent_count == 100
    assert router.stats["drift"] >= 1


async def test_expired_cancels_are_tombstoned_on_the_control_topic(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    old = Cancel(request_id="long-gone", ts_ms=now_ms() - 3_600_000)
    await produce_raw(kafka, topics.control, encode(old), old.key())
    async with (
        TopicReader(kafka, topics.control) as control,
        running_router(kafka, topics, cancel_ttl_s=60),
    ):
        records = await control.wait_count(2)
    assert [(r.key, r.value is None) for r in records] == [(old.key(), False), (old.key(), True)]
