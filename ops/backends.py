"""Builds the worker's `InferenceBackend` from its settings (composition root)."""

from __future__ import annotations

from sluicegate.workers.backends import (
    InferenceBackend,
    InProcessBackend,
    NullBackend,
    SimulatedBackend,
    TritonBackend,
)
from sluicegate.workers.backends.simulated import SimulatedDevice, private_device_file
from sluicegate.workers.config import WorkerSettings

__all__ = ["make_backend"]


def make_backend(settings: WorkerSettings) -> InferenceBackend:
    """Triton, in-process ONNX Runtime, the null model or a simulated GPU (`settings.backend`)."""
    if settings.backend == "triton":
        t = settings.triton
        return TritonBackend(
            url=t.url, timeout_s=t.timeout_s, transport=t.transport, admin_key=t.key()
        )
    if settings.backend == "onnxruntime":
        from sluicegate.inference.runners import build_runners

        return InProcessBackend(runners=build_runners([settings.model]), version="1-onnxruntime")
    if settings.backend == "simulated":
        sim = settings.simulated
        path = sim.device_file or private_device_file(sim.device)
        return SimulatedBackend(
            device=SimulatedDevice(path=path), kind=sim.device, time_scale=sim.time_scale
        )
    return NullBackend()
