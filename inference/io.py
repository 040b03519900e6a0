"""What a model takes and gives: the contract between whoever drives a model and its code."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BatchRunner", "ModelInputs", "Outputs"]

Outputs = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ModelInputs:
    """What one request gives the model: its texts and decoded-source image bytes."""

    texts: tuple[str, ...] = ()
    images: tuple[bytes, ...] = ()


BatchRunner = Callable[[Sequence[ModelInputs]], list[Outputs]]
"""Runs one batch; one `Outputs` per input, in order. Blocking; raises for the whole batch."""
