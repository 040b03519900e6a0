"""Test material rendered locally: images of known strings, texts of known lengths.

OCR accuracy is scored against the strings the images were rendered from,
with the character error rate (Levenshtein distance / reference length).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)

PHRASES = (
    "Invoice 2041 total due 318.40 EUR",
    "Shipping address 14 Harbour Road",
    "Quarterly report for the sales team",
    "Kafka carries requests to the GPU pool",
    "Order number 77812 confirmed",
    "Meeting moved to Thursday at 10:30",
    "Battery level 87 percent",
    "Please sign and return the contract",
)

TEXTS = (
    "A short query.",
    "Budget batching keeps padding waste low by grouping similar lengths together.",
    "The quarterly report shows revenue growth in every region, with the strongest "
    "results in the north where two new distribution centres opened in the spring.",
    "Streaming inference systems read requests from Kafka topics, batch them under a token "
    "or pixel budget, call an inference server and write exactly one result per request "
    "back to a result topic, committing offsets only after the results are acknowledged "
    "by the broker so that nothing is lost when a worker crashes in the middle of a batch.",
)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in _FONT_CANDIDATES:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a real TrueType font


def render_text_image(
    text: str, *, glyph_px: int = 32, margin: int = 24, fmt: str = "PNG"
) -> bytes:
    """Black text on white, `glyph_px` tall, as encoded image bytes."""
    face = font(glyph_px)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), text, font=face
    )
    image = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin), "white")
    ImageDraw.Draw(image).text((margin - left, margin - top), text, fill="black", font=face)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of `hypothesis` against `reference`."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    return Levenshtein.distance(reference, hypothesis) / len(reference)


@dataclass(frozen=True, kw_only=True)
class Sample:
    kind: str  # ocr | text-embed | doc-match
    truth: str  # the rendered string (ocr, doc-match) or the text (text-embed)
    image: bytes | None = None
    query: str | None = None
    matching: bool | None = None  # doc-match: does the query match the image?


def mixed_samples(count: int, *, seed: int = 7) -> list[Sample]:
    """A reproducible mix: OCR images of several sizes, texts of several lengths, doc pairs."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for i in range(count):
        kind = ("ocr", "text-embed", "doc-match")[i % 3]
        phrase = rng.choice(PHRASES)
        if kind == "ocr":
            out.append(
                Sample(
                    kind=kind,
                    truth=phrase,
                    image=render_text_image(phrase, glyph_px=rng.choice((24, 32, 48))),
                )
            )
        elif kind == "text-embed":
            out.append(Sample(kind=kind, truth=rng.choice(TEXTS)))
        else:
            matching = rng.random() < 0.5
            query = phrase if matching else rng.choice([p for p in PHRASES if p != phrase])
            out.append(
                Sample(
                    kind=kind,
                    truth=phrase,
                    query=query,
                    matching=matching,
                    image=render_text_image(phrase, glyph_px=rng.choice((28, 36))),
                )
            )
    return out
