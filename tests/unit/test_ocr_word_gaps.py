"""Word-gap detection that puts back the spaces PP-OCRv4's recogniser drops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sluicegate.inference.pipelines.ocr_rec import word_gaps
from sluicegate.ops.samples import render_page


def line(text: str, glyph_px: int) -> np.ndarray:
    data = np.frombuffer(
        render_page([text], glyph_px=glyph_px, canvas=(1200, 2 * glyph_px + 20)), np.uint8
    )
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


@pytest.mark.parametrize("glyph_px", [24, 32, 48])
@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Order number 77812 confirmed", 4),
        ("Meeting moved to Thursday at 10:30", 6),
        ("Invoices", 1),
        ("minimum", 1),
    ],
)
def test_gaps_separate_words_not_letters(text: str, words: int, glyph_px: int) -> None:
    assert len(word_gaps(line(text, glyph_px))) == words - 1


def test_light_text_on_dark_background() -> None:
    inverted = 255 - line("two words", 32)
    assert len(word_gaps(inverted)) == 1


def test_blank_crop_has_no_gaps() -> None:
    assert word_gaps(np.full((48, 200, 3), 255, np.uint8)) == []
