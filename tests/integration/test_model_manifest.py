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
