"""`prepare()`: what the router does to one decoded request before routing it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from sluicegate.schemas.cost import TokenCounter
from sluicegate.schemas.models import ImageInput, InferenceRequest
from sluicegate.streams.ingress import Refused, prepare
from sluicegate.streams.pii import PiiMasker

COUNTER = TokenCounter()
MASKER = PiiMasker()


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, format="PNG")
    return out.getvalue()


def image_file(path: Path) -> ImageInput:
    return ImageInput.from_file(str(path))


def test_masks_prices_and_measures_a_text_request() -> None:
    request = InferenceRequest(
        request_id="t1", model="text-embed", texts=["mail maria.keller@firma-beispiel.de today"]
    )
    prepared = prepare(request, masker=MASKER, counter=COUNTER)
    assert "maria.keller" not in prepared.request.texts[0]
    assert prepared.pii == {"email": 1}
    # Priced on the masked text: what the model runs on.
    assert prepared.cost.tokens == COUNTER.count(prepared.request.texts)[0]
    assert prepared.features["text_tokens"] == float(prepared.cost.tokens)
    assert prepared.features["text_chars"] == float(len(prepared.request.texts[0]))


def test_measures_the_first_image() -> None:
    request = InferenceRequest(
        request_id="i1", model="ocr", images=[ImageInput.inline(png(64, 32))]
    )
    prepared = prepare(request, masker=MASKER, counter=COUNTER)
    assert prepared.cost.pixels > 0
    assert prepared.features["image_pixels"] == 64 * 32
    assert prepared.features["image_aspect"] == 2.0


def test_reads_a_file_image(tmp_path: Path) -> None:
    path = tmp_path / "page.png"
    path.write_bytes(png(40, 40))
    request = InferenceRequest(request_id="f1", model="ocr", images=[image_file(path)])
    assert prepare(request, masker=MASKER, counter=COUNTER).features["image_pixels"] == 1600


def test_a_request_the_model_cannot_take_is_refused_with_its_text_masked() -> None:
    request = InferenceRequest(request_id="o1", model="ocr", texts=["call (415) 555-0132"])
    with pytest.raises(Refused) as refused:
        prepare(request, masker=MASKER, counter=COUNTER)
    assert refused.value.error.code
    assert "555-0132" not in refused.value.request.texts[0]


def test_an_unreadable_file_image_is_refused_as_invalid_image(tmp_path: Path) -> None:
    path = tmp_path / "gone.png"
    path.write_bytes(png(8, 8))
    request = InferenceRequest(request_id="g1", model="ocr", images=[image_file(path)])
    path.unlink()
    with pytest.raises(Refused) as refused:
        prepare(request, masker=MASKER, counter=COUNTER)
    assert refused.value.error.code == "invalid_image"
    assert "must be able to read the path" in str(refused.value.error)
