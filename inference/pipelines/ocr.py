"""OCR over a batch of images: batched detection, then batched recognition.

The pipeline is rapidocr-onnxruntime 1.4.4's, reorganised for batches:
decode, resize and letterbox by :func:`~sluicegate.schemas.imaging.ocr_resize_plan`
(the policy the worker charges by), detect text in all images in one call,
cut every box out, recognise all crops together, drop lines scoring under
0.5, and map boxes back to source-image pixels.

The angle classifier (``cls``, 180° text) is skipped: the reference inputs
are upright, and it would be one more model per crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sluicegate.inference.pipelines.image import decode_bgr
from sluicegate.inference.pipelines.ocr_det import Box, TextDetector, letterbox
from sluicegate.inference.pipelines.ocr_rec import DEFAULT_REC_BATCH, TextRecognizer, crop_box
from sluicegate.inference.pipelines.onnx import DEFAULT_INTRA_OP_THREADS
from sluicegate.schemas.errors import ErrorCode
from sluicegate.schemas.imaging import OcrResizePlan, image_size, ocr_resize_plan

__all__ = [
    "DEFAULT_MAX_DET_PIXELS",
    "TEXT_SCORE",
    "ImageTooLargeError",
    "OcrLine",
    "OcrPipeline",
    "OcrResult",
]

# rapidocr Global.text_score: lines recognised with a lower mean confidence are dropped.
TEXT_SCORE = 0.5
# The policy upscales thin images enormously (1500 x 1 px -> over 500 M px).
# The worker's hard limit should reject those first; this guards the model.
DEFAULT_MAX_DET_PIXELS = 4096 * 4096


class ImageTooLargeError(ValueError):
    """The detector input for this image would exceed the model's pixel limit."""

    code = ErrorCode.OVER_BUDGET


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float  # mean character confidence, 0..1
    # 4 (x, y) corners in source-image pixels, clockwise from top-left.
    box: tuple[tuple[int, int], ...]

    def as_json(self) -> dict[str, object]:
        return {"text": self.text, "score": self.score, "box": [list(p) for p in self.box]}


@dataclass(frozen=True)
class OcrResult:
    """One image's lines in reading order (top to bottom, left to right)."""

    lines: tuple[OcrLine, ...]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def score(self) -> float:
        """Mean line confidence; 0.0 when no text was found."""
        if not self.lines:
            return 0.0
        return float(np.mean([line.score for line in self.lines]))


class OcrPipeline:
    """Detection + recognition; one detection call and few recognition calls per batch.

    Not thread-safe (one Triton model instance owns one pipeline).
    """

    def __init__(
        self,
        *,
        det_model: Path,
        rec_model: Path,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
        rec_batch_size: int = DEFAULT_REC_BATCH,
        text_score: float = TEXT_SCORE,
        max_det_pixels: int = DEFAULT_MAX_DET_PIXELS,
    ) -> None:
        self._det = TextDetector(model_path=det_model, intra_op_threads=intra_op_threads)
        self._rec = TextRecognizer(
            model_path=rec_model, intra_op_threads=intra_op_threads, batch_size=rec_batch_size
        )
        self._text_score = text_score
        self._max_det_pixels = max_det_pixels

    def decode(self, data: bytes) -> npt.NDArray[np.uint8]:
        """Decode one encoded image into BGR (see :func:`decode_bgr`).

        Checks the header first: raises :class:`ImageTooLargeError` before any
        decode when the detector input would exceed `max_det_pixels`, and
        ImageDecodeError when the bytes are not a decodable image.
        """
        width, height = image_size(data)
        plan = ocr_resize_plan(width, height)
        if plan.det_pixels > self._max_det_pixels:
            raise ImageTooLargeError(
                f"a {width}x{height} image becomes {plan.det[0]}x{plan.det[1]} "
                f"({plan.det_pixels} px) for text detection, over this model's limit of "
                f"{self._max_det_pixels} px; crop or resize the image"
            )
        return decode_bgr(data)

    def run(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[OcrResult]:
        """One result per decoded BGR image, same order; images without text give no lines."""
        if not images:
            return []
        plans = [ocr_resize_plan(img.shape[1], img.shape[0]) for img in images]
        boxed = [letterbox(img, plan) for img, plan in zip(images, plans, strict=True)]
        boxes = self._det.detect(boxed, plans)

        crops: list[npt.NDArray[np.uint8]] = []
        owners: list[int] = []
        for i, image_boxes in enumerate(boxes):
            for box in image_boxes:
                crops.append(crop_box(boxed[i], box))
                owners.append(i)
        texts = self._rec.recognize(crops)

        lines: list[list[OcrLine]] = [[] for _ in images]
        flat_boxes = [box for image_boxes in boxes for box in image_boxes]
        for owner, box, (text, score) in zip(owners, flat_boxes, texts, strict=True):
            if score < self._text_score:
                continue
            corners = _to_source(box, plans[owner])
            lines[owner].append(OcrLine(text=text, score=score, box=corners))
        return [OcrResult(lines=tuple(image_lines)) for image_lines in lines]


def _to_source(box: Box, plan: OcrResizePlan) -> tuple[tuple[int, int], ...]:
    # rapidocr _get_origin_points: undo the letterbox, then the global resize,
    # then clip to the source image.
    points = box.astype(np.float64).copy()
    points[:, 1] -= plan.pad_top
    src_w, src_h = plan.source
    points[:, 0] *= src_w / plan.scaled[0]
    points[:, 1] *= src_h / plan.scaled[1]
    points[:, 0] = np.clip(points[:, 0], 0, src_w)
    points[:, 1] = np.clip(points[:, 1], 0, src_h)
    corners = np.rint(points).astype(np.int64)
    return tuple((int(x), int(y)) for x, y in corners)
