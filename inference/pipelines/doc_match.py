"""doc-match: OCR each image, embed its text and the query, cosine similarity.

Shared by the Triton model (``backends/doc_match.py``) and the in-process
runner (``models/runners.py``) so both answer the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sluicegate.inference.pipelines.embed import TextEmbedder
from sluicegate.inference.pipelines.ocr import OcrPipeline

__all__ = ["match_documents"]


def match_documents(
    ocr: OcrPipeline,
    embedder: TextEmbedder,
    images: Sequence[npt.NDArray[np.uint8]],
    queries: Sequence[str],
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(OCR text per image, similarity per pair); 0.0 where the image has no text.

    The embedding of an empty string would give an arbitrary number instead.
    """
    ocr_texts = [r.text for r in ocr.run(images)]
    # One embedding call for both sides: 2N texts padded once.
    vectors = embedder.embed([*ocr_texts, *queries]).embeddings
    n = len(queries)
    similarity = np.einsum("ij,ij->i", vectors[:n], vectors[n:]).astype(np.float32)
    similarity[np.array([not text for text in ocr_texts], dtype=bool)] = 0.0
    return ocr_texts, similarity
