"""Test material rendered locally: images of known strings, texts of known lengths.

OCR accuracy is scored against the strings the images were rendered from,
with the character error rate (Levenshtein distance / reference length).
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

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


def font(size: int, name: str = "DejaVuSans.ttf") -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType face `size` px tall: DejaVu when installed, else Pillow's bundled one."""
    path = _FONT_DIR / name
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a real TrueType font


def render_page(
    lines: Sequence[str],
    *,
    glyph_px: int = 32,
    canvas: tuple[int, int] | None = None,
    font_name: str = "DejaVuSans.ttf",
    margin: int = 30,
    fmt: str = "PNG",
) -> bytes:
    """Black lines of text on a white page, glyphs `glyph_px` tall, as encoded bytes.

    Without `canvas` the page is at least 640x480, like a photo or a scan:
    the OCR detector enlarges the short side to 736 px, so a tight crop of
    one line would be blown up tenfold, cost far more and read worse.
    """
    face = font(glyph_px, font_name)
    step = int(glyph_px * 1.8)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    widest = max((int(measure.textlength(line, font=face)) for line in lines), default=0)
    width, height = canvas or (
        max(640, widest + 2 * margin),
        max(480, len(lines) * step + 2 * margin),
    )
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * step), line, fill="black", font=face)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def render_text_image(text: str, *, glyph_px: int = 32, fmt: str = "PNG") -> bytes:
    """One line of text on a default-sized page."""
    return render_page([text], glyph_px=glyph_px, fmt=fmt)


def normalise(text: str) -> str:
    """Whitespace runs collapsed to one space: OCR line breaks are not errors."""
    return " ".join(text.split())


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of `hypothesis` against `reference`."""
    reference, hypothesis = normalise(reference), normalise(hypothesis)
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
