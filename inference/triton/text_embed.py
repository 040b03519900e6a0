"""The ``text-embed`` Triton model: TEXT [N, 1] -> EMBEDDING [N, 384], TOKENS [N, 1].

Parameters (written by ``ops/models/build.py``): ``model_path`` (int8 ONNX),
``tokenizer_path`` (tokenizer.json), ``max_tokens``, ``intra_op_threads``,
and per version (``v<N>.<key>``, see ``_triton.version_parameters``) the
weights that version runs. ``fail_fraction`` (only in a repository built
with the rollback drill version) makes a request fail when any of its texts
hashes below that fraction: a deliberately broken canary, deterministic per text.
"""

from __future__ import annotations

import hashlib
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
        self._fail_fraction = float(params.get("fail_fraction", "0"))

    def execute(self, requests: list[Any]) -> list[Any]:
        chaos_delay()
        return respond_each(requests, self._handle)

    def _handle(self, request: Any) -> Any:
        texts = texts_from(input_items(request, "TEXT"), name="TEXT")
        if self._fail_fraction > 0 and any(_point(t) < self._fail_fraction for t in texts):
            raise RuntimeError("rollback drill version: this input fails on purpose")
        batch = self._embedder.embed(texts)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("EMBEDDING", batch.embeddings),
                pb_utils.Tensor("TOKENS", batch.tokens.reshape(-1, 1)),
            ]
        )


def _point(text: str) -> float:
    """A stable point in [0, 1) per text (sha256), so a drill failure is reproducible."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64
