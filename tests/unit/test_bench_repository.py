"""The bench-only `<model>-dyn` repository: dynamic batching on, the default one untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluicegate.inference.manifest import verify_model
from sluicegate.ops.models.bench_repository import (
    DYNAMIC,
    build_bench_repository,
    dynamic_name,
)
from sluicegate.ops.models.build import _FORMAT, _config_pbtxt, _models, weight_paths
from sluicegate.ops.models.targets import TARGETS


def test_dyn_copies_turn_on_dynamic_batching_and_verify(tmp_path: Path) -> None:
    repo = build_bench_repository(tmp_path / "bench", ["text-embed", "ocr"])
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["ocr-dyn", "text-embed-dyn"]
    text = (repo / "text-embed-dyn" / "config.pbtxt").read_text()
    assert 'name: "text-embed-dyn"' in text and "max_batch_size: 8" in text
    assert "preferred_batch_size: [ 4, 8 ]" in text
    assert "max_queue_delay_microseconds: 10000" in text
    assert 'key: "merge_model" value: { string_value: "text-embed" }' in text
    ocr = (repo / "ocr-dyn" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in ocr and "preferred_batch_size: [ 2, 4 ]" in ocr
    model_py = (repo / "text-embed-dyn" / "1" / "model.py").read_text()
    assert "from sluicegate.inference.triton.merged import TritonPythonModel" in model_py
    # The copies load only if the manifest's sha256s match (prepare_model checks it).
    for name in ("text-embed", "ocr"):
        verify_model(repo, dynamic_name(name))
    # Rebuilding replaces the folder: no stale model from an earlier call.
    build_bench_repository(repo, ["text-embed"])
    assert not (repo / "ocr-dyn").exists()


def test_default_repository_models_have_no_dynamic_batcher() -> None:
    spec = TARGETS["cpu"]
    for model in _models(weight_paths(), spec):
        assert "dynamic_batching" not in _config_pbtxt(model, spec), model.name
    assert _FORMAT >= 1 and set(DYNAMIC) == {"text-embed", "ocr"}


def test_unknown_model_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose from"):
        build_bench_repository(tmp_path, ["doc-match"])
