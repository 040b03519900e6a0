"""The seam between the engine and whatever runs the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sluicegate.inference.io import ModelInputs, Outputs

from ..variants import ServedVariants

__all__ = ["InferenceBackend", "ModelInputs", "Outputs"]


class InferenceBackend(Protocol):
    """Runs one batch of one model.

    `infer` runs `version` of `model` ("" = the backend's default) and
    returns exactly one `Outputs` per input, in input order, or raises a
    `BackendError` for the whole batch (the engine bisects).
    """

    async def infer(
        self, model: str, batch: Sequence[ModelInputs], *, version: str = ""
    ) -> list[Outputs]: ...

    async def model_version(self, model: str) -> str: ...

    async def variants(self, model: str) -> ServedVariants:
        """The versions and precision variants of `model` this backend serves."""
        ...

    async def close(self) -> None: ...
