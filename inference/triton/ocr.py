"""The ``ocr`` Triton model: IMAGE [N, 1] -> TEXT, SCORE, LINES (each [N, 1]).

TEXT is the recognised lines joined with newlines in reading order, SCORE the
mean line confidence (0 without text), LINES a JSON list of
``{"text", "score", "box"}`` with box corners in source-image pixels.
Parameters: ``det_model_path``, ``rec_model_path``, ``intra_op_threads``,
``rec_batch_size``, ``max_det_pixels``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from sluicegate.inference.pipelines.ocr import ImageTooLargeError, OcrPipeline
from sluicegate.inference.triton._triton import (
    RequestError,
    float_tensor,
    input_items,
    prepare_model,
    respond_each,
    string_tensor,
)
from sluicegate.schemas.imaging import ImageDecodeError

__all__ = ["TritonPythonModel", "decode_images", "ocr_pipeline"]


def ocr_pipeline(params: dict[str, str]) -> OcrPipeline:
    """The pipeline the ``ocr`` and ``doc-match`` models build from their parameters."""
    return OcrPipeline(
        det_model=Path(params["det_model_path"]),
        rec_model=Path(params["rec_model_path"]),
        intra_op_threads=int(params["intra_op_threads"]),
        rec_batch_size=int(params["rec_batch_size"]),
        max_det_pixels=int(params["max_det_pixels"]),
    )


def decode_images(pipeline: OcrPipeline, items: Sequence[bytes]) -> list[npt.NDArray[np.uint8]]:
    """Decode every image; the first bad one fails the request, naming its index."""
    images: list[npt.NDArray[np.uint8]] = []
    for index, item in enumerate(items):
        try:
            images.append(pipeline.decode(item))
        except (ImageDecodeError, ImageTooLargeError) as exc:
            raise RequestError(exc.code, f"IMAGE item {index} of {len(items)}: {exc}") from exc
    return images


class TritonPythonModel:
    """One instance per model instance; ``initialize`` runs once before any ``execute``."""

    _pipeline: OcrPipeline

    def initialize(self, args: dict[str, str]) -> None:
        self._pipeline = ocr_pipeline(prepare_model(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        return respond_each(requests, self._handle)

    def _handle(self, request: Any) -> Any:
        results = self._pipeline.run(decode_images(self._pipeline, input_items(request, "IMAGE")))
        lines = [json.dumps([line.as_json() for line in r.lines]) for r in results]
        return pb_utils.InferenceResponse(
            output_tensors=[
                string_tensor("TEXT", [r.text for r in results]),
                float_tensor("SCORE", [r.score for r in results]),
                string_tensor("LINES", lines),
            ]
        )
