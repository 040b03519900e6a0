"""Image size and the OCR model's resize policy, as pure functions.

Both the worker's cost accounting (pixels charged per request, read from the
header before any full decode) and the `ocr` model's pipeline (the size it
actually resizes to) call :func:`ocr_resize_plan`, so the two cannot drift.

The policy is rapidocr-onnxruntime 1.4.4's, step for step (``main.py`` and
``ch_ppocr_det/utils.py``), with the same float arithmetic and Python's
``round`` (half to even):

1. ``max_side_len`` 2000: if the longer side is above it, scale it down to it;
   both sides are then rounded to multiples of 32.
2. ``min_side_len`` 30: if the shorter side is below it, scale it up to it;
   both sides rounded to multiples of 32.
3. Letterbox: if the height is at most ``min_height`` 30 or the aspect ratio
   w/h is above 8, pad black rows above and below (the same number each side).
4. Detection: ``limit_side_len`` 736, ``limit_type`` "min": if the shorter side
   is below 736, scale it up to 736; both sides rounded to multiples of 32.

One deliberate difference: where rapidocr raises (step 1 rounds a side to 0,
which happens for aspect ratios beyond about 125:1 on images over 2000 px), the
side is kept at 32 px instead, so every decodable image has a finite cost.

Within sluicegate it imports only ``schemas.errors`` (``schemas`` depends on nothing else).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .errors import ImageBombError, InvalidImageError, UnsupportedImageError

# Pillow warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS and raises only
# above twice that; a warning would let a bomb through, so it is an error here.
warnings.simplefilter("error", Image.DecompressionBombWarning)

#: The formats Pillow may parse (the request's mime types); every other plugin,
#: and its parser's attack surface, stays off.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")

__all__ = [
    "ALLOWED_FORMATS",
    "OCR_DET_LIMIT_SIDE_LEN",
    "OCR_MAX_SIDE_LEN",
    "OCR_MIN_HEIGHT",
    "OCR_MIN_SIDE_LEN",
    "OCR_WIDTH_HEIGHT_RATIO",
    "ImageDecodeError",
    "OcrResizePlan",
    "image_size",
    "ocr_input_size",
    "ocr_resize_plan",
]

# rapidocr-onnxruntime 1.4.4 config.yaml, Global and Det sections.
OCR_MAX_SIDE_LEN = 2000
OCR_MIN_SIDE_LEN = 30
OCR_MIN_HEIGHT = 30
OCR_WIDTH_HEIGHT_RATIO = 8
OCR_DET_LIMIT_SIDE_LEN = 736
# The detection network downsamples by 32; every size it sees is a multiple.
_STRIDE = 32


class ImageDecodeError(InvalidImageError):
    """The bytes are not an image Pillow can identify (or its header is unusable).

    Stable error code: ``invalid_image``.
    """


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from the image header only.

    The pixel data is not decoded (no ``Image.load()``), so this is cheap for
    any size; a file with a valid header and corrupt data passes here and fails
    at decode time. Raises :class:`ImageDecodeError` when Pillow cannot
    identify the format, the header is truncated, the size is not positive,
    or the image is over Pillow's decompression-bomb limit.
    """
    if not data:
        raise ImageDecodeError("empty image: send PNG or JPEG bytes")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageBombError(
            f"image too large to decode safely ({exc}); downscale it before sending"
        ) from exc
    except UnidentifiedImageError as exc:
        found = _any_format(data)
        if found is not None:
            raise UnsupportedImageError(
                f"image format {found} is not accepted; send one of {', '.join(ALLOWED_FORMATS)}"
            ) from exc
        raise ImageDecodeError(
            f"cannot read the image header ({type(exc).__name__}: {exc}); send PNG or JPEG bytes"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow raises SyntaxError/ValueError from some format plugins on
        # malformed headers, not only UnidentifiedImageError.
        raise ImageDecodeError(
            f"cannot read the image header ({type(exc).__name__}: {exc}); send PNG or JPEG bytes"
        ) from exc
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    return int(width), int(height)


def _any_format(data: bytes) -> str | None:
    """The format name if any Pillow plugin recognises `data` (header only), else None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format)
    except Exception:  # any plugin's parser error means "not recognisable"
        return None


@dataclass(frozen=True, kw_only=True)
class OcrResizePlan:
    """Every size the OCR pipeline goes through, all as (width, height) in pixels."""

    source: tuple[int, int]
    # After the global max_side_len / min_side_len steps (equal to source if untouched).
    scaled: tuple[int, int]
    # Black rows added above and, as many again, below the scaled image.
    pad_top: int
    # After the letterbox: what detection boxes are measured in and crops cut from.
    padded: tuple[int, int]
    # What the detection network sees; the pixels charged are det[0] * det[1].
    det: tuple[int, int]

    @property
    def det_pixels(self) -> int:
        return self.det[0] * self.det[1]


def ocr_resize_plan(width: int, height: int) -> OcrResizePlan:
    """The full resize plan for an image of `width` x `height` (see module doc).

    Raises ValueError for non-positive sizes. Deterministic and pure.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    w, h = width, height
    if max(h, w) > OCR_MAX_SIDE_LEN:
        w, h = _scale_to(w, h, OCR_MAX_SIDE_LEN, shorter=False)
    if min(h, w) < OCR_MIN_SIDE_LEN:
        w, h = _scale_to(w, h, OCR_MIN_SIDE_LEN, shorter=True)
    scaled = (w, h)

    pad_top = 0
    if h <= OCR_MIN_HEIGHT or w / h > OCR_WIDTH_HEIGHT_RATIO:
        # rapidocr's _get_padding_h: a target height of twice max(w/8, 30).
        new_h = max(int(w / OCR_WIDTH_HEIGHT_RATIO), OCR_MIN_HEIGHT) * 2
        pad_top = int(abs(new_h - h) / 2)
    padded = (w, h + 2 * pad_top)

    pw, ph = padded
    if min(ph, pw) < OCR_DET_LIMIT_SIDE_LEN:
        det = _scale_to(pw, ph, OCR_DET_LIMIT_SIDE_LEN, shorter=True)
    else:
        det = (_round32(pw), _round32(ph))
    return OcrResizePlan(
        source=(width, height), scaled=scaled, pad_top=pad_top, padded=padded, det=det
    )


def ocr_input_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) the OCR detection network sees for a `width` x `height` image.

    Both are positive multiples of 32. Charge ``w * h`` pixels for it.
    """
    return ocr_resize_plan(width, height).det


def _scale_to(w: int, h: int, side: int, *, shorter: bool) -> tuple[int, int]:
    # The same expression order as rapidocr (float(limit) / side, int(x * ratio))
    # so float rounding lands on the same integers.
    ref = (h if h < w else w) if shorter else (h if h > w else w)
    ratio = float(side) / ref
    return _round32(int(w * ratio)), _round32(int(h * ratio))


def _round32(x: int) -> int:
    # Python's round (half to even), as rapidocr; never 0 (see module doc).
    return max(round(x / _STRIDE) * _STRIDE, _STRIDE)
