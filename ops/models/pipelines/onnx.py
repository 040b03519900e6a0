"""ONNX Runtime session construction shared by the pipelines."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

__all__ = ["DEFAULT_INTRA_OP_THREADS", "cpu_session"]

# Two intra-op threads per session: the local stack runs three model processes
# on small machines; more threads per session only oversubscribe the cores.
DEFAULT_INTRA_OP_THREADS = 2


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
    return ort.InferenceSession(
        str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )
