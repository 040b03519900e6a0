"""Cost accounting with the model's real tokenizer and the OCR resize policy."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from sluicegate.schemas.catalog import CATALOG, lookup
from sluicegate.schemas.codec import WireLimits
from sluicegate.schemas.cost import TokenCounter, image_pixels, measure
from sluicegate.schemas.errors import ImageBombError, InvalidImageError, UnknownModelError
from sluicegate.schemas.imaging import ocr_input_size


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_tokens_are_real_counts_not_the_padded_128(counter: TokenCounter) -> None:
    short, long = counter.count(["hello world", "word " * 100])
    assert short == 4  # [CLS] hello world [SEP]
    assert long == 102
    assert counter.count(["word " * 1000]) == [256]  # the model truncates at 256


def test_pixels_follow_the_ocr_resize_policy() -> None:
    width, height = ocr_input_size(400, 100)
    assert image_pixels(png(400, 100)) == width * height
    assert width % 32 == 0 and height % 32 == 0


def test_image_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(ImageBombError):
        image_pixels(png(300, 300), limits=WireLimits(max_image_pixels=10_000))


def test_garbage_image_is_an_invalid_image_error() -> None:
    with pytest.raises(InvalidImageError):
        image_pixels(b"definitely not an image")


def test_models_price_their_inputs(counter: TokenCounter) -> None:
    text_cost = measure(CATALOG["text-embed"], texts=["hello world"], images=[], counter=counter)
    assert text_cost.units == text_cost.tokens == 4
    doc = measure(
        CATALOG["doc-match"], texts=["hello world"], images=[png(400, 100)], counter=counter
    )
    assert doc.units == doc.pixels + 4 * CATALOG["doc-match"].pixels_per_token
    with pytest.raises(UnknownModelError, match="known models"):
        lookup("gpt-17")
