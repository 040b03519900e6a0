"""`sluicegate up --workers-per-device N`: N worker parts per model, one group, one card."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sluicegate.ops.cli import app
from sluicegate.ops.stack.stack import LocalStack, StackSettings


def test_each_model_gets_n_parts_on_one_card(tmp_path: Path) -> None:
    stack = LocalStack(StackSettings(state_dir=tmp_path, workers_per_device=3))
    parts = [stack._worker_part("text-embed", r) for r in stack.replicas()]
    assert [p.name for p in parts] == [
        "worker-text-embed",
        "worker-text-embed-r1",
        "worker-text-embed-r2",
    ]
    assert len({p.ready_file for p in parts}) == 3
    cards = {p.env["SLUICEGATE_SIMULATED__DEVICE_FILE"] for p in parts}
    assert cards == {str(tmp_path.resolve() / "simulated" / "gpu0.dev")}
    # No part names a group of its own: they share sg.worker.<model>.<pool>.
    assert not any("SLUICEGATE_GROUP_ID" in p.env for p in parts)


def test_status_and_down_follow_the_running_stack_not_the_settings(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(
        json.dumps({"models": ["text-embed"], "workers_per_device": 2})
    )
    stack = LocalStack(StackSettings(state_dir=tmp_path))
    assert list(stack.replicas()) == [0, 1]
    names = {row.name for row in stack.status() if row.name.startswith("worker text-embed")}
    assert names == {"worker text-embed 1/2", "worker text-embed 2/2"}


def test_up_help_names_the_option() -> None:
    result = CliRunner().invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--workers-per-device" in result.output
