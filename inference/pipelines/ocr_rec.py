"""Batched PP-OCRv4 text recognition (CTC), after rapidocr-onnxruntime 1.4.4.

Crops from every image of a request batch are recognised together: sorted by
aspect ratio so each recognition batch pads little, resized to height 48
keeping the aspect ratio, and padded with zeros to the widest member of their
recognition batch (at least 320 px, rapidocr's ``rec_img_shape``). The
character dictionary is the one the model carries in its ONNX metadata.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from sluicegate.inference.pipelines.onnx import DEFAULT_INTRA_OP_THREADS, cpu_session

__all__ = ["REC_HEIGHT", "TextRecognizer", "crop_box"]

REC_HEIGHT = 48
_REC_MIN_WIDTH = 320
# Crops per ONNX call. Sorting by aspect ratio keeps padding low; the cap
# bounds memory for batches with many lines.
DEFAULT_REC_BATCH = 16


def crop_box(img: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Perspective-crop `box` out of `img`; tall crops (h/w >= 1.5) are turned 90°.

    rapidocr's ``get_rotate_crop_image``, unchanged.
    """
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(
        img, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] * 1.0 / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return np.asarray(crop, dtype=np.uint8)


class TextRecognizer:
    """Reads text lines from crops; ``len(batch_size)`` crops per ONNX call.

    Not thread-safe (one Triton model instance owns one recognizer).
    """

    def __init__(
        self,
        *,
        model_path: Path,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
        batch_size: int = DEFAULT_REC_BATCH,
    ) -> None:
        self._session = cpu_session(model_path, intra_op_threads=intra_op_threads)
        self._input = self._session.get_inputs()[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ValueError(f"{model_path} carries no 'character' dictionary in its metadata")
        # CTC class 0 is the blank; the model's dictionary follows, then a space
        # (rapidocr's CTCLabelDecode with use_space_char, which this replaces).
        self._chars = ["", *meta["character"].splitlines(), " "]
        self._batch_size = batch_size

    def recognize(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[tuple[str, float]]:
        """(text, mean character confidence) per crop, in the order given."""
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = np.argsort([c.shape[1] / float(c.shape[0]) for c in crops], kind="stable")
        for start in range(0, len(crops), self._batch_size):
            chunk = [int(i) for i in order[start : start + self._batch_size]]
            max_ratio = max(
                _REC_MIN_WIDTH / REC_HEIGHT,
                *(crops[i].shape[1] / float(crops[i].shape[0]) for i in chunk),
            )
            batch = np.stack([_resize_norm(crops[i], max_ratio) for i in chunk])
            (preds,) = self._session.run(None, {self._input: batch})
            for row, i in enumerate(chunk):
                crop = crops[i]
                # Crop pixels per CTC frame: the frames span the padded batch width.
                resized_w = min(
                    batch.shape[3], math.ceil(REC_HEIGHT * crop.shape[1] / crop.shape[0])
                )
                px_per_frame = batch.shape[3] / preds.shape[1] * crop.shape[1] / resized_w
                results[i] = self._decode(preds[row], word_gaps(crop), px_per_frame)
        return results

    def _decode(
        self,
        probs: npt.NDArray[np.float32],
        gaps: Sequence[float],
        px_per_frame: float,
    ) -> tuple[str, float]:
        """Greedy CTC decode, restoring word spaces the model dropped.

        ch_PP-OCRv4_rec often runs English words together ("Ordernumber");
        where the crop shows a blank gap wider than a word space between two
        consecutive characters (`gaps`, crop x of each gap's centre), a space
        is put back. Returns (text, mean character confidence).
        """
        best = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        chars: list[str] = []
        scores: list[float] = []
        centres: list[float] = []
        prev = 0
        for t, (idx, p) in enumerate(zip(best, conf, strict=True)):
            if idx != 0 and idx != prev:
                chars.append(self._chars[idx])
                scores.append(float(p))
                centres.append((t + 0.5) * px_per_frame)
            prev = idx
        text: list[str] = []
        for k, ch in enumerate(chars):
            if k and ch != " " and chars[k - 1] != " ":
                if any(centres[k - 1] < g < centres[k] for g in gaps):
                    text.append(" ")
            text.append(ch)
        return "".join(text).strip(), float(np.mean(scores)) if scores else 0.0


def word_gaps(crop: npt.NDArray[np.uint8]) -> list[float]:
    """Crop x (centre) of every blank column run wide enough to separate two words.

    A run counts as a word gap when it is at least a quarter of the line's
    ink height and 1.6 times the median blank run (the typical gap between
    letters): a word space is ~0.3 em in common fonts, a letter gap < 0.15 em.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    polarity = cv2.THRESH_BINARY_INV if gray.mean() > 127 else cv2.THRESH_BINARY
    _, ink = cv2.threshold(gray, 0, 255, polarity + cv2.THRESH_OTSU)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = ink.any(axis=0)
    inked = np.flatnonzero(cols)
    if rows.size == 0 or inked.size < 2:
        return []
    runs: list[tuple[int, int]] = []
    start = None
    for x in range(int(inked[0]), int(inked[-1]) + 1):
        if not cols[x] and start is None:
            start = x
        elif cols[x] and start is not None:
            runs.append((start, x))
            start = None
    if not runs:
        return []
    typical = float(np.median([end - begin for begin, end in runs]))
    min_gap = max(2.0, 0.25 * (rows[-1] - rows[0] + 1), 1.6 * typical)
    return [(begin + end) / 2 for begin, end in runs if end - begin >= min_gap]


def _resize_norm(crop: npt.NDArray[np.uint8], max_wh_ratio: float) -> npt.NDArray[np.float32]:
    # rapidocr TextRecognizer.resize_norm_img: height 48, width by aspect ratio,
    # capped at the batch width, then zero padding on the right.
    batch_width = int(REC_HEIGHT * max_wh_ratio)
    h, w = crop.shape[:2]
    resized_w = min(batch_width, math.ceil(REC_HEIGHT * w / float(h)))
    resized = cv2.resize(crop, (resized_w, REC_HEIGHT)).astype(np.float32)
    out = np.zeros((3, REC_HEIGHT, batch_width), dtype=np.float32)
    out[:, :, :resized_w] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out
