"""Bad input gets an error result and a DLQ record; the worker keeps serving."""

from __future__ import annotations

import io
import uuid

import msgpack
import pytest
from PIL import Image

from sluicegate.ops.samples import render_text_image
from sluicegate.runtime.kafka import KafkaSettings
from sluicegate.schemas.codec import decode_result, headers
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.models import ImageInput, InferenceRequest, Status
from sluicegate.schemas.settings import TopicSettings
from sluicegate.streams.client import Client

from .conftest import WorkerFactory
from .test_end_to_end import produce_raw, read_all

pytestmark = pytest.mark.integration


def corrupt_png() -> bytes:
    """A PNG whose header is fine (so admission prices it) but whose pixel data is not."""
    buf = io.BytesIO()
    Image.new("RGB", (320, 96), "white").save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 4 : idat + 40] = b"\x00" * 36
    return bytes(data)


async def test_every_bad_record_is_answered_and_dead_lettered(
    run_worker: WorkerFactory, client: Client, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    work = topics.work("ocr", "cpu")
    good_png = render_text_image("Order number 77812 confirmed", glyph_px=32)
    cases = {
        # request_id recoverable from the key only
        "garbage": (b"\xc1\xc1 not msgpack at all", b"bad-garbage", "msgpack_format"),
        "schema": (
            msgpack.packb({"request_id": "bad-schema", "model": "ocr", "images": "nope"}),
            None,
            "schema",
        ),
        "unknown-model": (
            msgpack.packb({"request_id": "bad-model", "model": "gpt-17"}),
            None,
            "unknown_model",
        ),
        "not-an-image": (
            msgpack.packb(
                {
                    "request_id": "bad-image",
                    "model": "ocr",
                    "images": [{"data": b"GIF? no", "mime_type": "image/png"}],
                }
            ),
            None,
            "invalid_image",
        ),
        "wrong-inputs": (
            msgpack.packb({"request_id": "bad-inputs", "model": "ocr", "texts": ["x"]}),
            None,
            "invalid_input",
        ),
    }
    async with run_worker("ocr", max_queue_delay_microseconds=100_000):
        for value, key, _ in cases.values():
            await produce_raw(kafka, work, value, key)
        # A corrupt image that passes admission fails inside Triton; bisection
        # must answer it alone and let its batch neighbour through.
        poison = InferenceRequest(
            request_id="bad-pixels", model="ocr", images=[ImageInput.inline(corrupt_png())]
        )
        healthy = InferenceRequest(
            request_id=uuid.uuid4().hex, model="ocr", images=[ImageInput.inline(good_png)]
        )
        f_poison, f_ok = client.expect(poison.request_id), client.expect(healthy.request_id)
        await client.send(poison)
        await client.send(healthy)
        poisoned = await client.wait(poison.request_id, f_poison)
        fine = await client.wait(healthy.request_id, f_ok)
        # ...and the worker still serves after all of that.
        after = await client.submit(
            InferenceRequest(
                request_id=uuid.uuid4().hex, model="ocr", images=[ImageInput.inline(good_png)]
            )
        )

    assert fine.status is Status.OK and after.status is Status.OK
    assert poisoned.status is Status.ERROR and poisoned.error is not None
    assert fine.timings.batch_size >= 1

    results = {}
    for value, hdrs in await read_all(kafka, topics.results):
        result = decode_result(value, hdrs)
        assert result.request_id not in results, f"two results for {result.request_id}"
        results[result.request_id] = result
    expected_ids = {"bad-garbage", "bad-schema", "bad-model", "bad-image", "bad-inputs"}
    for rid in expected_ids:
        assert results[rid].status is Status.ERROR, rid
    assert {results[rid].error.code for rid in expected_ids} == {c for *_, c in cases.values()}

    letters = [DeadLetter.from_headers(hdrs) for _, hdrs in await read_all(kafka, topics.dlq)]
    by_code = {letter.code: letter for letter in letters}
    assert set(by_code) >= {c for *_, c in cases.values()}
    assert by_code["msgpack_format"].request_id == "bad-garbage"
    assert all(letter.source_topic == work and letter.message for letter in letters)
    assert any(letter.request_id == "bad-pixels" and letter.stage == "infer" for letter in letters)
    dlq_values = {value for value, _ in await read_all(kafka, topics.dlq)}
    assert cases["garbage"][0] in dlq_values, "the DLQ must keep the original bytes"


async def test_over_budget_request_is_rejected_naming_the_limit(
    run_worker: WorkerFactory, client: Client
) -> None:
    big = render_text_image("wide " * 40, glyph_px=48)
    request = InferenceRequest(
        request_id=uuid.uuid4().hex, model="ocr", images=[ImageInput.inline(big)]
    )
    async with run_worker("ocr", budget=100_000, hard_limit=200_000):
        result = await client.submit(request)
    assert result.status is Status.REJECTED
    assert result.error is not None and result.error.code == "over_budget"
    assert "200000" in result.error.message


def test_headers_helper_marks_schema_version() -> None:
    assert ("sg-schema", b"1") in headers()
