"""schemas.imaging: header-only sizes and the OCR resize policy.

rapidocr-onnxruntime 1.4.4's own resize code is the oracle: the policy must
give the size its detector would see, or the worker charges for pixels the
model never runs.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
from rapidocr_onnxruntime.utils.process_img import (
    ResizeImgError,
    add_round_letterbox,
    increase_min_side,
    reduce_max_side,
)

from sluicegate.schemas.imaging import (
    ImageDecodeError,
    image_size,
    ocr_input_size,
    ocr_resize_plan,
)


def _encode(size: tuple[int, int], fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "white").save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (31, 2017)])
def test_image_size_reads_the_header(fmt: str, size: tuple[int, int]) -> None:
    assert image_size(_encode(size, fmt)) == size


def test_image_size_grayscale_png() -> None:
    assert image_size(_encode((100, 50), "PNG", mode="L")) == (100, 50)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, _encode((9, 9), "PNG")[:20]],
    ids=["empty", "text", "png-magic-only", "truncated-header"],
)
def test_image_size_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ImageDecodeError) as info:
        image_size(data)
    assert isinstance(info.value, ValueError)
    assert info.value.code == "invalid_image"
    assert str(info.value)  # a message a user can act on


def _rapidocr_det_size(width: int, height: int) -> tuple[int, int] | None:
    """What rapidocr 1.4.4 feeds its detector, by running its own code on a blank image."""
    img: Any = np.zeros((height, width, 3), dtype=np.uint8)
    try:
        # RapidOCR.preprocess
        if max(height, width) > 2000:
            img, _, _ = reduce_max_side(img, 2000)
        if min(img.shape[:2]) < 30:
            img, _, _ = increase_min_side(img, 30)
    except ResizeImgError:
        return None
    # RapidOCR.maybe_add_letterbox with min_height 30, width_height_ratio 8
    h, w = img.shape[:2]
    if h <= 30 or w / h > 8:
        new_h = max(int(w / 8), 30) * 2
        pad = int(abs(new_h - h) / 2)
        img = add_round_letterbox(img, (pad, pad, 0, 0))
    resized = DetPreProcess(736, "min").resize(img)
    assert resized is not None
    return int(resized.shape[1]), int(resized.shape[0])


@pytest.mark.parametrize(
    "size",
    [
        (640, 480),  # upscaled: min side to 736
        (1000, 800),  # min side above 736: only rounded to 32
        (2500, 1200),  # over max_side_len
        (400, 20),  # under min_side_len, then letterboxed
        (1200, 100),  # wide: letterboxed (w/h > 8)
        (300, 30),  # h <= min_height: letterboxed
        (20, 900),  # tall and thin
        (1, 1),
        (2000, 2000),
        (4000, 3000),
    ],
)
def test_ocr_input_size_matches_rapidocr(size: tuple[int, int]) -> None:
    assert ocr_input_size(*size) == _rapidocr_det_size(*size)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000))
def test_ocr_input_size_property(width: int, height: int) -> None:
    w, h = ocr_input_size(width, height)
    assert w > 0 and h > 0 and w % 32 == 0 and h % 32 == 0
    # The detector's shorter side is never below 736 (rounded to a multiple of 32).
    assert min(w, h) >= 736
    # The oracle allocates the real arrays; thin images upscale to gigapixels
    # (see test_thin_images_blow_up), so compare on sizes that fit in memory.
    assume(w * h <= 8_000_000)
    oracle = _rapidocr_det_size(width, height)
    assume(oracle is not None)  # rapidocr itself fails on some extreme shapes
    assert (w, h) == oracle


def test_extreme_aspect_ratio_does_not_fail() -> None:
    # rapidocr raises here (the short side rounds to 0); we keep 32 px.
    assert _rapidocr_det_size(3000, 20) is None
    plan = ocr_resize_plan(3000, 20)
    assert plan.scaled == (1984, 32)  # 2000 / 32 = 62.5 rounds half to even
    assert plan.det[0] % 32 == 0 and plan.det[1] % 32 == 0


def test_thin_images_blow_up() -> None:
    # rapidocr's policy, faithfully: min_side_len scales 1 px up to 30 without
    # re-checking max_side_len, and the letterbox then pads to a quarter of the
    # width. The worker's hard pixel limit must reject these, not the model.
    w, h = ocr_input_size(1500, 1)
    assert w * h > 100_000_000


def test_plan_is_consistent() -> None:
    plan = ocr_resize_plan(1200, 100)
    assert plan.source == (1200, 100)
    assert plan.padded == (plan.scaled[0], plan.scaled[1] + 2 * plan.pad_top)
    assert plan.pad_top > 0
    assert plan.det_pixels == plan.det[0] * plan.det[1]
    with pytest.raises(ValueError):
        ocr_resize_plan(0, 10)
