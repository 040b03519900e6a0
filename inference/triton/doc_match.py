"""The ``doc-match`` Triton model: IMAGE, TEXT [N, 1] -> OCR_TEXT, SIMILARITY [N, 1].

OCR the image, embed the OCR text and the query text with the same pipelines
as ``ocr`` and ``text-embed`` (in process, no BLS round trip), and return the
cosine similarity of the two unit vectors. An image without recognised text
has similarity 0.0: the embedding of an empty string would give an arbitrary
number instead.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from sluicegate.inference.pipelines.doc_match import match_documents
from sluicegate.inference.pipelines.embed import TextEmbedder
from sluicegate.inference.pipelines.ocr import OcrPipeline
from sluicegate.inference.triton._triton import (
    RequestError,
    float_tensor,
    input_items,
    prepare_model,
    respond_each,
    string_tensor,
    texts_from,
)
from sluicegate.inference.triton.ocr import decode_images, ocr_pipeline
from sluicegate.inference.triton.text_embed import text_embedder

__all__ = ["TritonPythonModel"]


class TritonPythonModel:
    """One instance per model instance; ``initialize`` runs once before any ``execute``."""

    _ocr: OcrPipeline
    _embedder: TextEmbedder

    def initialize(self, args: dict[str, str]) -> None:
        params = prepare_model(args)
        self._ocr = ocr_pipeline(params)
        self._embedder = text_embedder(params)

    def execute(self, requests: list[Any]) -> list[Any]:
        return respond_each(requests, self._handle)

    def _handle(self, request: Any) -> Any:
        images = input_items(request, "IMAGE")
        queries = texts_from(input_items(request, "TEXT"), name="TEXT")
        if len(images) != len(queries):
            raise RequestError("invalid_request", f"{len(images)} images but {len(queries)} texts")
        ocr_texts, similarity = match_documents(
            self._ocr, self._embedder, decode_images(self._ocr, images), queries
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                string_tensor("OCR_TEXT", ocr_texts),
                float_tensor("SIMILARITY", similarity),
            ]
        )
