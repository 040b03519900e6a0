"""The wire codec: round trips, versions, limits and typed errors."""

from __future__ import annotations

import msgpack
import pytest

from sluicegate.schemas.codec import (
    WireLimits,
    decode_request,
    decode_result,
    encode,
    headers,
    recover_request_id,
)
from sluicegate.schemas.dlq import DeadLetter
from sluicegate.schemas.errors import (
    DecodeError,
    OverLimitError,
    SchemaValidationError,
    UnsupportedSchemaError,
)
from sluicegate.schemas.models import (
    ErrorInfo,
    ImageInput,
    InferenceRequest,
    InferenceResult,
    Status,
)


def request(**fields: object) -> InferenceRequest:
    base: dict[str, object] = {
        "request_id": "r-1",
        "model": "ocr",
        "images": [ImageInput.inline(b"\x89PNG...")],
    }
    base.update(fields)
    return InferenceRequest.model_validate(base)


def test_request_round_trip_keeps_bytes_as_msgpack_bin() -> None:
    original = request(texts=["hello"], priority=3, deadline_ms=1_700_000_000_000, tenant="acme")
    raw = encode(original)
    as_map = msgpack.unpackb(raw, raw=False)
    assert isinstance(as_map["images"][0]["data"], bytes)
    assert decode_request(raw, headers()) == original


def test_a_hand_written_msgpack_map_without_headers_decodes() -> None:
    raw = msgpack.packb({"request_id": "k1", "model": "text-embed", "texts": ["hi"]})
    decoded = decode_request(raw, None)
    assert decoded.texts == ["hi"] and decoded.priority == 0


@pytest.mark.parametrize(
    ("value", "error", "code"),
    [
        (b"\xc1not msgpack", DecodeError, "msgpack_format"),
        (msgpack.packb([1, 2, 3]), DecodeError, "msgpack_format"),
        (b"", DecodeError, "msgpack_format"),
        (msgpack.packb({"request_id": "x"}), SchemaValidationError, "schema"),
        (
            msgpack.packb({"request_id": "x", "model": "ocr", "images": [{"data": b"x"}]}),
            SchemaValidationError,
            "schema",
        ),
        (
            msgpack.packb({"request_id": "x", "model": "ocr", "surprise": 1}),
            SchemaValidationError,
            "schema",
        ),
    ],
)
def test_bad_records_raise_typed_errors_with_codes(value: bytes, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        decode_request(value, headers())
    assert info.value.code == code
    assert str(info.value)


def test_unknown_schema_version_names_the_fix() -> None:
    with pytest.raises(UnsupportedSchemaError, match="Upgrade the worker"):
        decode_request(encode(request()), [("sg-schema", b"99")])


def test_limits_are_enforced_with_messages_that_name_the_limit() -> None:
    limits = WireLimits(max_message_bytes=10_000, max_image_bytes=100, max_text_chars=10)
    with pytest.raises(OverLimitError, match="100-byte"):
        decode_request(encode(request(images=[ImageInput.inline(b"x" * 200)])), limits=limits)
    with pytest.raises(OverLimitError, match="characters"):
        decode_request(encode(request(texts=["x" * 11])), limits=limits)
    with pytest.raises(OverLimitError, match="10000-byte"):
        decode_request(b"\x00" * 10_001, limits=limits)


def test_image_reference_needs_a_sha256() -> None:
    with pytest.raises(ValueError, match="sha256"):
        ImageInput(uri="file:///tmp/x.png")
    ImageInput(uri="file:///tmp/x.png", sha256="a" * 64)


def test_result_carries_error_exactly_when_not_ok() -> None:
    ok = InferenceResult(request_id="r", status=Status.OK, outputs={"text": "x"})
    assert decode_result(encode(ok)) == ok
    with pytest.raises(ValueError):
        InferenceResult(request_id="r", status=Status.ERROR)
    failed = InferenceResult(
        request_id="r",
        status=Status.REJECTED,
        error=ErrorInfo(code="over_budget", message="too big"),
    )
    assert decode_result(encode(failed)).error == failed.error


def test_request_id_is_recovered_from_the_map_or_the_key() -> None:
    assert recover_request_id(msgpack.packb({"request_id": "abc", "model": 5}), None) == "abc"
    assert recover_request_id(b"\xc1garbage", b"from-key") == "from-key"
    assert recover_request_id(b"\xc1garbage", None) is None


def test_dead_letter_headers_round_trip() -> None:
    letter = DeadLetter(
        code="msgpack_format",
        message="bad",
        error_class="DecodeError",
        stage="admit",
        source_topic="sg.work.ocr.cpu",
        source_partition=2,
        source_offset=41,
        request_id="r-9",
    )
    hdrs = letter.to_headers()
    assert all(isinstance(v, bytes) for _, v in hdrs)
    assert DeadLetter.from_headers(hdrs) == letter
