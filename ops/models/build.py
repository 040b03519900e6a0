"""Writes the Triton model repository for the three reference models, per target.

``build_repository(dest, targets=("cpu",))`` produces::

    dest/
      .sluicegate-manifest.json       build digest + sha256 of every artifact, per model
      text-embed/config.pbtxt          the first target's config
      text-embed/configs/<target>.pbtxt  one per target (`--model-config-name <target>`)
      text-embed/1/model.py            re-exports sluicegate.inference.triton.text_embed
      text-embed/1/*.onnx              GPU targets only: the variant that target runs
      ocr/...                          (backends.ocr)
      doc-match/...                    (backends.doc_match)
      minilm-encoder/1/model.onnx      a100 only: the bare encoder on the onnxruntime backend

Targets (:mod:`.targets`): ``cpu`` is what the local stack runs (Python
backend, ONNX Runtime on the CPU, weights read in place from the installed
model packages, whose paths the configs record); ``a100`` and ``mi200`` copy
the fp16 variants (``sluicegate models variants``) into the repository and
name their execution providers. The model code stays in the package (typed,
linted, tested); ``model.py`` is one import. The build is atomic: a new
repository is written beside `dest` and swapped in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sluicegate.inference import weights as shipped
from sluicegate.inference.manifest import MANIFEST_NAME, artifact_entries, verify_repository
from sluicegate.ops.stack.process import StackError

from .targets import TARGETS, TargetSpec, variant_files
from .versions import VersionPlan, minilm_files, ocr_plan, ocr_rec_int8, text_embed_plans

__all__ = [
    "MANIFEST_NAME",
    "MODEL_NAMES",
    "build_repository",
    "model_names",
    "verify_repository",
    "weight_paths",
]

MODEL_NAMES = ("text-embed", "ocr", "doc-match")
# Bump when the layout or the rendering below changes in a way the hash would miss.
_FORMAT = 2
_VARIANTS_HINT = "build them with `sluicegate models variants` (needs `make export-venv`)"
_INTRA_OP_THREADS = 2


@dataclass(frozen=True)
class _Tensor:
    name: str
    data_type: str  # Triton TYPE_* name
    dims: tuple[int, ...]  # per item, without the batch dimension


@dataclass(frozen=True)
class _Model:
    name: str
    module: str  # the module under sluicegate.inference.triton with TritonPythonModel
    max_batch_size: int
    inputs: tuple[_Tensor, ...]
    outputs: tuple[_Tensor, ...]
    parameters: tuple[tuple[str, str], ...]
    backend: str = "python"
    # Files copied into the repository: (path relative to the model dir, source).
    copies: tuple[tuple[str, Path], ...] = ()
    versions: tuple[str, ...] = ("1",)


def _string(name: str) -> _Tensor:
    return _Tensor(name, "TYPE_STRING", (1,))


def weight_paths() -> dict[str, Path]:
    """Absolute paths of the model files inside the installed model packages.

    Raises :class:`StackError` naming the install command when one is missing.
    """
    try:
        return shipped.weight_paths()
    except shipped.WeightsNotInstalled as exc:
        raise StackError(str(exc)) from None


def _target_weights(
    weights: dict[str, Path], spec: TargetSpec, variants: Path | None
) -> dict[str, Path]:
    """The weight files `spec` runs: the shipped ones, or its variant's (to be copied)."""
    if spec.variant is None:
        return weights
    if variants is None:
        raise StackError(f"target {spec.name} needs the {spec.variant} variants; {_VARIANTS_HINT}")
    files = variant_files(variants, spec.variant)
    for path in (files.embed, files.det, files.rec):
        if not path.is_file():
            raise StackError(f"target {spec.name}: {path} is missing; {_VARIANTS_HINT}")
    return {**weights, "embed_model": files.embed, "det_model": files.det, "rec_model": files.rec}


def _models(weights: dict[str, Path], spec: TargetSpec) -> tuple[_Model, ...]:
    threads = ("intra_op_threads", str(_INTRA_OP_THREADS))
    copy = spec.variant is not None
    # Copied weights are referenced relative to the version folder ("$version/...")
    # so a repository moves (a volume, another host) without rebuilding.
    embed_file = ("1/encoder.onnx", weights["embed_model"])
    det_file = ("1/ocr-det.onnx", weights["det_model"])
    rec_file = ("1/ocr-rec.onnx", weights["rec_model"])

    def where(file: tuple[str, Path]) -> str:
        return f"$version/{Path(file[0]).name}" if copy else str(file[1])

    embed = (
        ("model_path", where(embed_file)),
        ("tokenizer_path", str(weights["tokenizer"])),
        ("max_tokens", "256"),  # sentence_bert_config.json max_seq_length
    )
    ocr = (
        ("det_model_path", where(det_file)),
        ("rec_model_path", where(rec_file)),
        ("rec_batch_size", "16"),
        ("max_det_pixels", str(4096 * 4096)),  # guards against thin images' huge upscale
    )
    extra = (("execution_providers", ",".join(spec.providers)),) if spec.providers else ()
    # What each model computes in (the worker reports it); cpu: the shipped files.
    embed_precision = spec.variant or "int8"
    ocr_precision = spec.variant or "fp32"
    models = [
        _Model(
            name="text-embed",
            module="text_embed",
            max_batch_size=64,
            inputs=(_string("TEXT"),),
            outputs=(
                _Tensor("EMBEDDING", "TYPE_FP32", (384,)),
                _Tensor("TOKENS", "TYPE_INT32", (1,)),
            ),
            parameters=(*embed, threads, *extra, ("precision", embed_precision)),
            copies=(embed_file,) if copy else (),
        ),
        _Model(
            name="ocr",
            module="ocr",
            max_batch_size=16,
            inputs=(_string("IMAGE"),),
            outputs=(_string("TEXT"), _Tensor("SCORE", "TYPE_FP32", (1,)), _string("LINES")),
            parameters=(*ocr, threads, *extra, ("precision", ocr_precision)),
            copies=(det_file, rec_file) if copy else (),
        ),
        _Model(
            name="doc-match",
            module="doc_match",
            max_batch_size=16,
            inputs=(_string("IMAGE"), _string("TEXT")),
            outputs=(_string("OCR_TEXT"), _Tensor("SIMILARITY", "TYPE_FP32", (1,))),
            parameters=(
                *ocr,
                *embed,
                threads,
                *extra,
                ("precision", f"{embed_precision}+{ocr_precision}"),
            ),
            copies=(det_file, rec_file, embed_file) if copy else (),
        ),
    ]
    if spec.onnxruntime_encoder:
        ids = _Tensor("input_ids", "TYPE_INT64", (-1,))
        models.append(
            _Model(
                name="minilm-encoder",
                module="",
                backend="onnxruntime",
                max_batch_size=256,
                inputs=(
                    ids,
                    _Tensor("attention_mask", "TYPE_INT64", (-1,)),
                    _Tensor("token_type_ids", "TYPE_INT64", (-1,)),
                ),
                outputs=(_Tensor("last_hidden_state", "TYPE_FP32", (-1, 384)),),
                parameters=(),
                copies=(("1/model.onnx", weights["embed_model"]),),
            )
        )
    return tuple(models)


def _config_pbtxt(model: _Model, spec: TargetSpec) -> str:
    def tensors(items: Sequence[_Tensor]) -> str:
        rows = []
        for t in items:
            dims = ", ".join(map(str, t.dims))
            rows.append(f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {dims} ] }}')
        return ",\n".join(rows)

    params = "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}\n'
        for key, value in model.parameters
    )
    optimization = ""
    if model.backend == "onnxruntime" and spec.name == "a100":
        # TensorRT at FP16 first; ONNX Runtime falls back to CUDA for what it cannot take.
        optimization = (
            "optimization { execution_accelerators { gpu_execution_accelerator: [ {\n"
            '  name: "tensorrt"\n'
            '  parameters { key: "precision_mode" value: "FP16" }\n'
            '  parameters { key: "max_workspace_size_bytes" value: "4294967296" }\n'
            "} ] } }\n"
        )
    versions = ""
    if len(model.versions) > 1 or model.versions != ("1",):
        listed = ", ".join(model.versions)
        versions = f"version_policy: {{ specific {{ versions: [ {listed} ] }} }}\n"
    # No dynamic_batching: the worker's budget batcher forms the batches, and
    # Triton merging requests would pad past what the worker charged.
    return (
        f"# Generated by sluicegate.ops.models.build (target {spec.name}); do not edit.\n"
        f'name: "{model.name}"\n'
        f'backend: "{model.backend}"\n'
        f"max_batch_size: {model.max_batch_size}\n"
        f"{versions}"
        f"input [\n{tensors(model.inputs)}\n]\n"
        f"output [\n{tensors(model.outputs)}\n]\n"
        f"instance_group [ {{ kind: {spec.kind} count: 1 }} ]\n"
        f"{optimization}{params}"
    )


def _model_py(model: _Model) -> str:
    module = f"sluicegate.inference.triton.{model.module}"
    return (
        f'"""Triton entry point for `{model.name}`; the code is {module}."""\n\n'
        f"from {module} import TritonPythonModel\n\n"
        f'__all__ = ["TritonPythonModel"]\n'
    )


@dataclass
class _Layout:
    texts: dict[str, str]  # repository-relative path -> file content
    copies: dict[str, Path]  # repository-relative path -> source file
    external: dict[str, list[Path]]  # model -> weight files read in place


def _with_versions(models: tuple[_Model, ...], plans: Sequence[VersionPlan]) -> list[_Model]:
    """`models` with each plan's versions, parameters and files (a plan may add a model)."""
    originals = {m.name: m for m in models}
    by_name = dict(originals)
    for plan in plans:
        base = originals.get(plan.name) or originals[plan.name.rsplit("-", 1)[0]]
        params = {**dict(base.parameters), **dict(plan.parameters)}
        by_name[plan.name] = replace(
            base,
            name=plan.name,
            versions=plan.versions,
            parameters=tuple(params.items()),
            copies=(*(base.copies if plan.name == base.name else ()), *plan.copies),
        )
    return list(by_name.values())


def _render(
    weights: dict[str, Path],
    specs: Sequence[TargetSpec],
    variants: Path | None,
    plans: Sequence[VersionPlan] = (),
) -> _Layout:
    layout = _Layout({}, {}, {})
    for index, spec in enumerate(specs):
        models = _models(_target_weights(weights, spec, variants), spec)
        for model in _with_versions(models, plans if spec.name == "cpu" else ()):
            config = _config_pbtxt(model, spec)
            if len(specs) > 1:
                layout.texts[f"{model.name}/configs/{spec.name}.pbtxt"] = config
            if index == 0 or f"{model.name}/config.pbtxt" not in layout.texts:
                layout.texts[f"{model.name}/config.pbtxt"] = config
            if model.backend == "python":
                for version in model.versions:
                    layout.texts[f"{model.name}/{version}/model.py"] = _model_py(model)
            for rel, src in model.copies:
                layout.copies[f"{model.name}/{rel}"] = src
            refs = [Path(v) for _, v in model.parameters if v.startswith("/")]
            layout.external.setdefault(model.name, [])
            layout.external[model.name] += [p for p in refs if p not in layout.external[model.name]]
    return layout


def _digest(layout: _Layout) -> str:
    h = hashlib.sha256(f"format={_FORMAT}\n".encode())
    for rel in sorted(layout.texts):
        h.update(f"{rel}\n{layout.texts[rel]}\n".encode())
    files = {**layout.copies, **{str(p): p for ps in layout.external.values() for p in ps}}
    for key in sorted(files):
        st = files[key].stat()
        # Size and mtime stand in for the content here (the manifest has the sha256):
        # a reinstall or a new variant changes both.
        h.update(f"{key}={files[key]}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _is_current(dest: Path, digest: str, layout: _Layout) -> bool:
    try:
        manifest = json.loads((dest / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    files = [*layout.texts, *layout.copies]
    return manifest.get("digest") == digest and all((dest / rel).is_file() for rel in files)


def build_repository(
    dest: Path,
    *,
    targets: Sequence[str] = ("cpu",),
    variants: Path | None = None,
    drill: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the model repository into `dest` unless it is already current; return `dest`.

    `targets` (cpu, a100, mi200): the first one's configs are the defaults;
    with several, each model also gets ``configs/<target>.pbtxt`` for
    Triton's ``--model-config-name``. GPU targets read their variants from
    `variants`. The cpu target serves several text-embed versions and an
    fp16 variant (:mod:`.versions`), built into a ``model-variants``
    folder beside `dest` when missing; `drill` adds the
    deliberately broken v3 that the automatic-rollback test canaries.
    Idempotent: a second call with unchanged inputs writes nothing. The
    manifest records the sha256 of every artifact each model loads.
    `progress` receives one-line status messages.
    Raises :class:`StackError` when a model package or a variant is missing.
    """
    say = progress or (lambda _msg: None)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise StackError(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    specs = [TARGETS[t] for t in dict.fromkeys(targets)]
    weights = weight_paths()
    plans: tuple[VersionPlan, ...] = ()
    if "cpu" in targets:
        # Beside the repository, not in `variants` (the GPU targets' torch exports).
        built = dest.absolute().parent / "model-variants"
        fp32, fp16 = minilm_files(built, say)
        plans = text_embed_plans(native="int8", fp32=fp32, fp16=fp16, drill=drill)
        plans += (ocr_plan(ocr_rec_int8(built, say)),)
    layout = _render(weights, specs, variants, plans)
    digest = _digest(layout)
    dest = dest.absolute()
    if _is_current(dest, digest, layout):
        say(f"model repository {dest} is current")
        return dest

    names = sorted({rel.split("/", 1)[0] for rel in layout.texts})
    say(f"writing model repository {dest} ({', '.join(names)}; {'+'.join(s.name for s in specs)})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.staging-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for rel, text in layout.texts.items():
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, src in layout.copies.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, staging / rel)
    artifacts = {}
    for name in names:
        inside = sorted(p for p in (staging / name).rglob("*") if p.is_file())
        entries = artifact_entries(staging, [*inside, *layout.external.get(name, [])])
        artifacts[name] = entries
    manifest = {
        "digest": digest,
        "format": _FORMAT,
        "targets": [s.name for s in specs],
        "models": names,
        "weights": {k: str(v) for k, v in weights.items()},
        "artifacts": artifacts,
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
    parser.add_argument("--target", action="append", choices=list(TARGETS))
    parser.add_argument("--variants", type=Path, default=Path(".cache/model-variants"))
    args = parser.parse_args(argv)
    targets = args.target or ["cpu"]
    print(build_repository(args.dest, targets=targets, variants=args.variants, progress=print))


if __name__ == "__main__":
    main()
