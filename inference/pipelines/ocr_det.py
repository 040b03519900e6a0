"""Batched PP-OCRv4 text detection (DB), after rapidocr-onnxruntime 1.4.4.

rapidocr detects one image at a time. Here every image of a batch is resized
by :func:`~sluicegate.schemas.imaging.ocr_resize_plan`, padded at the bottom
and right to the batch's largest height and width (that padded size is what
the cost accounting charges for each member), and run in one call. Each
image's probability map is cut back to its own size before rapidocr's
``DBPostProcess``, so padding never produces boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

from sluicegate.inference.pipelines.onnx import DEFAULT_INTRA_OP_THREADS, cpu_session
from sluicegate.schemas.imaging import OcrResizePlan

__all__ = ["Box", "TextDetector", "letterbox", "sorted_boxes"]

# A quadrilateral, 4 x (x, y) float32 points: top-left, top-right, bottom-right, bottom-left.
Box = npt.NDArray[np.float32]

# rapidocr config.yaml, Det section.
_THRESH = 0.3
_BOX_THRESH = 0.5
_MAX_CANDIDATES = 1000
_UNCLIP_RATIO = 1.6


def letterbox(img: npt.NDArray[np.uint8], plan: OcrResizePlan) -> npt.NDArray[np.uint8]:
    """Apply the plan's global resize and black top/bottom padding (rapidocr main.py)."""
    if plan.scaled != plan.source:
        img = np.asarray(cv2.resize(img, plan.scaled), dtype=np.uint8)
    if plan.pad_top:
        img = np.asarray(
            cv2.copyMakeBorder(
                img, plan.pad_top, plan.pad_top, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)
            ),
            dtype=np.uint8,
        )
    return img


class TextDetector:
    """Finds text boxes in a batch of letterboxed images; one ONNX call per batch.

    Not thread-safe (one Triton model instance owns one detector).
    """

    def __init__(
        self, *, model_path: Path, intra_op_threads: int = DEFAULT_INTRA_OP_THREADS
    ) -> None:
        self._session = cpu_session(model_path, intra_op_threads=intra_op_threads)
        self._input = self._session.get_inputs()[0].name
        self._post = DBPostProcess(
            thresh=_THRESH,
            box_thresh=_BOX_THRESH,
            max_candidates=_MAX_CANDIDATES,
            unclip_ratio=_UNCLIP_RATIO,
            score_mode="fast",
            use_dilation=True,
        )

    def detect(
        self, images: Sequence[npt.NDArray[np.uint8]], plans: Sequence[OcrResizePlan]
    ) -> list[list[Box]]:
        """Boxes per image, in that image's letterboxed coordinates, reading order.

        `images` are the outputs of :func:`letterbox` for `plans` (same order).
        """
        if len(images) != len(plans):
            raise ValueError(f"{len(images)} images but {len(plans)} plans")
        if not images:
            return []
        max_w = max(p.det[0] for p in plans)
        max_h = max(p.det[1] for p in plans)
        # Zero after normalisation is mid-grey; padding sits outside every
        # image's crop of the probability map, so its value matters little.
        batch = np.zeros((len(images), 3, max_h, max_w), dtype=np.float32)
        for i, (img, plan) in enumerate(zip(images, plans, strict=True)):
            w, h = plan.det
            resized = cv2.resize(img, (w, h)).astype(np.float32)
            # rapidocr DetPreProcess: (x / 255 - 0.5) / 0.5, HWC -> CHW.
            batch[i, :, :h, :w] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
        (preds,) = self._session.run(None, {self._input: batch})
        results: list[list[Box]] = []
        for i, plan in enumerate(plans):
            w, h = plan.det
            pred = np.ascontiguousarray(preds[i : i + 1, :, :h, :w])
            pw, ph = plan.padded
            raw_boxes, _scores = self._post(pred, (ph, pw))
            results.append(sorted_boxes(_filter_boxes(raw_boxes, ph, pw)))
        return results


def _filter_boxes(boxes: npt.NDArray[np.int32], height: int, width: int) -> list[Box]:
    # rapidocr TextDetector.filter_tag_det_res: order, clip, drop slivers.
    kept: list[Box] = []
    for raw in boxes:
        box = _order_points_clockwise(np.asarray(raw, dtype=np.float32))
        box[:, 0] = np.clip(box[:, 0], 0, width - 1).astype(np.int32)
        box[:, 1] = np.clip(box[:, 1], 0, height - 1).astype(np.int32)
        rect_width = int(np.linalg.norm(box[0] - box[1]))
        rect_height = int(np.linalg.norm(box[0] - box[3]))
        if rect_width <= 3 or rect_height <= 3:
            continue
        kept.append(box)
    return kept


def _order_points_clockwise(pts: Box) -> Box:
    x_sorted = pts[np.argsort(pts[:, 0]), :]
    left, right = x_sorted[:2, :], x_sorted[2:, :]
    tl, bl = left[np.argsort(left[:, 1]), :]
    tr, br = right[np.argsort(right[:, 1]), :]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def sorted_boxes(boxes: Sequence[Box]) -> list[Box]:
    """Top-to-bottom, then left-to-right within 10 px rows (rapidocr's sorted_boxes)."""
    ordered = sorted(boxes, key=lambda b: (float(b[0][1]), float(b[0][0])))
    for i in range(len(ordered) - 1):
        for j in range(i, -1, -1):
            same_row = abs(ordered[j + 1][0][1] - ordered[j][0][1]) < 10
            if same_row and ordered[j + 1][0][0] < ordered[j][0][0]:
                ordered[j], ordered[j + 1] = ordered[j + 1], ordered[j]
            else:
                break
    return ordered
