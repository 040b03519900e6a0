"""The seam between the engine and whatever runs the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sluicegate.inference.io import ModelInputs, Outputs

__all__ = ["InferenceBackend", "ModelInputs", "Outputs"]


class InferenceBackend(Protocol):
    """Runs one batch of one model.

    `infer` returns exactly one `Outputs` per input, in input order, or
    raises a `BackendError` for the whole batch (the engine bisects).
    """

    async def infer(self, model: str, batch: Sequence[ModelInputs]) -> list[Outputs]: ...

    async def model_version(self, model: str) -> str: ...

    async def close(self) -> None: ...
