"""The ``text-embed`` Triton model: TEXT [N, 1] -> EMBEDDING [N, 384], TOKENS [N, 1].

Parameters (written by ``ops/models/build.py``): ``model_path`` (int8 ONNX),
``tokenizer_path`` (tokenizer.json), ``max_tokens``, ``intra_op_threads``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from sluicegate.inference.pipelines.embed import TextEmbedder
from sluicegate.inference.triton._chaos import chaos_delay
from sluicegate.inference.triton._triton import (
    input_items,
    prepare_model,
    respond_each,
    texts_from,
)

__all__ = ["TritonPythonModel", "text_embedder"]


def text_embedder(params: dict[str, str]) -> TextEmbedder:
    """The embedder a model config's parameters describe (also used by doc-match)."""
    return TextEmbedder(
        model_path=Path(params["model_path"]),
        tokenizer_path=Path(params["tokenizer_path"]),
        max_tokens=int(params["max_tokens"]),
        intra_op_threads=int(params["intra_op_threads"]),
    )


class TritonPythonModel:
    """One instance per model instance; ``initialize`` runs once before any ``execute``."""

    _embedder: TextEmbedder

    def initialize(self, args: dict[str, str]) -> None:
        params = prepare_model(args)
        self._embedder = text_embedder(params)

    def execute(self, requests: list[Any]) -> list[Any]:
        chaos_delay()
        return respond_each(requests, self._handle)

    def _handle(self, request: Any) -> Any:
        texts = texts_from(input_items(request, "TEXT"), name="TEXT")
        batch = self._embedder.embed(texts)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("EMBEDDING", batch.embeddings),
                pb_utils.Tensor("TOKENS", batch.tokens.reshape(-1, 1)),
            ]
        )
