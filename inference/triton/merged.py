"""Bench-only copies of ``text-embed`` and ``ocr`` for Triton's own dynamic batcher.

With ``dynamic_batching`` on, Triton hands a Python-backend model every
request of a formed batch in one ``execute(requests)`` call, but, unlike the
ONNX Runtime backend, it does not concatenate them: a model that answers each
request on its own (``respond_each``, as ``text_embed`` and ``ocr`` do, since
the worker sends whole batches) would gain nothing from the batcher. This
model concatenates the requests' items, runs the pipeline once (padded to the
longest member, as a concatenated ONNX batch is), and splits the outputs back
per request: what the dynamic batcher does for a framework backend.

Parameters: those of ``text-embed`` or ``ocr``, plus ``merge_model`` naming
which (written by ``ops/models/bench_repository.py``). If any request of a
call has a bad input, the call falls back to one request at a time, so that
request alone gets its error response.
"""

from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils

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

    _embedder: TextEmbedder | None = None
    _pipeline: OcrPipeline | None = None

    def initialize(self, args: dict[str, str]) -> None:
        params = prepare_model(args)
        kind = params.get("merge_model")
        if kind == "text-embed":
            self._embedder = text_embedder(params)
        elif kind == "ocr":
            self._pipeline = ocr_pipeline(params)
        else:
            raise ValueError(f"merge_model must be 'text-embed' or 'ocr', not {kind!r}")

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            items = [self._inputs(request) for request in requests]
        except RequestError:
            return respond_each(requests, lambda r: self._respond([self._inputs(r)])[0])
        try:
            return self._respond(items)
        except Exception:  # a failure of the whole run: find (and log) whose input it was
            return respond_each(requests, lambda r: self._respond([self._inputs(r)])[0])

    def _inputs(self, request: Any) -> list[Any]:
        if self._embedder is not None:
            return list(texts_from(input_items(request, "TEXT"), name="TEXT"))
        assert self._pipeline is not None
        return list(decode_images(self._pipeline, input_items(request, "IMAGE")))

    def _respond(self, items: list[list[Any]]) -> list[Any]:
        """One response per request's items, after one pipeline run over all of them."""
        flat = [item for per_request in items for item in per_request]
        bounds = []
        start = 0
        for per_request in items:
            bounds.append((start, start + len(per_request)))
            start += len(per_request)
        if self._embedder is not None:
            batch = self._embedder.embed(flat)
            tokens = batch.tokens.reshape(-1, 1)
            return [
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", batch.embeddings[a:b]),
                        pb_utils.Tensor("TOKENS", tokens[a:b]),
                    ]
                )
                for a, b in bounds
            ]
        assert self._pipeline is not None
        results = self._pipeline.run(flat)
        responses = []
        for a, b in bounds:
            mine = results[a:b]
            lines = [json.dumps([line.as_json() for line in r.lines]) for r in mine]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        string_tensor("TEXT", [r.text for r in mine]),
                        float_tensor("SCORE", [r.score for r in mine]),
                        string_tensor("LINES", lines),
                    ]
                )
            )
        return responses
