"""ONNX Runtime session construction shared by the pipelines."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

__all__ = ["DEFAULT_INTRA_OP_THREADS", "cpu_session", "use_providers"]

# Two intra-op threads per session: the local stack runs three model processes
# on small machines; more threads per session only oversubscribe the cores.
DEFAULT_INTRA_OP_THREADS = 2
_CPU = "CPUExecutionProvider"
# Set once per process by use_providers() (a Triton model's `execution_providers`).
_providers: list[str | tuple[str, dict[str, str]]] = [_CPU]


def use_providers(names: list[str]) -> list[str]:
    """Sessions made after this call use `names` (in order) where this ONNX Runtime has them.

    Returns the providers kept. Raises RuntimeError naming the fix when `names`
    asks for an accelerator and this build of ONNX Runtime has none of them (a
    GPU pool silently running on the CPU would be worse than not loading).
    """
    global _providers
    available = set(ort.get_available_providers())
    kept = [n for n in names if n in available]
    wanted_gpu = [n for n in names if n != _CPU]
    if wanted_gpu and not any(n != _CPU for n in kept):
        raise RuntimeError(
            f"execution providers {wanted_gpu} are not in this ONNX Runtime "
            f"({sorted(available)}); install onnxruntime-gpu (A100) or onnxruntime-rocm / "
            "onnxruntime-migraphx (MI200) in the Triton environment"
        )
    # TensorRT at FP16: the a100 target's precision (docs/scaling.md).
    _providers = [
        (n, {"trt_fp16_enable": "True"}) if n == "TensorrtExecutionProvider" else n for n in kept
    ] or [_CPU]
    return kept


def cpu_session(
    model_path: Path, *, intra_op_threads: int = DEFAULT_INTRA_OP_THREADS
) -> ort.InferenceSession:
    """A CPU ``InferenceSession`` for `model_path` with bounded threads.

    Raises FileNotFoundError naming the path when the model file is missing.
    """
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {model_path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle intra-op threads spin-wait by default; with several model processes
    # sharing two cores that spinning steals CPU from whichever model is busy.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=list(_providers))
