"""Poison fields at every entry: each gets an error result and a DLQ record; the stack stays up.

The same table of bad requests goes through the router (`sg.requests`) and
straight to a work topic (a producer may skip the router); afterwards a good
request still gets `ok` from the same router and workers. A malformed record
on the control topic is dead-lettered by the router and ignored by workers.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiokafka.admin import NewTopic

from sluicegate.ops.samples import render_text_image
from sluicegate.runtime.kafka import KafkaSettings, admin_client
from sluicegate.schemas.codec import decode_result, encode
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import InvalidReplyToError, UnknownModelError
from sluicegate.schemas.models import ImageInput, InferenceRequest, InferenceResult, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client

from .conftest import WorkerFactory
from .streams_helpers import TopicReader, running_router
from .test_end_to_end import produce_raw

pytestmark = pytest.mark.integration

Case = tuple[bytes, str]  # (record value, the error code expected)


def _request(rid: str, **fields: Any) -> InferenceRequest:
    return InferenceRequest(request_id=rid, model="text-embed", texts=["hi"], **fields)


def _text(rid: str, **fields: Any) -> bytes:
    return encode(_request(rid, **fields))


def cases(topics: TopicSettings, tmp: Path, tag: str) -> dict[str, tuple[str, Case]]:
    """name -> (request id, (value, expected code)); request ids carry `tag`."""
    root = tmp / "images"
    root.mkdir(exist_ok=True)
    png = render_text_image("INVOICE 12", glyph_px=24)
    inside = root / "ok.png"
    inside.write_bytes(png)
    outside = tmp / "outside.png"
    outside.write_bytes(png)
    sha = hashlib.sha256(png).hexdigest()
    out: dict[str, tuple[str, Case]] = {}

    def add(name: str, value_of: Any, code: str) -> None:
        rid = f"{tag}-{name}"
        out[name] = (rid, (value_of(rid), code))

    add("bad-reply-to", lambda r: _text(r, reply_to="bad topic/name!"), "invalid_reply_to")
    add("internal-reply-to", lambda r: _text(r, reply_to=topics.control), "invalid_reply_to")
    add("work-reply-to", lambda r: _text(r, reply_to=topics.work("ocr", "cpu")), "invalid_reply_to")
    add(
        "unknown-model",
        lambda r: msgpack.packb({"request_id": r, "model": "text-embedd", "texts": ["hi"]}),
        "unknown_model",
    )

    def image(uri_path: Path, digest: str) -> Any:
        return lambda r: encode(
            InferenceRequest(
                request_id=r,
                model="ocr",
                images=[ImageInput(uri=uri_path.resolve().as_uri(), sha256=digest)],
            )
        )

    add("image-outside-root", image(outside, sha), "image_outside_root")
    add("image-bad-sha256", image(inside, "0" * 64), "invalid_image")
    return out


async def _create(kafka: KafkaSettings, name: str, **config: str) -> None:
    admin = admin_client(kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
    finally:
        await admin.close()


async def _delete(kafka: KafkaSettings, *names: str) -> None:
    admin = admin_client(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if doomed := [n for n in names if n in existing]:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def _results(reader: TopicReader, topic: str) -> dict[str, InferenceResult]:
    return {
        r.request_id: r
        for r in (
            decode_result(rec.value, list(rec.headers))
            for rec in reader.records
            if rec.topic == topic
        )
    }


def _letters(reader: TopicReader, topic: str) -> list[DeadLetter]:
    return [
        DeadLetter.from_headers(list(rec.headers)) for rec in reader.records if rec.topic == topic
    ]


async def _good(kafka: KafkaSettings, topic: str, reader: TopicReader, results: str) -> None:
    rid = f"good-{uuid.uuid4().hex[:8]}"
    await produce_raw(kafka, topic, _text(rid), rid.encode())
    await reader.wait_for(lambda _: rid in _results(reader, results), timeout=90)
    assert _results(reader, results)[rid].status is Status.OK


async def _run_table(
    kafka: KafkaSettings,
    topics: TopicSettings,
    entry: Any,
    table: dict[str, tuple[str, Case]],
    reader: TopicReader,
) -> None:
    """Produce every case to `entry(case name)` and check its result and DLQ record."""
    for name, (rid, (value, _)) in table.items():
        await produce_raw(kafka, entry(name), value, rid.encode())
    rids = {rid for rid, _ in table.values()}
    await reader.wait_for(lambda _: rids <= set(_results(reader, topics.results)), timeout=120)
    expected = {(rid, code) for rid, (_, code) in table.values()}
    await reader.wait_for(
        lambda _: expected <= {(d.request_id, d.code) for d in _letters(reader, topics.dlq)},
        timeout=60,
    )
    results, letters = _results(reader, topics.results), _letters(reader, topics.dlq)
    for name, (rid, (_, code)) in table.items():
        assert results[rid].status is Status.ERROR, name
        assert results[rid].error is not None and results[rid].error.code == code, name
        assert code in {d.code for d in letters if d.request_id == rid}, name
    # An internal reply_to was not obeyed: nothing but the test's records reached the control topic.
    assert not [
        r
        for r in reader.records
        if r.topic == topics.control and r.key not in (b"route/x", b"cancel/x")
    ]


async def test_poison_fields_through_the_router_and_straight_to_work_topics(
    run_worker: WorkerFactory,
    kafka: KafkaSettings,
    topics: TopicSettings,
    tmp_path: Path,
    client: Client,
) -> None:
    # Tenant topics, outside the test's own (internal) namespace.
    own = f"tenant-{uuid.uuid4().hex[:8]}"
    missing = f"{own}.nope"  # legal, never created
    tiny = f"{own}.tiny"  # takes no record as big as a result
    await _create(kafka, tiny, **{"max.message.bytes": "200"})
    root = str(tmp_path / "images")
    options = {"image_root": root}
    reader = TopicReader(kafka, topics.results, topics.dlq, topics.control)
    try:
        async with (
            reader,
            run_worker("text-embed", options=options, max_queue_delay_microseconds=1000),
            run_worker("ocr", options=options, max_queue_delay_microseconds=1000),
            running_router(kafka, topics, image_root=root) as router,
        ):
            # -- through the router --------------------------------------------------
            routed = cases(topics, tmp_path, "r")
            # A result the router answers itself, bound for a topic that does not exist,
            # and worker results bound for a missing topic and one that refuses its size.
            routed["router-missing-reply-to"] = (
                "r-router-missing",
                (
                    msgpack.packb(
                        {"request_id": "r-router-missing", "model": "nope", "reply_to": missing}
                    ),
                    "reply_to_unwritable",
                ),
            )
            routed["worker-missing-reply-to"] = (
                "r-worker-missing",
                (_text("r-worker-missing", reply_to=missing), "reply_to_unwritable"),
            )
            routed["worker-too-large-for-reply-to"] = (
                "r-worker-tiny",
                (_text("r-worker-tiny", reply_to=tiny), "reply_to_unwritable"),
            )
            await _run_table(kafka, topics, lambda _: topics.requests, routed, reader)
            # A malformed control record: skipped, dead-lettered by the router.
            await produce_raw(kafka, topics.control, b"\xc1 not msgpack", b"route/x")
            # The workers' cancel watchers read cancel keys: one that does not decode either.
            await produce_raw(kafka, topics.control, b"\x81\xa1x\xc1", b"cancel/x")
            await reader.wait_for(
                lambda _: (
                    [d.code for d in _letters(reader, topics.dlq)].count("control_malformed") == 2
                ),
                timeout=60,
            )
            await _good(kafka, topics.requests, reader, topics.results)
            assert router.stats["routed"] >= 3 and router.control.failed is None

            # -- straight to the work topics -----------------------------------------
            direct = cases(topics, tmp_path, "w")
            direct["wrong-model-for-topic"] = (
                "w-wrong-model",
                (encode(InferenceRequest(request_id="w-wrong-model", model="doc-match",
                                         texts=["a"], images=[ImageInput.inline(b"x")])),
                 "invalid_input"),
            )  # fmt: skip
            direct["worker-missing-reply-to"] = (
                "w-worker-missing",
                (_text("w-worker-missing", reply_to=missing), "reply_to_unwritable"),
            )

            def work_topic(name: str) -> str:
                return topics.work("ocr" if name.startswith("image") else "text-embed", "cpu")

            await _run_table(kafka, topics, work_topic, direct, reader)
            await _good(kafka, topics.work("text-embed", "cpu"), reader, topics.results)
        # The SDK refuses a typo before producing anything (it would route to a new topic).
        with pytest.raises(UnknownModelError):
            await client.send(InferenceRequest(request_id="sdk", model="text-embedd", texts=["a"]))
        with pytest.raises(InvalidReplyToError):
            await client.send(_request("sdk", reply_to=topics.dlq))
        admin = admin_client(kafka)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
        finally:
            await admin.close()
        # Neither a typo nor a missing reply_to made a topic appear.
        assert missing not in existing
        assert topics.work("text-embedd", "cpu") not in existing
        assert topics.work("nope", "cpu") not in existing
    finally:
        await _delete(kafka, tiny, missing)
