"""Inference backends behind one protocol (`InferenceBackend`)."""

from .base import InferenceBackend, ModelInputs, Outputs
from .inprocess import BatchRunner, InProcessBackend, NullBackend
from .triton import TritonBackend

__all__ = [
    "BatchRunner",
    "InProcessBackend",
    "InferenceBackend",
    "ModelInputs",
    "NullBackend",
    "Outputs",
    "TritonBackend",
]
