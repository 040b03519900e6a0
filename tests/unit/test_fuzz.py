"""Fuzzing decode -> validate -> preprocess with hypothesis.

Whatever bytes arrive, `admit` (decode, validate, cost, read images) either
admits the request or raises a `WireError` with a stable code, and the OCR
preprocessing (`decode_bgr`) of an admitted image either decodes it or raises
a `WireError`: nothing else escapes to crash a worker. `make test` runs a
small budget; `make fuzz` (marker `fuzz_long`) runs 100,000 examples.
"""

from __future__ import annotations

import io
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sluicegate.inference.pipelines.image import decode_bgr
from sluicegate.schemas.catalog import lookup
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.errors import WireError
from sluicegate.workers.admission import admit

COUNTER = TokenCounter()
LIMITS = WireLimits(max_message_bytes=256 * 1024, image_root="/nonexistent-root")


def _image(fmt: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, format=fmt)
    return buf.getvalue()


SEED_IMAGES = [
    _image(f, s) for f in ("PNG", "JPEG", "WEBP", "BMP", "GIF") for s in ((1, 1), (40, 12))
]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 8))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        out[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(out)))
    return bytes(out[:cut]) if draw(st.booleans()) else bytes(out)


images = st.one_of(
    st.sampled_from(SEED_IMAGES),
    st.sampled_from(SEED_IMAGES).flatmap(lambda b: mutated(b)),
    st.binary(max_size=300),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
image_dicts = st.fixed_dictionaries(
    {},
    optional={
        "data": images,
        "mime_type": st.sampled_from(["image/png", "image/jpeg", "image/gif", "text/plain"]),
        "uri": st.sampled_from(
            ["file:///etc/passwd", "file:///nonexistent-root/a.png", "http://x"]
        ),
        "sha256": st.sampled_from(["0" * 64, "zz", ""]),
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "request_id": st.one_of(st.text(max_size=140), anything),
        "model": st.sampled_from(["ocr", "text-embed", "doc-match", "nope", ""]) | anything,
        "texts": st.lists(st.text(max_size=300), max_size=3) | anything,
        "images": st.lists(image_dicts, max_size=2) | anything,
        "parameters": st.dictionaries(st.text(max_size=5), scalars, max_size=3) | anything,
        "priority": st.integers(-3, 12) | anything,
        "deadline_ms": st.integers(-(2**70), 2**70) | anything,
        "reply_to": anything,
        "created_ms": anything,
        "extra": anything,
    },
)


def _pack(obj: Any) -> bytes:
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"
    return out


records = st.one_of(
    st.binary(max_size=600),
    requests.map(_pack),
    requests.map(_pack).flatmap(lambda b: mutated(b)),
)
headers = st.lists(
    st.tuples(st.sampled_from(["sg-schema", "content-type", "x"]), st.binary(max_size=4)),
    max_size=2,
)


def check_one(value: bytes, hdrs: list[tuple[str, bytes]], model: str) -> None:
    try:
        admitted = admit(value, hdrs, serving=lookup(model), counter=COUNTER, limits=LIMITS)
    except WireError as exc:
        assert exc.code and str(exc), "a WireError needs a code and a message"
        return
    for data in admitted.inputs.images:
        try:
            array = decode_bgr(data)
        except WireError:
            continue
        assert array.ndim == 3 and array.shape[2] == 3


_SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck), "database": None}


@settings(max_examples=300, **_SETTINGS)  # type: ignore[arg-type]
@given(value=records, hdrs=headers, model=st.sampled_from(["ocr", "text-embed", "doc-match"]))
def test_admit_and_preprocess_raise_only_wire_errors(
    value: bytes, hdrs: list[tuple[str, bytes]], model: str
) -> None:
    check_one(value, hdrs, model)


@pytest.mark.fuzz_long
@settings(max_examples=100_000, **_SETTINGS)  # type: ignore[arg-type]
@given(value=records, hdrs=headers, model=st.sampled_from(["ocr", "text-embed", "doc-match"]))
def test_admit_and_preprocess_raise_only_wire_errors_100k(
    value: bytes, hdrs: list[tuple[str, bytes]], model: str
) -> None:
    check_one(value, hdrs, model)


def test_seed_images_cover_the_allow_list_and_one_format_off_it() -> None:
    """The fuzz seeds must reach both the accepted and the refused-format paths."""
    codes = set()
    for data in SEED_IMAGES:
        request = _pack(
            {
                "request_id": "r",
                "model": "ocr",
                "images": [{"data": data, "mime_type": "image/png"}],
            }
        )
        try:
            admit(request, [], serving=lookup("ocr"), counter=COUNTER, limits=LIMITS)
            codes.add("ok")
        except WireError as exc:
            codes.add(exc.code)
    assert codes == {"ok", "unsupported_image_format"}
