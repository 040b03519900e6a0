"""What each deployment target runs: instance kind, ONNX Runtime providers, model variants.

- ``cpu``: what the local stack runs today. Python backend, ONNX Runtime on
  the CPU, the shipped int8 MiniLM and fp32 PP-OCRv4 read in place.
- ``a100``: NVIDIA Triton image. The pipelines (tokenizer, OCR pre/post) stay
  in the Python backend with ONNX Runtime's TensorRT (FP16) then CUDA
  providers on ``KIND_GPU`` instances, over the fp16 variants; the bare
  MiniLM encoder is also served on Triton's ``onnxruntime`` backend with the
  TensorRT execution accelerator at FP16 (``minilm-encoder``), for clients
  that tokenise themselves.
- ``mi200``: AMD's ROCm build of Triton documents MI300X/MI355X only, so an
  MI200 pool runs the cpu-style Triton (pytriton's server, Python backend) in
  an image with ``onnxruntime-rocm``; the pipelines ask ONNX Runtime for the
  MIGraphX provider, then ROCm, over the fp16 variants. Instances are
  ``KIND_CPU`` because that Triton build only counts CUDA devices for
  ``KIND_GPU``; the work still runs on the card through the provider.
  Not run on an MI200 here (none was available): see docs/scaling.md.
- ``a100-standin``: the a100 target's fp16 variants on ONNX Runtime's CPU
  provider, ``KIND_CPU``: the stand-in A100 pool of ``up --pools cpu,a100``
  (ops/stack/pools.py), runnable on a machine without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

__all__ = ["TARGETS", "Target", "TargetSpec", "VariantFiles", "variant_files"]

Target = Literal["cpu", "a100", "mi200", "a100-standin"]
TARGET_NAMES: tuple[Target, ...] = get_args(Target)

Variant = Literal["fp32", "fp16", "int8", "int8-dynamic", "bf16", "fp16-det"]


@dataclass(frozen=True)
class TargetSpec:
    name: Target
    kind: Literal["KIND_CPU", "KIND_GPU"]
    # ONNX Runtime providers in order of preference, written to the configs;
    # None keeps the configs exactly as the local stack has them.
    providers: tuple[str, ...] | None
    # None: the files shipped in the model packages (no variants needed).
    variant: Variant | None
    onnxruntime_encoder: bool  # also serve the bare encoder on the onnxruntime backend


TARGETS: dict[str, TargetSpec] = {
    "cpu": TargetSpec("cpu", "KIND_CPU", None, None, False),
    "a100": TargetSpec(
        "a100",
        "KIND_GPU",
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        "fp16",
        True,
    ),
    "mi200": TargetSpec(
        "mi200",
        "KIND_CPU",
        ("MIGraphXExecutionProvider", "ROCMExecutionProvider", "CPUExecutionProvider"),
        "fp16",
        False,
    ),
    "a100-standin": TargetSpec(
        "a100-standin", "KIND_CPU", ("CPUExecutionProvider",), "fp16", False
    ),
}


@dataclass(frozen=True)
class VariantFiles:
    embed: Path  # MiniLM encoder
    det: Path  # PP-OCRv4 detector
    rec: Path  # PP-OCRv4 recogniser


def variant_files(variants_dir: Path, variant: Variant) -> VariantFiles:
    """Paths of one variant under `variants_dir` (the layout `models variants` writes).

    Two measured exceptions (models/report.md): the PP-OCRv4 detector loses
    text at fp16 (its CER went from 0.5 % to 13-50 %), so the fp16 variant
    keeps the detector in fp32 (`fp16-det` is the all-fp16 pair, for the
    report); and the OCR models have one int8 flavour (dynamic).
    """
    embed = "fp32" if variant == "fp16-det" else variant
    det = {"fp16": "fp32", "fp16-det": "fp16", "int8-dynamic": "int8"}.get(variant, variant)
    rec = {"fp16-det": "fp16", "int8-dynamic": "int8"}.get(variant, variant)
    return VariantFiles(
        embed=variants_dir / "minilm" / f"{embed}.onnx",
        det=variants_dir / "ocr-det" / f"{det}.onnx",
        rec=variants_dir / "ocr-rec" / f"{rec}.onnx",
    )
