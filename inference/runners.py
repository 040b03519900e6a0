"""The reference models as in-process `BatchRunner`s (the worker's ONNX Runtime backend).

Same pipelines, weights and outputs as the Triton Python-backend models, so
`SLUICEGATE_BACKEND=onnxruntime` answers what Triton would, without a server.
Each runner is built lazily on first use in its model's own thread and is
used by that thread only (the pipelines are not thread-safe).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from .io import BatchRunner, ModelInputs, Outputs
from .pipelines.doc_match import match_documents
from .pipelines.embed import MAX_TOKENS, TextEmbedder
from .pipelines.ocr import OcrPipeline
from .weights import weight_paths

__all__ = ["build_runners"]

_T = TypeVar("_T")


def _lazy(make: Callable[[], _T]) -> Callable[[], _T]:
    """`make()` once, on first call (model sessions take seconds to load)."""
    lock = threading.Lock()
    made: list[_T] = []

    def get() -> _T:
        with lock:
            if not made:
                made.append(make())
            return made[0]

    return get


def build_runners(models: Sequence[str], *, intra_op_threads: int = 2) -> dict[str, BatchRunner]:
    """A runner per requested model name; raises `KeyError` naming an unknown model."""
    weights = weight_paths()

    def embedder() -> TextEmbedder:
        return TextEmbedder(
            model_path=weights["embed_model"],
            tokenizer_path=weights["tokenizer"],
            max_tokens=MAX_TOKENS,
            intra_op_threads=intra_op_threads,
        )

    def ocr() -> OcrPipeline:
        return OcrPipeline(
            det_model=weights["det_model"],
            rec_model=weights["rec_model"],
            intra_op_threads=intra_op_threads,
        )

    def text_embed() -> BatchRunner:
        get = _lazy(embedder)

        def run(batch: Sequence[ModelInputs]) -> list[Outputs]:
            out = get().embed([item.texts[0] for item in batch])
            return [
                {"embedding": row.tolist(), "tokens": int(tokens)}
                for row, tokens in zip(out.embeddings, out.tokens, strict=True)
            ]

        return run

    def ocr_runner() -> BatchRunner:
        get = _lazy(ocr)

        def run(batch: Sequence[ModelInputs]) -> list[Outputs]:
            pipeline = get()
            results = pipeline.run([pipeline.decode(item.images[0]) for item in batch])
            return [
                {
                    "text": r.text,
                    "score": r.score,
                    "lines": [line.as_json() for line in r.lines],
                }
                for r in results
            ]

        return run

    def doc_match() -> BatchRunner:
        get_ocr, get_embedder = _lazy(ocr), _lazy(embedder)

        def run(batch: Sequence[ModelInputs]) -> list[Outputs]:
            pipeline = get_ocr()
            images = [pipeline.decode(item.images[0]) for item in batch]
            texts, similarity = match_documents(
                pipeline, get_embedder(), images, [item.texts[0] for item in batch]
            )
            return [
                {"ocr_text": text, "similarity": float(sim)}
                for text, sim in zip(texts, similarity, strict=True)
            ]

        return run

    factories: dict[str, Callable[[], BatchRunner]] = {
        "text-embed": text_embed,
        "ocr": ocr_runner,
        "doc-match": doc_match,
    }
    unknown = [m for m in models if m not in factories]
    if unknown:
        raise KeyError(f"no in-process runner for {unknown}; known: {', '.join(factories)}")
    return {name: factories[name]() for name in models}
