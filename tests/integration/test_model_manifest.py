"""The real Triton refuses a model version whose artifacts differ from the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluicegate.ops.models.build import build_repository
from sluicegate.ops.stack.process import StackError, free_port
from sluicegate.ops.stack.triton import LocalTriton, TritonLocalConfig

pytestmark = pytest.mark.integration


def test_triton_refuses_a_model_changed_after_the_build(tmp_path: Path) -> None:
    repo = build_repository(tmp_path / "repo")
    config = repo / "text-embed" / "config.pbtxt"
    # Still a valid config Triton would happily load, but not the one built.
    config.write_text(config.read_text().replace("max_batch_size: 64", "max_batch_size: 32"))
    server = LocalTriton(
        TritonLocalConfig(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            repository=repo,
            state_dir=tmp_path / "state",
            cache_dir=tmp_path / "cache",
        )
    )
    try:
        with pytest.raises(StackError) as failed:
            server.start(timeout=180)
    finally:
        server.stop(grace=10)
    message = str(failed.value)
    assert "manifest_mismatch" in message and "text-embed" in message, message
    assert not server.is_running()


def _fake_variants(root: Path) -> Path:
    # The shipped ONNX files under the variant names: this test is about which
    # config Triton picks, not about the numbers (models eval measures those).
    import shutil

    from sluicegate.ops.models.build import weight_paths

    w = weight_paths()
    for folder, src in (
        ("minilm", w["embed_model"]),
        ("ocr-det", w["det_model"]),
        ("ocr-rec", w["rec_model"]),
    ):
        (root / folder).mkdir(parents=True)
        for variant in ("fp32", "fp16"):
            shutil.copyfile(src, root / folder / f"{variant}.onnx")
    return root


def _server(repo: Path, state: Path, *extra: str) -> LocalTriton:
    return LocalTriton(
        TritonLocalConfig(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            repository=repo,
            state_dir=state,
            cache_dir=state / "cache",
            extra_args=extra,
        )
    )


def test_one_repository_several_configs_picked_by_model_config_name(tmp_path: Path) -> None:
    variants = _fake_variants(tmp_path / "variants")
    repo = build_repository(tmp_path / "repo", targets=["mi200", "cpu"], variants=variants)
    assert "MIGraphXExecutionProvider" in (repo / "ocr" / "config.pbtxt").read_text()

    # The cpu configs load and serve from the same repository.
    server = _server(repo, tmp_path / "cpu", "--model-config-name=cpu")
    try:
        server.start(timeout=240)
        assert server.is_running()
    finally:
        server.stop(grace=30)

    # The default (mi200) configs ask for MIGraphX/ROCm, which this ONNX Runtime
    # lacks: the models refuse to load instead of running on the CPU unnoticed.
    server = _server(repo, tmp_path / "mi200")
    try:
        with pytest.raises(StackError) as failed:
            server.start(timeout=240)
    finally:
        server.stop(grace=10)
    assert "onnxruntime-rocm" in str(failed.value), str(failed.value)
