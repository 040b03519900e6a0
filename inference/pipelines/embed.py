"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX), sentence-transformers semantics.

Tokenise without padding (the shipped ``tokenizer.json`` pads every text to
128 tokens, which would make every request cost the same), truncate at the
model's ``max_seq_length`` of 256 tokens, pad the batch once to its longest
member, run the transformer, mean-pool over the attention mask and
L2-normalise, as the model's ``modules.json`` (Transformer, Pooling with
``pooling_mode_mean_tokens``, Normalize) prescribes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sluicegate.inference.pipelines.onnx import DEFAULT_INTRA_OP_THREADS, cpu_session
from sluicegate.schemas.cost import MAX_SEQ_TOKENS as MAX_TOKENS
from sluicegate.schemas.cost import load_tokenizer

__all__ = ["EMBEDDING_DIM", "MAX_TOKENS", "EmbedBatch", "TextEmbedder", "load_tokenizer"]

EMBEDDING_DIM = 384


@dataclass(frozen=True)
class EmbedBatch:
    """One batch's output, row i for text i."""

    embeddings: npt.NDArray[np.float32]  # [N, 384], unit L2 norm
    tokens: npt.NDArray[np.int32]  # [N], real token count per text
    padded_length: int  # tokens per row after padding (max of `tokens`)


class TextEmbedder:
    """Embeds batches of texts; one ONNX Runtime call per batch.

    Not thread-safe (one Triton model instance owns one embedder).
    """

    def __init__(
        self,
        *,
        model_path: Path,
        tokenizer_path: Path,
        max_tokens: int = MAX_TOKENS,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
    ) -> None:
        self._tokenizer = load_tokenizer(tokenizer_path, max_tokens=max_tokens)
        self._session = cpu_session(model_path, intra_op_threads=intra_op_threads)
        self._input_names = {i.name for i in self._session.get_inputs()}
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self._pad_id = 0 if pad_id is None else int(pad_id)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Real token count per text (special tokens included, truncated at max_tokens)."""
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> EmbedBatch:
        """Embeddings for `texts`, padded once to the longest member.

        An empty `texts` gives empty arrays without running the model.
        """
        n = len(texts)
        if n == 0:
            return EmbedBatch(
                embeddings=np.zeros((0, EMBEDDING_DIM), np.float32),
                tokens=np.zeros((0,), np.int32),
                padded_length=0,
            )
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        width = int(lengths.max())
        input_ids = np.full((n, width), self._pad_id, dtype=np.int64)
        type_ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            input_ids[row, :k] = enc.ids
            type_ids[row, :k] = enc.type_ids
            mask[row, :k] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": type_ids}
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return EmbedBatch(
            embeddings=_mean_pool_normalise(np.asarray(hidden, np.float32), mask),
            tokens=lengths,
            padded_length=width,
        )


def _mean_pool_normalise(
    hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    # sentence-transformers Pooling: sum over real tokens / clamp(count, 1e-9);
    # Normalize: x / max(||x||, 1e-12) (torch.nn.functional.normalize).
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return np.ascontiguousarray(pooled / norms, dtype=np.float32)
