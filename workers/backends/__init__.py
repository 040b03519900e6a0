"""Inference backends behind one protocol (`InferenceBackend`)."""

from sluicegate.inference.io import BatchRunner

from .base import InferenceBackend, ModelInputs, Outputs
from .inprocess import InProcessBackend, NullBackend
from .simulated import SimulatedBackend
from .triton import TritonBackend

__all__ = [
    "BatchRunner",
    "InProcessBackend",
    "InferenceBackend",
    "ModelInputs",
    "NullBackend",
    "Outputs",
    "SimulatedBackend",
    "TritonBackend",
]
