"""The model repository per target, its manifest, and the refusal to load on a mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sluicegate.inference.manifest import (
    ManifestError,
    sha256_file,
    verify_model,
    verify_repository,
)
from sluicegate.ops.models.build import MANIFEST_NAME, build_repository, weight_paths
from sluicegate.ops.stack.process import StackError


@pytest.fixture(scope="module")
def cpu_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("cpu") / "repo")


@pytest.fixture
def variants(tmp_path: Path) -> Path:
    """A variants folder laid out as `models variants` writes it.

    The files are the shipped ONNX models under the variant names: this test
    checks layout, configs and manifest, not the numbers (models eval does).
    """
    w = weight_paths()
    for folder, src in (
        ("minilm", w["embed_model"]),
        ("ocr-det", w["det_model"]),
        ("ocr-rec", w["rec_model"]),
    ):
        (tmp_path / "v" / folder).mkdir(parents=True)
        for variant in ("fp32", "fp16"):
            shutil.copyfile(src, tmp_path / "v" / folder / f"{variant}.onnx")
    return tmp_path / "v"


def test_cpu_repository_is_what_the_local_stack_runs(cpu_repo: Path) -> None:
    manifest = json.loads((cpu_repo / MANIFEST_NAME).read_text())
    assert manifest["targets"] == ["cpu"]
    models = ["doc-match", "ocr", "text-embed", "text-embed-fp16"]
    assert sorted(manifest["artifacts"]) == models
    config = (cpu_repo / "text-embed" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "KIND_CPU" in config
    assert "execution_providers" not in config  # the local stack's config, unchanged
    # v1 reads the shipped weights in place; only the built v2 (fp32, fp16) is copied.
    assert sorted(str(p.relative_to(cpu_repo)) for p in cpu_repo.rglob("*.onnx")) == [
        "ocr/2/ocr-rec.onnx",
        "text-embed-fp16/2/encoder.onnx",
        "text-embed/2/encoder.onnx",
    ]
    embed = manifest["artifacts"]["text-embed"]
    weights = weight_paths()
    assert embed[str(weights["embed_model"])]["sha256"] == sha256_file(weights["embed_model"])
    assert {"config.pbtxt", "1/model.py"} <= {
        k.split("/", 1)[1] for k in embed if "/" in k and not k.startswith("/")
    }
    assert verify_repository(cpu_repo) == models


def test_a_changed_artifact_is_refused_by_name(cpu_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(cpu_repo, repo)
    verify_model(repo, "ocr")
    config = repo / "ocr" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 16", "max_batch_size: 15"))
    with pytest.raises(
        ManifestError, match=r"manifest_mismatch: model 'ocr': .*config.pbtxt has sha256"
    ):
        verify_model(repo, "ocr")
    verify_model(repo, "text-embed")  # the others still load
    (repo / "text-embed" / "1" / "model.py").unlink()
    with pytest.raises(ManifestError, match=r"model\.py is missing"):
        verify_model(repo, "text-embed")
    (repo / MANIFEST_NAME).unlink()
    with pytest.raises(
        ManifestError, match="rebuild the repository with `sluicegate models build`"
    ):
        verify_model(repo, "ocr")


def test_gpu_targets_copy_their_variant_and_name_their_providers(
    variants: Path, tmp_path: Path
) -> None:
    repo = build_repository(tmp_path / "gpu", targets=["a100", "mi200"], variants=variants)
    manifest = json.loads((repo / MANIFEST_NAME).read_text())
    assert manifest["targets"] == ["a100", "mi200"]
    a100 = (repo / "text-embed" / "configs" / "a100.pbtxt").read_text()
    mi200 = (repo / "text-embed" / "configs" / "mi200.pbtxt").read_text()
    assert (repo / "text-embed" / "config.pbtxt").read_text() == a100  # first target is the default
    assert "KIND_GPU" in a100 and "TensorrtExecutionProvider,CUDAExecutionProvider" in a100
    assert "MIGraphXExecutionProvider,ROCMExecutionProvider" in mi200 and "KIND_CPU" in mi200
    assert '"$version/encoder.onnx"' in a100
    encoder = (repo / "minilm-encoder" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in encoder and "KIND_GPU" in encoder
    assert 'name: "tensorrt"' in encoder and '"precision_mode" value: "FP16"' in encoder
    assert not (repo / "minilm-encoder" / "configs" / "mi200.pbtxt").exists()
    assert (repo / "minilm-encoder" / "1" / "model.onnx").is_file()
    assert "1/ocr-det.onnx" in {
        k.split("/", 1)[1] for k in manifest["artifacts"]["ocr"] if "/" in k
    }
    assert verify_repository(repo) == sorted(manifest["artifacts"])


def test_gpu_target_without_variants_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="sluicegate models variants"):
        build_repository(tmp_path / "r", targets=["a100"], variants=tmp_path / "none")
    with pytest.raises(StackError, match="unknown target"):
        build_repository(tmp_path / "r", targets=["tpu"])
