"""Inference backends behind one protocol (`InferenceBackend`)."""

from .base import InferenceBackend, ModelInputs, Outputs
from .triton import TritonBackend

__all__ = ["InferenceBackend", "ModelInputs", "Outputs", "TritonBackend"]
