"""Image decoding for the OCR pipeline (Pillow, then BGR as the models were trained)."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from sluicegate.schemas.imaging import ALLOWED_FORMATS, ImageDecodeError, image_size

__all__ = ["decode_bgr"]


def decode_bgr(data: bytes) -> npt.NDArray[np.uint8]:
    """Decode encoded image bytes into an H x W x 3 BGR uint8 array.

    The array's size equals :func:`~sluicegate.schemas.imaging.image_size`
    of the same bytes (no EXIF rotation is applied, as rapidocr applies none),
    so the pixels the worker charged are the pixels the model resizes.
    Transparent areas are composited onto white (text images are dark on light).
    Raises :class:`ImageDecodeError` on any decode failure.
    """
    width, height = image_size(data)
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            img.load()
            rgb = _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(
            f"cannot decode the image ({type(exc).__name__}: {exc}); send PNG or JPEG bytes"
        ) from exc
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[:2] != (height, width):
        raise ImageDecodeError(
            f"decoded size {array.shape[1]}x{array.shape[0]} differs from the header's "
            f"{width}x{height}"
        )
    # RGB -> BGR: PaddleOCR models were trained on cv2.imread (BGR) input.
    return np.ascontiguousarray(array[:, :, ::-1])


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
